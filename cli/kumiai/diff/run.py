"""`kumiai diff`'s work: read both sides from git, render them with the one render step `plan` uses, compare.

The base side is always a git ref; the head side a ref or, by default, the inventory in the work tree as it is
(read, never written). Both are rendered by this kumiai: a diff shows what the inventory change does, not what a
code change does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kumiai.diff.gitref import InventorySource, locate
from kumiai.diff.model import InventoryDiff, Side, compare
from kumiai.errors import InputError, Problem
from kumiai.inventory import Inventory, load_inventory
from kumiai.planner import jobs_for, render_stacks
from kumiai.render import stack_id

WORK_TREE = "working tree"


def _load(source: InventorySource, ref: str, option: str, dest: Path) -> Inventory:
    """The inventory at ref; problems name the file as git does (ref:path), not the temporary copy."""
    root = source.export(source.tree(ref, option), dest)
    try:
        return load_inventory(root)
    except InputError as exc:
        shown = f"{ref}:{source.path}" if source.path else f"{ref}:"
        problems = [replace(p, file=p.file.replace(str(root), shown)) for p in exc.problems]
        raise InputError(problems) from None


def _check_selection(sides: Sequence[Inventory], towns: Sequence[str], sites: Sequence[str]) -> None:
    known_towns = {t for inv in sides for t in inv.towns}
    known_sites = {s.id for inv in sides for s in inv.consortium.sites}
    problems = [Problem("--town", t, "is a town on neither side of the diff") for t in towns if t not in known_towns]
    problems += [Problem("--site", s, "is a site on neither side of the diff") for s in sites if s not in known_sites]
    if problems:
        raise InputError(problems)


def _side(label: str, inv: Inventory, towns: Sequence[str], sites: Sequence[str], cache_dir: Path) -> Side:
    jobs = jobs_for(inv, towns, sites)
    rendered = render_stacks(jobs, cache_dir=cache_dir)
    return Side(label, inv, {stack_id(job): rendered.resources(*stack_id(job)) for job in jobs})


def run_diff(
    inventory: Path,
    base: str,
    head: str | None,
    *,
    towns: Sequence[str] = (),
    sites: Sequence[str] = (),
    cache_dir: Path,
) -> InventoryDiff:
    source = locate(inventory)
    with tempfile.TemporaryDirectory(prefix="kumiai-diff-") as tmp:
        old = _load(source, base, "BASE", Path(tmp) / "base")
        new = _load(source, head, "--head", Path(tmp) / "head") if head else load_inventory(inventory)
        _check_selection([old, new], towns, sites)
        return compare(
            _side(base, old, towns, sites, cache_dir),
            _side(head or WORK_TREE, new, towns, sites, cache_dir),
        )

"""`kumiai diff`: what an inventory change does to every town's desired state, for auditors and CI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kumiai.console import out
from kumiai.diff.report import FORMATS, RENDERERS
from kumiai.diff.run import run_diff
from kumiai.errors import InputError, Problem
from kumiai.rendercache import default_dir


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)


def diff(
    ctx: typer.Context,
    base: Annotated[str, typer.Argument(help="Git ref of the older side.")] = "HEAD",
    head: Annotated[
        str | None, typer.Option("--head", help="Git ref of the newer side (default: the work tree as it is).")
    ] = None,
    town: Annotated[list[str] | None, typer.Option("--town", help="Only this town (repeatable).")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", help="Only this site (repeatable).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, md, json or html (one self-contained file).")] = "text",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the diff to FILE instead of stdout.")] = None,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 1 when there are changes (for CI); 0 otherwise.")
    ] = False,
    json_: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Compare the desired state (rendered tenants, isolation rules, data-layer host variables) of the inventory at
    git ref BASE with --head, per town, site, resource and property. Reads git, never changes the work tree.
    Exit 0 (with or without changes, unless --exit-code), 2 on bad input."""
    fmt = "json" if json_ else fmt
    if fmt not in FORMATS:
        raise InputError(Problem("--format", fmt, f"unknown format; choose one of {', '.join(FORMATS)}"))
    result = run_diff(ctx.obj.inventory_path, base, head, towns=town or [], sites=site or [], cache_dir=default_dir())
    document = RENDERERS[fmt](result)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(document, encoding="utf-8")
        if fmt != "json":
            changes = "changes" if result.changed else "no changes"
            out.print(f"diff {result.base} -> {result.head}: {changes}; written to {out_file}", markup=False)
    else:
        sys.stdout.write(document)
        sys.stdout.flush()
    if exit_code and result.changed:
        raise typer.Exit(1)

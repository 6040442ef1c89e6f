"""A failover's change of placement, written into the town's own file: comments and order kept, checked first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kumiai.errors import InputError
from kumiai.inventory import load_inventory
from kumiai.placement import render_placement, write_placement

ROOT = Path(__file__).resolve().parents[2]

TOWN = """# 中井町: a comment that must survive
id: nakai
name: 中井町
code: "143618"   # quoted, and stays quoted
population: 8900
tier: s
systems:
  - {name: 住民基本台帳, segment: mynumber}
"""


def test_a_placement_is_added_at_the_end_and_everything_else_kept() -> None:
    moved = render_placement(TOWN, "site-b", "site-a", default=("site-a", "site-b"))
    assert moved == TOWN + "placement:\n  primary: site-b\n  dr: site-a\n"


def test_the_default_placement_is_removed_so_a_failback_restores_the_file() -> None:
    moved = render_placement(TOWN, "site-b", "site-a", default=("site-a", "site-b"))
    assert render_placement(moved, "site-a", "site-b", default=("site-a", "site-b")) == TOWN


def test_an_existing_placement_is_changed_in_place() -> None:
    text = TOWN.replace("tier: s\n", "placement: {primary: site-a, dr: site-c}  # intent\ntier: s\n")
    moved = render_placement(text, "site-c", "site-a", default=("site-a", "site-b"))
    assert moved == TOWN.replace("tier: s\n", "placement: {primary: site-c, dr: site-a}  # intent\ntier: s\n")


def test_write_placement_checks_the_sites_and_reports_a_change_once(tmp_path: Path) -> None:
    inv_dir = tmp_path / "inv"
    shutil.copytree(ROOT / "inventories" / "lab", inv_dir)
    inv = load_inventory(inv_dir)
    before = (inv_dir / "towns" / "nakai.yaml").read_text(encoding="utf-8")
    with pytest.raises(InputError, match="unknown site 'site-z'"):
        write_placement(inv, "nakai", "site-z", "site-a")
    assert (inv_dir / "towns" / "nakai.yaml").read_text(encoding="utf-8") == before
    assert write_placement(inv, "nakai", "site-b", "site-a") == inv_dir / "towns" / "nakai.yaml"
    assert write_placement(inv, "nakai", "site-b", "site-a") is None
    moved = load_inventory(inv_dir)
    primary, dr = moved.placement(moved.towns["nakai"])
    assert (primary.id, dr.id) == ("site-b", "site-a")
    assert write_placement(moved, "nakai", "site-a", "site-b") is not None
    assert (inv_dir / "towns" / "nakai.yaml").read_text(encoding="utf-8") == before

"""The cache of validated town files: reused only for the same bytes, consortium and checking code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copy_inventory

from kumiai import inventory, towncache
from kumiai.errors import InputError
from kumiai.inventory import load_inventory


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    loaded: list[str] = []
    real = inventory.load_town

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        loaded.append(path.stem)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(towncache, "load_town", counting)
    return loaded


def test_unchanged_towns_are_not_validated_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.pickle"
    loaded = _count_loads(monkeypatch)
    first = towncache.TownCache(cache_file)
    load_inventory(root, town_loader=first)
    first.save()
    assert sorted(loaded) == ["kiyokawa", "manazuru", "nakai"]

    loaded.clear()
    (root / "towns" / "nakai.yaml").write_text(
        (root / "towns" / "nakai.yaml").read_text(encoding="utf-8").replace("8900", "9000"), encoding="utf-8"
    )
    second = towncache.TownCache(cache_file)
    inv = load_inventory(root, town_loader=second)
    assert loaded == ["nakai"] and inv.towns["nakai"].population == 9000


def test_a_new_checker_validates_every_town_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.pickle"
    cache = towncache.TownCache(cache_file)
    load_inventory(root, town_loader=cache)
    cache.save()
    loaded = _count_loads(monkeypatch)
    monkeypatch.setattr(towncache, "checker_version", lambda: b"a stricter kumiai")
    load_inventory(root, town_loader=towncache.TownCache(cache_file))
    assert sorted(loaded) == ["kiyokawa", "manazuru", "nakai"]


def test_a_broken_town_is_never_cached(tmp_path: Path) -> None:
    root = copy_inventory(tmp_path / "inv")
    (root / "towns" / "nakai.yaml").write_text("id: nakai\ncode: '143610'\n", encoding="utf-8")
    for _ in range(2):
        cache = towncache.TownCache(tmp_path / "towns.pickle")
        with pytest.raises(InputError, match=r"nakai\.yaml: code: check digit"):
            load_inventory(root, town_loader=cache)
        cache.save()

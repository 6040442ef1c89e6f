"""The cache of parsed town files: it saves parsing only, runs no code, and never changes what a load returns."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import copy_inventory

from kumiai import inventory, towncache
from kumiai.errors import InputError
from kumiai.inventory import Inventory, load_inventory


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    real = inventory.parse_town_file

    def counting(path: Path) -> Any:
        parsed.append(path.stem)
        return real(path)

    monkeypatch.setattr(towncache, "parse_town_file", counting)
    return parsed


def _cached_load(root: Path, cache_file: Path) -> Inventory:
    cache = towncache.TownCache(cache_file)
    try:
        return load_inventory(root, town_loader=cache)
    finally:
        cache.save()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_unchanged_towns_are_not_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.json"
    parsed = _count_parses(monkeypatch)
    _cached_load(root, cache_file)
    assert sorted(parsed) == ["kiyokawa", "manazuru", "nakai"]

    parsed.clear()
    _edit(root / "towns" / "nakai.yaml", "8900", "9000")
    inv = _cached_load(root, cache_file)
    assert parsed == ["nakai"] and inv.towns["nakai"].population == 9000


def test_a_new_parser_parses_every_town_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.json"
    _cached_load(root, cache_file)
    parsed = _count_parses(monkeypatch)
    monkeypatch.setattr(towncache, "parser_version", lambda: b"another parser")
    _cached_load(root, cache_file)
    assert sorted(parsed) == ["kiyokawa", "manazuru", "nakai"]


def test_a_broken_town_is_never_cached(tmp_path: Path) -> None:
    root = copy_inventory(tmp_path / "inv")
    (root / "towns" / "nakai.yaml").write_text("id: nakai\ncode: '143610'\n", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(InputError, match=r"nakai\.yaml: code: check digit"):
            _cached_load(root, tmp_path / "towns.json")
    entries = json.loads((tmp_path / "towns.json").read_text(encoding="utf-8"))["entries"]
    assert all(e.get("id") != "nakai" for e in entries.values())


# A change of consortium.yaml alone (town files unchanged) must reach every town: the cache must not answer with
# a town checked against the consortium as it was. Each edit is one the town files depend on.
CONSORTIUM_EDITS = [
    pytest.param("tier: s\n", "tier: m\n", id="default-tier"),
    pytest.param("retention_full: 7", "retention_full: 9", id="default-protection"),
    pytest.param("isolation: namespace\n", "isolation: vcluster\n", id="default-isolation"),
]


@pytest.mark.parametrize(("old", "new"), CONSORTIUM_EDITS)
def test_a_changed_consortium_reaches_cached_towns(tmp_path: Path, old: str, new: str) -> None:
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.json"
    _cached_load(root, cache_file)
    _edit(root / "consortium.yaml", old, new)

    cached = _cached_load(root, cache_file)

    assert cached.towns == load_inventory(root).towns
    assert cached.towns != load_inventory(copy_inventory(tmp_path / "orig")).towns  # the edit changed something


def test_a_system_removed_from_local_systems_fails_cached_towns(tmp_path: Path) -> None:
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.json"
    _cached_load(root, cache_file)
    _edit(root / "consortium.yaml", "  - name: 財務会計\n    segments: [lgwan]\n", "")

    with pytest.raises(InputError, match=r"nakai\.yaml: systems\[2\]\.name: unknown system '財務会計'"):
        _cached_load(root, cache_file)


def test_a_poisoned_entry_is_checked_like_a_file(tmp_path: Path) -> None:
    """An entry edited on disk yields nothing the models would refuse from a file."""
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.json"
    _cached_load(root, cache_file)
    doc = json.loads(cache_file.read_text(encoding="utf-8"))
    for entry in doc["entries"].values():
        entry["name"] = "{{ lookup('pipe', 'id') }}"
    cache_file.write_text(json.dumps(doc), encoding="utf-8")

    with pytest.raises(InputError) as info:
        _cached_load(root, cache_file)
    assert {(Path(p.file).name, p.field) for p in info.value.problems} == {
        ("kiyokawa.yaml", "name"),
        ("manazuru.yaml", "name"),
        ("nakai.yaml", "name"),
    }


def test_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    """A cache file of the old format (or any other bytes) is ignored: reading it runs nothing."""

    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path(tmp_path / "ran").write_text, ("pwned",))

    cache_file = tmp_path / "towns.json"
    cache_file.write_bytes(pickle.dumps({"x": Boom()}))
    root = copy_inventory(tmp_path / "inv")

    inv = _cached_load(root, cache_file)

    assert not (tmp_path / "ran").exists()
    assert sorted(inv.towns) == ["kiyokawa", "manazuru", "nakai"]
    assert json.loads(cache_file.read_text(encoding="utf-8"))["format"] == towncache.FORMAT


def test_a_symlinked_town_file_is_refused_even_when_its_bytes_are_cached(tmp_path: Path) -> None:
    root = copy_inventory(tmp_path / "inv")
    cache_file = tmp_path / "towns.json"
    _cached_load(root, cache_file)
    nakai = root / "towns" / "nakai.yaml"
    real = tmp_path / "elsewhere.yaml"
    real.write_bytes(nakai.read_bytes())
    nakai.unlink()
    nakai.symlink_to(real)

    with pytest.raises(InputError, match=r"nakai\.yaml: \(document\): is a symbolic link"):
        _cached_load(root, cache_file)

"""Fuzzing the loader: whatever is in the files, it returns an Inventory or raises InputError, nothing else.

And the command line ends with exit 0 or 2 and a message, never a traceback.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cli_helpers import LAB, copy_inventory, kumiai_in_process, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kumiai.errors import InputError
from kumiai.inventory import Inventory, load_inventory

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_CLI = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TARGETS = ("consortium.yaml", "towns/nakai.yaml", "towns/manazuru.yaml", "towns/extra.yaml")
VALID = {name: yaml.safe_load((LAB / name).read_text(encoding="utf-8")) for name in TARGETS[:3]}

# --- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included
    st.text(max_size=12),
    st.sampled_from(
        ["mynumber", "lgwan", "internet", "住民基本台帳", "財務会計", "143618", "s", "site-a", "0 2 * * *"]
    ),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)

# Pieces of YAML syntax, joined at random: mostly broken documents, some surprising valid ones.
YAML_PIECES = [
    "id: ", "nakai", "code: ", '"143618"', "143618", "population: ", "8900", "systems:", "- ", "{", "}", "[", "]",
    ", ", ": ", "\n", "  ", "\t", "&a ", "*a", "<<: *a", "!!int ", "!!str ", "!!binary ", "!!python/none ", "? ",
    "'", '"', "#", "|\n", ">-\n", "---\n", "...\n", "%YAML 1.1\n", "~", "null", "true", "0x1F", "1e400", ".nan",
    "2024-01-01", "\\u0000", "\x00", "\ufeff", "住民基本台帳", "segment: mynumber", "tier: ", "protection:\n  ",
]  # fmt: skip
yamlish = st.lists(st.sampled_from(YAML_PIECES), max_size=30).map("".join)


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """A copy of a valid document with one value replaced, removed or added somewhere in it."""
    doc = copy.deepcopy(doc)
    parent: Any = None
    key: Any = None
    node = doc
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(list(node))) if isinstance(node, dict) else draw(st.integers(0, len(node) - 1))
        parent, node = node, node[key]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    if parent is None:
        return draw(junk) if action == "replace" else doc
    if action == "replace":
        parent[key] = draw(junk)
    elif action == "remove":
        del parent[key]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = draw(junk)
    else:
        parent.insert(key, draw(junk))
    return doc


def dump(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()


@st.composite
def file_contents(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file in the inventory, new bytes for it)."""
    target = draw(st.sampled_from(TARGETS))
    kind = draw(st.sampled_from(["mutated", "mutated", "junk", "yamlish", "text", "bytes"]))
    if kind == "mutated":
        base = VALID.get(target, VALID["towns/nakai.yaml"])
        return target, dump(draw(mutated(base)))
    if kind == "junk":
        return target, dump(draw(junk))
    if kind == "yamlish":
        return target, draw(yamlish).encode()
    if kind == "text":
        return target, draw(st.text(max_size=200)).encode("utf-8", errors="surrogatepass")
    return target, draw(st.binary(max_size=200))


@contextmanager
def inventory_with(files: list[tuple[str, bytes]]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = copy_inventory(Path(tmp) / "inv")
        for rel, data in files:
            (root / rel).write_bytes(data)
        yield root


# --- properties


def check_loader(root: Path) -> None:
    try:
        inv = load_inventory(root)
    except InputError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.file and p.field and p.message, p
            assert len(str(p)) < 2000, "messages stay readable whatever the input"
    else:
        assert isinstance(inv, Inventory)


@FUZZ
@given(st.lists(file_contents(), min_size=1, max_size=3))
def test_loader_returns_an_inventory_or_raises_input_error(files: list[tuple[str, bytes]]) -> None:
    with inventory_with(files) as root:
        check_loader(root)


@FUZZ
@given(mutated(VALID["towns/nakai.yaml"]))
def test_mutated_town_is_either_valid_or_explained(town: Any) -> None:
    with inventory_with([("towns/nakai.yaml", dump(town))]) as root:
        check_loader(root)


@FUZZ_CLI
@given(st.lists(file_contents(), min_size=1, max_size=2))
def test_cli_exits_0_or_2_without_a_traceback(files: list[tuple[str, bytes]]) -> None:
    with inventory_with(files) as root:
        before = snapshot(root)
        result = kumiai_in_process("--inventory", root, "town", "validate")
        assert result.code in (0, 2), result
        assert "Traceback" not in result.stderr
        assert "internal error" not in result.stderr
        if result.code == 2:
            assert "Nothing was changed." in result.stderr
        assert snapshot(root) == before

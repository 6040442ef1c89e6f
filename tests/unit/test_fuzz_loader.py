"""Fuzzing the loader: whatever is in the files, it returns an Inventory or raises InputError, nothing else.

What it accepts holds the invariants the rest of kumiai relies on (checked here by the test's own rules, not by
calling the models): valid 団体コード, known segments and systems, fields matching their patterns, no control
character or line break anywhere. And the command line ends with exit 0 or 2 and a message, never a traceback.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cli_helpers import LAB, copy_inventory, kumiai_in_process, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kumiai.catalogue import STANDARD_SYSTEMS
from kumiai.errors import InputError
from kumiai.inventory import Inventory, load_inventory

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# For properties over one field, whose inputs are narrower.
FUZZ_FIELD = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_CLI = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TARGETS = ("consortium.yaml", "towns/nakai.yaml", "towns/manazuru.yaml", "towns/extra.yaml")
VALID = {name: yaml.safe_load((LAB / name).read_text(encoding="utf-8")) for name in TARGETS[:3]}

# --- strategies

# Characters that separate lines or hide text somewhere downstream (YAML, str.splitlines, INI files, terminals),
# and the syntax of the formats inventory values end up in (Jinja, supervisord, shells, paths).
HOSTILE_CHARS = "\n\r\t\x00\x0b\x0c\x1c\x1e\x1f\x7f\x85\u2028\u2029\u200b\u202e\ufeff{}%$`'\";|<>[]=\\/. "
HOSTILE = [
    "{{ lookup('pipe', 'id') }}",
    "{% for x in y %}",
    "\n[program:x]\ncommand=/bin/sh\n",
    "%(ENV_HOME)s",
    "$(id)",
    "../../etc",
    "/etc",
    "/",
    "a/../b",
    "lab\n",
    "-rf",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included
    st.text(max_size=12),
    st.sampled_from(
        ["mynumber", "lgwan", "internet", "住民基本台帳", "財務会計", "143618", "s", "site-a", "0 2 * * *", "posix"]
    ),
    st.sampled_from(HOSTILE),
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
def perturbed(draw: st.DrawFn, value: str) -> str:
    """One piece slipped into, or written over, an otherwise valid value: the closest misses of each pattern."""
    at = draw(st.sampled_from([0, len(value)]) | st.integers(0, len(value)))
    piece = draw(st.sampled_from(HOSTILE_CHARS) | st.sampled_from(HOSTILE) | st.sampled_from("0123456789"))
    skip = draw(st.sampled_from([0, 1]))  # 1: overwrite the character at `at`
    return value[:at] + piece + value[at + skip :]


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
    action = draw(st.sampled_from(["replace", "remove", "add", "perturb"]))
    if parent is None:
        return draw(junk) if action == "replace" else doc
    if action == "perturb" and isinstance(node, str):
        parent[key] = draw(perturbed(node))
    elif action in ("replace", "perturb"):
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


# The test's own statement of what an accepted inventory looks like.
WEIGHTS = (6, 5, 4, 3, 2)
SEGMENTS = {"mynumber", "lgwan", "internet"}
TOKEN = re.compile(r"[a-z][a-z0-9-]*")
KUBE_CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:/-]*")
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/root", "/home", "/tmp", "/run")


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def assert_invariants(inv: Inventory) -> None:
    cons = inv.consortium.model_dump(mode="json")
    towns = [t.model_dump(mode="json") for t in inv.towns.values()]
    for text in strings([cons, towns]):
        bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
        assert not bad, f"control or line-break character in an accepted value: {text!r}"
        assert "{{" not in text and "{%" not in text and "%(" not in text, f"template syntax accepted: {text!r}"
    assert TOKEN.fullmatch(cons["name"]) and 2 <= len(cons["name"]) <= 41, cons["name"]
    roles = [site["role"] for site in cons["sites"]]
    assert roles.count("primary") == 1 and "dr" in roles
    ids = [site["id"] for site in cons["sites"]]
    assert len(set(ids)) == len(ids)
    for site in cons["sites"]:
        assert TOKEN.fullmatch(site["id"]), site["id"]
        assert KUBE_CONTEXT.fullmatch(site["kube_context"]), site["kube_context"]
        ipaddress.IPv4Network(site["db_network"])  # strict: no host bits
        storage = site["object_storage"]
        if storage["type"] == "posix":
            path = storage["path"]
            assert ".." not in path.split("/") and "" not in path.removeprefix("/").split("/"), path
            assert not any(path == t or path.startswith(t + "/") for t in SYSTEM_TREES) and path != "/", path
        else:
            assert storage["type"] == "s3" and storage["endpoint"].startswith("https://") and not storage.get("path")
    local = {ls["name"]: set(ls["segments"]) for ls in cons["local_systems"]}
    assert not set(local) & set(STANDARD_SYSTEMS)
    for town_id, town in inv.towns.items():
        assert town.id == town_id and re.fullmatch(r"[a-z][a-z0-9-]{1,30}", town_id)
        code = town.code
        assert re.fullmatch(r"[0-9]{6}", code), code
        assert int(code[5]) == (11 - sum(w * int(d) for w, d in zip(WEIGHTS, code[:5], strict=True)) % 11) % 10, code
        assert town.systems and len({s.name for s in town.systems}) == len(town.systems)
        for system in town.systems:
            assert system.segment in SEGMENTS
            allowed = {"mynumber"} if system.name in STANDARD_SYSTEMS else local.get(system.name)
            assert allowed is not None, f"unknown system {system.name!r} accepted"
            assert system.segment in allowed, (system.name, system.segment)
        if town.placement is not None:
            assert {town.placement.primary, town.placement.dr} <= set(ids)
            assert town.placement.primary != town.placement.dr
    codes = [t.code for t in inv.towns.values()]
    assert len(set(codes)) == len(codes)


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
        assert_invariants(inv)


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


@FUZZ
@given(mutated(VALID["consortium.yaml"]))
def test_mutated_consortium_is_either_valid_or_explained(consortium: Any) -> None:
    with inventory_with([("consortium.yaml", dump(consortium))]) as root:
        check_loader(root)


# Every string field of the two files, as (file, path of keys and indexes).
STRING_FIELDS = [
    ("consortium.yaml", ("name",)),
    ("consortium.yaml", ("sites", 0, "id")),
    ("consortium.yaml", ("sites", 0, "name")),
    ("consortium.yaml", ("sites", 1, "kube_context")),
    ("consortium.yaml", ("sites", 1, "db_network")),
    ("consortium.yaml", ("sites", 0, "object_storage", "endpoint")),
    ("consortium.yaml", ("sites", 0, "object_storage", "region")),
    ("consortium.yaml", ("sites", 1, "object_storage", "bucket_prefix")),
    ("consortium.yaml", ("local_systems", 0, "name")),
    ("consortium.yaml", ("local_systems", 2, "segments", 0)),
    ("consortium.yaml", ("defaults", "protection", "backup_schedule")),
    ("towns/nakai.yaml", ("id",)),
    ("towns/nakai.yaml", ("name",)),
    ("towns/nakai.yaml", ("code",)),
    ("towns/nakai.yaml", ("systems", 0, "name")),
    ("towns/nakai.yaml", ("systems", 1, "segment")),
    ("towns/nakai.yaml", ("tier",)),
]


@st.composite
def one_string_field(draw: st.DrawFn) -> tuple[str, Any]:
    """A valid file with one string field set to any text, a hostile value or a near miss of its valid value."""
    file, where = draw(st.sampled_from(STRING_FIELDS))
    doc = copy.deepcopy(VALID[file])
    node = doc
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = draw(st.text(max_size=40) | st.sampled_from(HOSTILE) | perturbed(node[where[-1]]))
    return file, doc


@FUZZ_FIELD
@given(one_string_field())
def test_any_text_in_any_string_field_is_either_valid_or_explained(case: tuple[str, Any]) -> None:
    file, doc = case
    with inventory_with([(file, dump(doc))]) as root:
        check_loader(root)


@FUZZ_FIELD
@given(st.text(alphabet="0123456789", min_size=6, max_size=6))
def test_any_six_digits_are_a_valid_code_or_explained(code: str) -> None:
    town = {**VALID["towns/nakai.yaml"], "code": code}
    with inventory_with([("towns/nakai.yaml", dump(town))]) as root:
        check_loader(root)


path_parts = st.sampled_from(["..", ".", "", "site-a", "backup", "etc", "usr", "var", "log", "srv", "kumiai", "~"])


@FUZZ_FIELD
@given(st.booleans(), st.lists(path_parts, min_size=1, max_size=5).map("/".join))
def test_any_storage_path_is_confined_or_explained(absolute: bool, path: str) -> None:
    doc = copy.deepcopy(VALID["consortium.yaml"])
    doc["sites"][1]["object_storage"]["path"] = "/" + path if absolute else path
    with inventory_with([("consortium.yaml", dump(doc))]) as root:
        check_loader(root)


def test_the_invariants_hold_for_the_embedded_inventories() -> None:
    """The properties above are not vacuous: the inventories kumiai ships are accepted and satisfy them."""
    for root in (LAB, LAB.parent / "kanagawa"):
        assert_invariants(load_inventory(root))


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

"""Malformed inventories are rejected by the real CLI: exit 2, file and field named, no traceback, nothing written.

Each case starts from a copy of inventories/lab and breaks one thing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import Result, copy_inventory, kumiai, kumiai_in_process, lab_storage, snapshot

Mutation = Callable[[Path], None]


def edit(rel: str, old: str, new: str) -> Mutation:
    def apply(root: Path) -> None:
        path = root / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {rel}: the lab inventory changed, update this case"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    return apply


def append(rel: str, text: str) -> Mutation:
    def apply(root: Path) -> None:
        with (root / rel).open("a", encoding="utf-8") as fh:
            fh.write(text)

    return apply


def write(rel: str, content: str | bytes) -> Mutation:
    def apply(root: Path) -> None:
        data = content.encode() if isinstance(content, str) else content
        (root / rel).write_bytes(data)

    return apply


def remove(rel: str) -> Mutation:
    def apply(root: Path) -> None:
        (root / rel).unlink()

    return apply


def cut(rel: str, start: str, end: str) -> Mutation:
    """Remove the text from `start` to `end`, both included."""

    def apply(root: Path) -> None:
        path = root / rel
        text = path.read_text(encoding="utf-8")
        i = text.index(start)
        j = text.index(end, i) + len(end)
        path.write_text(text[:i] + text[j:], encoding="utf-8")

    return apply


def copy(src: str, dst: str) -> Mutation:
    def apply(root: Path) -> None:
        (root / dst).write_bytes((root / src).read_bytes())

    return apply


def symlink(rel: str) -> Mutation:
    """Replace the file by a link to a copy of it outside the inventory."""

    def apply(root: Path) -> None:
        target = root.parent / f"elsewhere-{Path(rel).name}"
        target.write_bytes((root / rel).read_bytes())
        (root / rel).unlink()
        (root / rel).symlink_to(target)

    return apply


def rename(src: str, dst: str) -> Mutation:
    def apply(root: Path) -> None:
        (root / src).rename(root / dst)

    return apply


@dataclass(frozen=True)
class Case:
    id: str
    mutations: tuple[Mutation, ...]
    expect: tuple[str, ...]  # exact substrings of stderr: "<file>: <field path>: " and what is allowed
    inventory: str = "inv"


NAKAI = "towns/nakai.yaml"
MANAZURU = "towns/manazuru.yaml"
CONS = "consortium.yaml"
SITE_A_STORAGE = lab_storage("site-a")
SITE_B_STORAGE = lab_storage("site-b")

CASES = [
    # --- the 団体コード
    Case(
        "bad-check-digit",
        (edit(NAKAI, 'code: "143618"', 'code: "143619"'),),
        ("inv/towns/nakai.yaml: code: ", "check digit of 143619 is wrong: 14361 takes 8, i.e. 143618"),
    ),
    Case(
        "non-digit-code",
        (edit(NAKAI, 'code: "143618"', 'code: "14361X"'),),
        ("inv/towns/nakai.yaml: code: ", 'must be 6 digits (5 digits and a check digit), got "14361X"'),
    ),
    Case(
        "seven-digit-code",
        (edit(NAKAI, 'code: "143618"', 'code: "1436180"'),),
        ("inv/towns/nakai.yaml: code: ", "must be 6 digits"),
    ),
    Case(
        "unquoted-short-code",
        (edit(NAKAI, 'code: "143618"', "code: 14361"),),
        ("inv/towns/nakai.yaml: code: ", 'must be a quoted string of 6 digits, e.g. code: "143014"'),
    ),
    Case(
        "code-with-leading-zero-read-as-octal",
        (edit(NAKAI, 'code: "143618"', "code: 012345"),),
        ("inv/towns/nakai.yaml: code: ", "must be a quoted string of 6 digits"),
    ),
    Case(
        "duplicate-code-across-files",
        (edit(MANAZURU, 'code: "143839"', 'code: "143618"'),),
        ("inv/towns/nakai.yaml: code: duplicate code 143618, also in inv/towns/manazuru.yaml",),
    ),
    # --- ids and file names
    Case(
        "duplicate-id-yaml-and-yml",
        (copy(NAKAI, "towns/nakai.yml"),),
        ("inv/towns/nakai.yml: id: duplicate id 'nakai', also in inv/towns/nakai.yaml",),
    ),
    Case(
        "id-not-file-name",
        (edit(NAKAI, "id: nakai", "id: nakai-machi"),),
        ("inv/towns/nakai.yaml: id: must equal the file name 'nakai', got 'nakai-machi'",),
    ),
    Case(
        "id-not-file-name-reported-with-other-problems",
        (edit(NAKAI, "id: nakai", "id: nakai-machi"), edit(NAKAI, "population: 8900", "population: 0")),
        ("inv/towns/nakai.yaml: id: must equal the file name 'nakai'", "inv/towns/nakai.yaml: population: "),
    ),
    Case(
        "bad-id-pattern",
        (rename(NAKAI, "towns/Nakai.yaml"), edit("towns/Nakai.yaml", "id: nakai", "id: Nakai")),
        ("inv/towns/Nakai.yaml: id: String should match pattern '^[a-z][a-z0-9-]{1,30}$'",),
    ),
    Case(
        "id-wrong-type",
        (edit(NAKAI, "id: nakai", "id: 42"),),
        ("inv/towns/nakai.yaml: id: Input should be a valid string (got 42)",),
    ),
    # --- systems and segments
    Case(
        "unknown-system",
        (edit(NAKAI, "{name: 戸籍,", "{name: 戸籍謄本,"),),
        (
            "inv/towns/nakai.yaml: systems[1].name: unknown system '戸籍謄本': allowed are the 20 standardized systems",
            "local_systems (文書管理, 財務会計, 電子申請)",
        ),
    ),
    Case(
        "standardized-system-in-lgwan",
        (edit(NAKAI, "{name: 住民基本台帳, segment: mynumber}", "{name: 住民基本台帳, segment: lgwan}"),),
        ("inv/towns/nakai.yaml: systems[0].segment: 住民基本台帳 may only run in segment mynumber, not lgwan",),
    ),
    Case(
        "local-system-in-segment-it-does-not-allow",
        (edit(NAKAI, "{name: 財務会計, segment: lgwan}", "{name: 財務会計, segment: internet}"),),
        ("inv/towns/nakai.yaml: systems[2].segment: 財務会計 may only run in segment lgwan, not internet",),
    ),
    Case(
        "unknown-segment",
        (edit(NAKAI, "{name: 戸籍, segment: mynumber}", "{name: 戸籍, segment: cloud}"),),
        ("inv/towns/nakai.yaml: systems[1].segment: Input should be 'mynumber', 'lgwan' or 'internet'",),
    ),
    Case(
        "system-listed-twice",
        (edit(NAKAI, "{name: 戸籍, segment: mynumber}", "{name: 住民基本台帳, segment: mynumber}"),),
        ("inv/towns/nakai.yaml: systems: each system is listed once, repeated: 住民基本台帳",),
    ),
    Case(
        "systems-not-a-list",
        (write(NAKAI, 'id: nakai\nname: 中井町\ncode: "143618"\npopulation: 8900\nsystems: 住民基本台帳\n'),),
        ("inv/towns/nakai.yaml: systems: Input should be a valid list",),
    ),
    Case(
        "systems-empty",
        (write(NAKAI, 'id: nakai\nname: 中井町\ncode: "143618"\npopulation: 8900\nsystems: []\n'),),
        ("inv/towns/nakai.yaml: systems: List should have at least 1 item",),
    ),
    Case(
        "unknown-field-in-system",
        (edit(NAKAI, "{name: 戸籍, segment: mynumber}", "{name: 戸籍, segment: mynumber, vendor: x}"),),
        ("inv/towns/nakai.yaml: systems[1].vendor: unknown field; allowed fields are: name, segment",),
    ),
    # --- other town fields
    Case(
        "population-zero",
        (edit(NAKAI, "population: 8900", "population: 0"),),
        ("inv/towns/nakai.yaml: population: Input should be greater than 0 (got 0)",),
    ),
    Case(
        "population-negative",
        (edit(NAKAI, "population: 8900", "population: -8900"),),
        ("inv/towns/nakai.yaml: population: Input should be greater than 0 (got -8900)",),
    ),
    Case(
        "population-string",
        (edit(NAKAI, "population: 8900", 'population: "8900"'),),
        ("inv/towns/nakai.yaml: population: must be a whole number, written without quotes (got '8900')",),
    ),
    Case(
        "population-float",
        (edit(NAKAI, "population: 8900", "population: 8900.5"),),
        ("inv/towns/nakai.yaml: population: must be a whole number",),
    ),
    Case(
        "name-missing",
        (edit(NAKAI, "name: 中井町\n", ""),),
        ("inv/towns/nakai.yaml: name: required field is missing",),
    ),
    Case(
        "name-with-line-break",
        (edit(NAKAI, "name: 中井町", 'name: "中井町\\ntier: l"'),),
        ("inv/towns/nakai.yaml: name: must be one line of text without control characters",),
    ),
    Case(
        "tier-xl",
        (edit(NAKAI, "tier: s", "tier: xl"),),
        ("inv/towns/nakai.yaml: tier: Input should be 's', 'm' or 'l' (got 'xl')",),
    ),
    Case(
        "isolation-bad",
        (append(NAKAI, "isolation: vm\n"),),
        ("inv/towns/nakai.yaml: isolation: Input should be 'namespace', 'vcluster' or 'dedicated-nodes'",),
    ),
    Case(
        "unknown-extra-field",
        (append(NAKAI, "colour: blue\n"),),
        ("inv/towns/nakai.yaml: colour: unknown field; allowed fields are: id, name, code, population, systems",),
    ),
    Case(
        "duplicate-yaml-key",
        (append(NAKAI, "tier: l\n"),),
        ("inv/towns/nakai.yaml: tier: is given twice (again at line 10); give each field once",),
    ),
    # --- protection
    Case(
        "protection-missing-field-in-defaults",
        (edit(CONS, "    immutable_days: 30\n", ""),),
        ("inv/consortium.yaml: defaults.protection.immutable_days: required field is missing",),
    ),
    Case(
        "negative-rpo",
        (edit(MANAZURU, "rpo_seconds: 60", "rpo_seconds: -1"),),
        ("inv/towns/manazuru.yaml: protection.rpo_seconds: Input should be greater than or equal to 0",),
    ),
    Case(
        "protection-not-a-mapping",
        (edit(MANAZURU, "protection:\n  rpo_seconds: 60", "protection: daily"),),
        ("inv/towns/manazuru.yaml: protection: Input should be a valid dictionary",),
    ),
    Case(
        "cron-four-fields",
        (edit(CONS, 'backup_schedule: "0 2 * * *"', 'backup_schedule: "0 2 * *"'),),
        ("inv/consortium.yaml: defaults.protection.backup_schedule: must be a cron expression of five fields",),
    ),
    Case(
        "cron-hour-out-of-range",
        (append(MANAZURU, '  backup_schedule: "0 25 * * *"\n'),),
        ("inv/towns/manazuru.yaml: protection.backup_schedule: must be a cron expression", "hour 0-23"),
    ),
    # --- YAML and file level
    Case(
        "yaml-syntax-error",
        (edit(NAKAI, "{name: 戸籍, segment: mynumber}", "{name: 戸籍, segment: mynumber"),),
        ("inv/towns/nakai.yaml: (document): YAML syntax error at line",),
    ),
    Case(
        "empty-file",
        (write(NAKAI, ""),),
        ("inv/towns/nakai.yaml: (document): must be a mapping of fields, but is empty",),
    ),
    Case(
        "list-instead-of-mapping",
        (write(NAKAI, "- id: nakai\n- name: 中井町\n"),),
        ("inv/towns/nakai.yaml: (document): must be a mapping of fields, but is a list",),
    ),
    Case(
        "non-utf8-bytes",
        (write(NAKAI, "id: nakai\nname: 中井町\n".encode("shift_jis")),),
        ("inv/towns/nakai.yaml: (document): is not UTF-8 text",),
    ),
    Case(
        "deeply-nested-value",
        (edit(NAKAI, "population: 8900", "population: " + "[" * 990 + "]" * 990),),
        ("inv/towns/nakai.yaml: population: must be a whole number, written without quotes (got [[[[...]]]])",),
    ),
    Case(
        "nesting-beyond-the-yaml-limit",
        (edit(NAKAI, "population: 8900", "population: " + "[" * 5000 + "]" * 5000),),
        ("inv/towns/nakai.yaml: (document): YAML syntax error", "exceeded maximum nesting depth"),
    ),
    Case(
        "two-yaml-documents",
        (append(NAKAI, "---\nid: nakai\n"),),
        ("inv/towns/nakai.yaml: (document): YAML syntax error", "expected a single document"),
    ),
    Case(
        "python-object-tag",
        (write(NAKAI, "!!python/object/apply:os.system ['true']\n"),),
        ("inv/towns/nakai.yaml: (document): YAML syntax error", "could not determine a constructor"),
    ),
    Case(
        "town-file-is-a-symlink",
        (symlink(NAKAI),),
        ("inv/towns/nakai.yaml: (document): is a symbolic link; inventory files must be regular files",),
    ),
    # --- consortium.yaml
    Case(
        "consortium-file-is-a-symlink",
        (symlink(CONS),),
        ("inv/consortium.yaml: (document): is a symbolic link",),
    ),
    Case(
        "no-primary-site",
        (edit(CONS, "role: primary", "role: dr"),),
        ("inv/consortium.yaml: sites: exactly one site must have role 'primary', found 0",),
    ),
    Case(
        "two-primary-sites",
        (edit(CONS, "role: dr", "role: primary"),),
        (
            "inv/consortium.yaml: sites: exactly one site must have role 'primary', found 2 (site-a, site-b); "
            "at least one site must have role 'dr'",
        ),
    ),
    Case(
        "unknown-site-role",
        (edit(CONS, "  - id: site-b\n    role: dr\n", "  - id: site-b\n    role: standby\n"),),
        ("inv/consortium.yaml: sites[1].role: Input should be 'primary' or 'dr' (got 'standby')",),
    ),
    Case(
        "only-a-primary-site",
        (cut(CONS, "  - id: site-b", "bucket_prefix: lab-site-b\n"),),
        ("inv/consortium.yaml: sites: at least one site must have role 'dr' (the remote copy), found none",),
    ),
    Case(
        "duplicate-site-id",
        (edit(CONS, "id: site-b", "id: site-a"),),
        ("inv/consortium.yaml: sites: site ids must be unique, repeated: site-a",),
    ),
    Case(
        "bad-site-id",
        (edit(CONS, "id: site-b", "id: Site_B"),),
        ("inv/consortium.yaml: sites[1].id: String should match pattern",),
    ),
    Case(
        "db-network-host-bits",
        (edit(CONS, "db_network: 127.0.2.0/24", "db_network: 127.0.2.1/24"),),
        ("inv/consortium.yaml: sites[1].db_network: Input is not a valid IPv4 network",),
    ),
    Case(
        "db-network-not-an-address",
        (edit(CONS, "db_network: 127.0.2.0/24", "db_network: loopback"),),
        ("inv/consortium.yaml: sites[1].db_network: ",),
    ),
    Case(
        "s3-without-endpoint",
        (edit(CONS, SITE_A_STORAGE, "type: s3\n      region: ap-northeast-1\n      bucket_prefix: lab-a"),),
        ("inv/consortium.yaml: sites[0].object_storage: type s3 needs endpoint",),
    ),
    Case(
        "s3-plain-http",
        (
            edit(
                CONS,
                SITE_A_STORAGE,
                "type: s3\n      endpoint: http://s3.example\n      region: r\n      bucket_prefix: lab-a",
            ),
        ),
        ("inv/consortium.yaml: sites[0].object_storage.endpoint: must be an https:// URL",),
    ),
    Case(
        "posix-storage-with-s3-fields",
        (edit(CONS, SITE_A_STORAGE, "type: posix\n      path: site-a/backup\n      region: ap-northeast-1"),),
        ("inv/consortium.yaml: sites[0].object_storage: type posix takes only path; remove region",),
    ),
    Case(
        "storage-path-leaves-the-lab",
        (edit(CONS, SITE_B_STORAGE, "type: posix\n      path: site-b/../../../srv"),),
        ("inv/consortium.yaml: sites[1].object_storage.path: must not contain '..'",),
    ),
    Case(
        "storage-path-is-a-system-directory",
        (edit(CONS, SITE_B_STORAGE, "type: posix\n      path: /usr/lib/postgresql"),),
        ("inv/consortium.yaml: sites[1].object_storage.path: must not be a system directory (/usr)",),
    ),
    Case(
        "consortium-name-not-a-plain-token",
        (edit(CONS, "name: lab", 'name: "lab {{ 7*7 }}"'),),
        ("inv/consortium.yaml: name: must be a lower-case letter, then lower-case letters, digits or '-'",),
    ),
    Case(
        "kube-context-with-a-space",
        (edit(CONS, "kube_context: kumiai-lab-site-b", "kube_context: kumiai lab"),),
        ("inv/consortium.yaml: sites[1].kube_context: must be a kubeconfig context name",),
    ),
    Case(
        "site-name-with-a-line-break",
        (edit(CONS, "name: 遠隔地データセンター (lab)", 'name: "遠隔地\\n[program:x]"'),),
        ("inv/consortium.yaml: sites[1].name: must be one line of text without control characters", "U+000A"),
    ),
    Case(
        "storage-type-unknown",
        (edit(CONS, SITE_A_STORAGE, "type: tape\n      path: x"),),
        ("inv/consortium.yaml: sites[0].object_storage.type: Input should be 'posix' or 's3'",),
    ),
    Case(
        "local-system-named-like-standardized",
        (edit(CONS, "  - name: 文書管理\n", "  - name: 戸籍\n"),),
        ("inv/consortium.yaml: local_systems: local_systems repeat standardized systems: 戸籍",),
    ),
    Case(
        "local-system-listed-twice",
        (edit(CONS, "  - name: 文書管理\n", "  - name: 財務会計\n"),),
        ("inv/consortium.yaml: local_systems: each local system is listed once, repeated: 財務会計",),
    ),
    Case(
        "unknown-field-in-consortium",
        (append(CONS, "region: kanto\n"),),
        ("inv/consortium.yaml: region: unknown field; allowed fields are: name, sites, local_systems, defaults",),
    ),
    Case(
        "unknown-field-in-site",
        (edit(CONS, "kube_context: kumiai-lab-site-b", "kube_context: kumiai-lab-site-b\n    zone: b"),),
        ("inv/consortium.yaml: sites[1].zone: unknown field; allowed fields are: id, role, name, kube_context",),
    ),
    Case(
        "consortium-yaml-syntax-error",
        (edit(CONS, "name: lab", "name: [lab"),),
        ("inv/consortium.yaml: (document): YAML syntax error at line",),
    ),
    Case(
        "missing-consortium-yaml",
        (remove(CONS),),
        ("inv/consortium.yaml: (document): file is missing: every inventory has a consortium.yaml",),
    ),
    # --- placement
    Case(
        "placement-unknown-site",
        (append(NAKAI, "placement: {primary: site-a, dr: site-z}\n"),),
        ("inv/towns/nakai.yaml: placement.dr: unknown site 'site-z'; sites are: site-a, site-b",),
    ),
    Case(
        "placement-primary-equals-dr",
        (append(NAKAI, "placement: {primary: site-a, dr: site-a}\n"),),
        ("inv/towns/nakai.yaml: placement: primary and dr must be different sites",),
    ),
    # --- the inventory path
    Case(
        "inventory-path-not-a-directory",
        (),
        ("inv/consortium.yaml: (inventory): is not a directory; pass --inventory PATH",),
        inventory="inv/consortium.yaml",
    ),
    Case(
        "inventory-path-does-not-exist",
        (),
        ("inv/nowhere: (inventory): is not a directory",),
        inventory="inv/nowhere",
    ),
]


def test_there_are_enough_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 30


def check_rejected(case: Case, tmp_path: Path, run: Callable[..., Result]) -> None:
    root = copy_inventory(tmp_path / "inv")
    for mutate in case.mutations:
        mutate(root)
    before = snapshot(tmp_path)

    result = run("--inventory", case.inventory, "town", "validate")

    assert result.code == 2, result
    for expected in case.expect:
        assert expected in result.stderr, f"{expected!r} not in:\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr
    assert "Nothing was changed." in result.stderr
    assert result.stdout == ""
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_inventory_is_rejected(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case through the console entry point run(), in this process (fast)."""
    monkeypatch.chdir(tmp_path)
    check_rejected(case, tmp_path, kumiai_in_process)


# A sample through the installed `kumiai` script in a fresh process, as a user runs it.
SUBPROCESS_SAMPLE = (
    "bad-check-digit",
    "duplicate-id-yaml-and-yml",
    "standardized-system-in-lgwan",
    "population-string",
    "yaml-syntax-error",
    "non-utf8-bytes",
    "two-primary-sites",
    "placement-unknown-site",
    "missing-consortium-yaml",
    "inventory-path-not-a-directory",
)


SAMPLED = [c for c in CASES if c.id in SUBPROCESS_SAMPLE]
assert len(SAMPLED) == len(SUBPROCESS_SAMPLE)


@pytest.mark.parametrize("case", SAMPLED, ids=[c.id for c in SAMPLED])
def test_malformed_inventory_is_rejected_by_the_console_script(case: Case, tmp_path: Path) -> None:
    check_rejected(case, tmp_path, functools.partial(kumiai, cwd=tmp_path))


@pytest.mark.parametrize("case", CASES[:6], ids=[c.id for c in CASES[:6]])
def test_validate_json_lists_the_same_problems(case: Case, tmp_path: Path) -> None:
    root = copy_inventory(tmp_path / "inv")
    for mutate in case.mutations:
        mutate(root)

    result = kumiai_in_process("--inventory", root, "town", "validate", "--json")

    assert result.code == 2
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert all(set(p) == {"file", "field", "message"} for p in report["problems"])
    assert result.stderr == ""


def test_every_problem_in_every_file_is_reported_in_one_run(tmp_path: Path) -> None:
    root = copy_inventory(tmp_path / "inv")
    edit(NAKAI, 'code: "143618"', 'code: "143619"')(root)
    edit(NAKAI, "population: 8900", "population: 0")(root)
    edit("towns/kiyokawa.yaml", "{name: 国民健康保険, segment: mynumber}", "{name: 国民健康保険, segment: lgwan}")(root)
    edit("towns/kiyokawa.yaml", "{name: 電子申請, segment: internet}", "{name: 電子決裁, segment: internet}")(root)
    write(MANAZURU, "id: manazuru\nname: [真鶴町\n")(root)
    write("towns/oi.yml", "id: oi\n")(root)
    before = snapshot(tmp_path)

    result = kumiai("--inventory", "inv", "town", "validate", cwd=tmp_path)

    assert result.code == 2
    expected = [
        "inv/towns/kiyokawa.yaml: systems[2].segment: 国民健康保険 may only run in segment mynumber, not lgwan",
        "inv/towns/kiyokawa.yaml: systems[4].name: unknown system '電子決裁'",
        "inv/towns/manazuru.yaml: (document): YAML syntax error",
        "inv/towns/nakai.yaml: code: check digit of 143619 is wrong",
        "inv/towns/nakai.yaml: population: Input should be greater than 0",
        "inv/towns/oi.yml: code: required field is missing",
        "inv/towns/oi.yml: name: required field is missing",
        "inv/towns/oi.yml: population: required field is missing",
        "inv/towns/oi.yml: systems: required field is missing",
    ]
    assert f"{len(expected)} problems in the input" in result.stderr
    for line in expected:
        assert line in result.stderr
    # Sorted by file then field, so the report reads file by file.
    positions = [result.stderr.index(line) for line in expected]
    assert positions == sorted(positions)
    assert snapshot(tmp_path) == before


def test_unreadable_consortium_is_the_only_problem_reported(tmp_path: Path) -> None:
    """Towns relying on the consortium's defaults are not blamed for fields those defaults would supply."""
    root = copy_inventory(tmp_path / "inv")
    edit(CONS, "name: lab", "name: [lab")(root)
    edit(NAKAI, 'code: "143618"', 'code: "143619"')(root)

    result = kumiai_in_process("--inventory", root, "town", "validate")

    assert result.code == 2
    assert "2 problems in the input" in result.stderr
    assert "consortium.yaml: (document): YAML syntax error" in result.stderr
    assert "nakai.yaml: code: check digit" in result.stderr
    assert "required field is missing" not in result.stderr


def test_internal_errors_never_show_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a bug ends in a message (and exit 1), through run()."""
    import kumiai.inventory

    def broken(root: Path) -> None:
        raise RuntimeError("simulated defect")

    monkeypatch.setattr(kumiai.inventory, "load_consortium", broken)
    result = kumiai_in_process("--inventory", copy_inventory(tmp_path / "inv"), "town", "validate")

    assert result.code == 1
    assert "internal error: RuntimeError: simulated defect" in result.stderr
    assert "Traceback" not in result.stderr


def test_explicit_tag_that_does_not_fit_is_an_input_error(tmp_path: Path) -> None:
    # Found by the fuzzer: `!!int id` made PyYAML's constructor raise ValueError.
    from kumiai.errors import InputError
    from kumiai.inventory import load_inventory

    root = copy_inventory(tmp_path / "inv")
    (root / "consortium.yaml").write_text("!!int id: \n", encoding="utf-8")
    with pytest.raises(InputError, match=r"consortium.yaml: \(document\): a value does not fit its YAML tag"):
        load_inventory(root)

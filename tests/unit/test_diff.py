"""`kumiai diff`: the comparison itself (pure), and the command between two commits of a throwaway repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import clean_env, kumiai, snapshot
from git_helpers import commit_all, edit, git, repo_with_inventory

from kumiai.diff.model import (
    ADD,
    CHANGE,
    MISSING,
    REMOVE,
    REPLACE,
    InventoryDiff,
    StackDiff,
    TownDiff,
    diff_resources,
    diff_values,
    mask_vars,
)
from kumiai.diff.report import RENDERERS

# --- the comparison -----------------------------------------------------------------------------------------


def test_lists_of_objects_are_matched_by_their_identity_not_their_position() -> None:
    old = {"ports": [{"name": "pg", "port": 5432}, {"name": "api", "port": 8008}]}
    new = {"ports": [{"name": "api", "port": 8009}, {"name": "pg", "port": 5432}]}
    changes = diff_values(old, new)
    assert [(c.path, c.old, c.new) for c in changes] == [("ports[name=api].port", 8008, 8009)]


def test_ports_without_names_are_matched_by_port_and_protocol() -> None:
    old = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    new = [{"port": 53, "protocol": "TCP"}]
    changes = diff_values({"ports": old}, {"ports": new})
    assert [(c.path, c.op) for c in changes] == [("ports[port=53,protocol=UDP]", REMOVE)]


def test_nested_paths_quote_keys_with_dots_and_leave_equal_values_out() -> None:
    old = {"spec": {"hard": {"requests.cpu": "2", "pods": "20"}, "same": {"a": [1, 2]}}}
    new = {"spec": {"hard": {"requests.cpu": "4", "pods": "20"}, "same": {"a": [1, 2]}, "extra": {"x": 1}}}
    changes = diff_values(old, new)
    assert [(c.path, c.old, c.new) for c in changes] == [
        ("spec.extra", MISSING, {"x": 1}),  # an added subtree is one change
        ('spec.hard["requests.cpu"]', "2", "4"),
    ]


def test_lists_of_plain_values_are_compared_whole() -> None:
    changes = diff_values({"verbs": ["get", "list"]}, {"verbs": ["get", "list", "delete"]})
    assert [(c.path, c.old, c.new) for c in changes] == [("verbs", ["get", "list"], ["get", "list", "delete"])]


def _binding(role: str, subject: str) -> dict[str, Any]:
    return {
        "type": "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
        "name": "t-lgwan-ops",
        "inputs": {
            "kind": "RoleBinding",
            "metadata": {"name": "ops", "namespace": "t-lgwan"},
            "roleRef": {"kind": "Role", "name": role},
            "subjects": [{"kind": "Group", "name": subject}],
        },
    }


def test_a_change_kubernetes_cannot_make_in_place_is_a_replacement() -> None:
    (changed,) = diff_resources([_binding("ops", "a")], [_binding("ops", "b")])
    assert changed.op == CHANGE and changed.replaced_by == []
    (replaced,) = diff_resources([_binding("ops", "a")], [_binding("admin", "a")])
    assert replaced.op == REPLACE and replaced.replaced_by == ["roleRef.name"]
    assert replaced.kind == "RoleBinding" and replaced.object == "t-lgwan/ops"


def test_resources_are_added_and_removed_by_pulumi_identity() -> None:
    other = {**_binding("ops", "a"), "name": "t-mynumber-ops"}
    diffs = diff_resources([_binding("ops", "a")], [other])
    assert sorted((d.name, d.op) for d in diffs) == [("t-lgwan-ops", REMOVE), ("t-mynumber-ops", ADD)]
    assert diff_resources([_binding("ops", "a")], [_binding("ops", "a")]) == []


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_a_replacement_is_called_out_with_its_reason(fmt: str) -> None:
    stack = StackDiff(
        "site-a", "t", diff_resources([_binding("ops", "a")], [_binding("admin", "a")]), [], [], True, True
    )
    town = TownDiff("t", "試験町", CHANGE, [stack], [], None)
    shown = RENDERERS[fmt](InventoryDiff("HEAD", "working tree", "lab", [town], [], 0))
    assert "1 resources will be REPLACED" in shown
    assert "roleRef.name" in shown and "cannot change in place" in shown and "試験町" in shown


def test_secret_looking_host_variables_are_masked_at_any_depth() -> None:
    masked = mask_vars({"kumiai_tier": "s", "repos": [{"cipher_pass": "x", "site": "a"}], "db_password": "y"})
    assert masked == {
        "kumiai_tier": "s",
        "repos": [{"cipher_pass": "[secret]", "site": "a"}],
        "db_password": "[secret]",
    }


# --- the command ----------------------------------------------------------------------------------------------

NEW_TOWN = """id: matsuda
name: 松田町
code: "143634"
population: 10000
systems:
  - {name: 住民基本台帳, segment: mynumber}
"""


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # One render cache for the module: every side of every diff here renders the same few stacks.
    return clean_env(KUMIAI_STATE_DIR=str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two commits: then nakai's tier changed, matsuda added, kiyokawa's internet segment removed."""
    inv = repo_with_inventory(tmp_path_factory.mktemp("repo"))
    edit(inv / "towns" / "nakai.yaml", "tier: s", "tier: m")
    edit(inv / "towns" / "kiyokawa.yaml", "  - {name: 電子申請, segment: internet}\n", "")
    (inv / "towns" / "matsuda.yaml").write_text(NEW_TOWN, encoding="utf-8")
    commit_all(inv.parent, "tier, new town, segment removed")
    return inv


@pytest.fixture(scope="module")
def changes(changed: Path, state: dict[str, str]) -> dict[str, Any]:
    """The JSON diff of the two commits."""
    data: dict[str, Any] = json.loads(diff(changed, state, "HEAD~1", "--head", "HEAD", "--format", "json").stdout)
    return data


def diff(inv: Path, env: dict[str, str], *args: str) -> Any:
    r = kumiai("--inventory", inv, "diff", *args, env=env, cwd=inv.parent)
    assert r.code in (0, 1), r.stderr
    return r


def _objects(stack: dict[str, Any], op: str) -> set[str]:
    return {f"{r['kind']} {r['object']}" for r in stack["resources"] if r["op"] == op}


def test_exactly_the_three_changes_and_nothing_else(changes: dict[str, Any]) -> None:
    data = changes
    summary = data["summary"]
    assert summary["towns_added"] == ["matsuda"] and summary["towns_removed"] == []
    assert sorted(summary["towns_changed"]) == ["kiyokawa", "nakai"]
    assert summary["placement_moves"] == [] and data["platform"] == []
    towns = {t["town"]: t for t in data["towns"]}
    assert set(towns) == {"kiyokawa", "matsuda", "nakai"}  # manazuru did not change

    nakai = towns["nakai"]
    # The tier carries the WAL kept for the DR site with it.
    assert [(c["path"], c["old"], c["new"]) for c in nakai["datalayer"]] == [
        ("kumiai_archive_push_queue_max_mb", 512, 4096),
        ("kumiai_max_slot_wal_keep_size_mb", 512, 4096),
        ("kumiai_tier", "s", "m"),
    ]
    assert [s["site"] for s in nakai["stacks"]] == ["site-a", "site-b"]
    for stack in nakai["stacks"]:
        assert _objects(stack, CHANGE) == {
            f"{kind} nakai-{seg}/{name}"
            for seg in ("mynumber", "lgwan")
            for kind, name in (("ResourceQuota", "quota"), ("LimitRange", "limits"))
        }
        assert {r["op"] for r in stack["resources"]} == {CHANGE}
        quota = next(r for r in stack["resources"] if r["object"] == "nakai-lgwan/quota")
        assert {"path": 'spec.hard["requests.cpu"]', "op": CHANGE, "old": "2", "new": "4"} in quota["changes"]

    kiyokawa = towns["kiyokawa"]
    assert kiyokawa["datalayer"] == []
    for stack in kiyokawa["stacks"]:
        assert {r["op"] for r in stack["resources"]} == {REMOVE}  # flagged: every one a removal
        removed = _objects(stack, REMOVE)
        assert "Namespace kiyokawa-internet" in removed
        assert all(o.split(" ", 1)[1].startswith("kiyokawa-internet") for o in removed)

    matsuda = towns["matsuda"]
    assert matsuda["status"] == ADD and matsuda["name"] == "松田町"
    assert {s["site"] for s in matsuda["stacks"]} == {"site-a", "site-b"}
    assert all(r["op"] == ADD for s in matsuda["stacks"] for r in s["resources"])
    assert {c["path"] for c in matsuda["datalayer"]} >= {"kumiai_primary_site", "kumiai_tier", "kumiai_repos"}
    for stack in data["platform"] + [s for t in data["towns"] for s in t["stacks"]]:
        assert stack["isolation"]["after"] == []


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_people_formats_show_the_same_changes(
    changed: Path, state: dict[str, str], changes: dict[str, Any], fmt: str
) -> None:
    data = changes
    shown = diff(changed, state, "HEAD~1", "--head", "HEAD", "--format", fmt).stdout
    removed = [r["object"] for t in data["towns"] for s in t["stacks"] for r in s["resources"] if r["op"] == REMOVE]
    for name, town in (("中井町", "nakai"), ("松田町", "matsuda"), ("清川村", "kiyokawa")):
        assert name in shown and town in shown
    assert "manazuru" not in shown and "真鶴町" not in shown  # unchanged: not mentioned
    assert f"{len(removed)} resources will be REMOVED" in shown
    for obj in removed:
        assert obj in shown
    assert "kumiai_tier" in shown and 'spec.hard["requests.cpu"]' in shown.replace("&quot;", '"')
    assert "kiyokawa-internet" in shown and "nakai-lgwan/quota" in shown


def test_a_committed_failover_shows_the_db_service_moving(changed: Path, state: dict[str, str]) -> None:
    town = changed / "towns" / "manazuru.yaml"
    town.write_text(town.read_text(encoding="utf-8") + "placement:\n  primary: site-b\n  dr: site-a\n", "utf-8")
    commit_all(changed.parent, "manazuru fails over to site-b")
    try:
        data = json.loads(diff(changed, state, "HEAD~1", "--head", "HEAD", "--json").stdout)
        (town_diff,) = data["towns"]
        assert town_diff["town"] == "manazuru"
        assert town_diff["placement"] == {"before": "site-a", "after": "site-b"}
        assert data["summary"]["placement_moves"] == [{"town": "manazuru", "before": "site-a", "after": "site-b"}]
        for stack in town_diff["stacks"]:  # at both sites, the db Service follows the database
            services = [r for r in stack["resources"] if r["kind"] == "Service"]
            assert {r["object"] for r in services} == {"manazuru-mynumber/db", "manazuru-lgwan/db"}
            for service in services:
                assert service["changes"] == [
                    {
                        "path": "spec.externalName",
                        "op": CHANGE,
                        "old": "manazuru.db.site-a.lab.internal",
                        "new": "manazuru.db.site-b.lab.internal",
                    }
                ]
        text = diff(changed, state, "HEAD~1", "--head", "HEAD").stdout
        assert "manazuru (真鶴町): database moves from site-a to site-b" in text
    finally:
        git(changed.parent, "reset", "-q", "--hard", "HEAD~1")


def test_exit_code_reports_changes_only_when_asked(changed: Path, state: dict[str, str]) -> None:
    assert diff(changed, state, "HEAD~1").code == 0
    assert diff(changed, state, "HEAD~1", "--exit-code").code == 1
    same = diff(changed, state, "HEAD", "--exit-code")
    assert same.code == 0 and "No changes." in same.stdout


def test_town_and_site_select_what_is_compared(changed: Path, state: dict[str, str]) -> None:
    data = json.loads(diff(changed, state, "HEAD~1", "--town", "nakai", "--site", "site-b", "--json").stdout)
    assert [t["town"] for t in data["towns"]] == ["nakai"]
    assert [s["site"] for s in data["towns"][0]["stacks"]] == ["site-b"]
    # A town that exists only on the newer side can be selected too.
    added = json.loads(diff(changed, state, "HEAD~1", "--town", "matsuda", "--json").stdout)
    assert added["summary"]["towns_added"] == ["matsuda"] and len(added["towns"]) == 1


def test_the_work_tree_is_the_default_head_and_is_never_written(changed: Path, state: dict[str, str]) -> None:
    edit(changed / "towns" / "manazuru.yaml", "population: 6900", "population: 6901")
    edit(changed / "towns" / "manazuru.yaml", "rpo_seconds: 60", "rpo_seconds: 30")
    try:
        before, status = snapshot(changed.parent), git(changed.parent, "status", "--porcelain")
        data = json.loads(diff(changed, state, "--json").stdout)
        assert data["head"] == "working tree"
        (town,) = data["towns"]
        assert town["datalayer"] == [{"path": "kumiai_rpo_seconds", "op": CHANGE, "old": 60, "new": 30}]
        assert snapshot(changed.parent) == before and git(changed.parent, "status", "--porcelain") == status
    finally:
        git(changed.parent, "checkout", "-q", "--", ".")


def test_out_writes_the_file_and_says_so(changed: Path, state: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "reports" / "diff.md"
    r = diff(changed, state, "HEAD~1", "--format", "md", "--out", target)
    assert target.read_text(encoding="utf-8").startswith("# kumiai diff: lab")
    assert str(target) in r.stdout and "# kumiai diff" not in r.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("no-such-ref",), "BASE"),
        (("HEAD", "--head", "nope"), "--head"),
        (("HEAD~1", "--town", "atlantis"), "--town"),
        (("HEAD~1", "--site", "site-z"), "--site"),
        (("HEAD", "--format", "pdf"), "--format"),
    ],
)
def test_bad_refs_and_options_are_bad_input(
    changed: Path, state: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    r = kumiai("--inventory", changed, "diff", *args, env=state, cwd=changed.parent)
    assert r.code == 2, r.stderr
    assert named in r.stderr and r.stdout == ""


def test_a_broken_inventory_at_the_base_is_named_by_ref(tmp_path: Path, state: dict[str, str]) -> None:
    inv = repo_with_inventory(tmp_path / "repo")
    (inv / "towns" / "nakai.yaml").write_text("id: nakai\n", encoding="utf-8")
    commit_all(inv.parent, "broken")
    (inv / "towns" / "nakai.yaml").unlink()
    r = kumiai("--inventory", inv, "diff", "HEAD", env=state, cwd=inv.parent)
    assert r.code == 2
    assert "HEAD:inv/towns/nakai.yaml" in r.stderr


def test_an_inventory_outside_git_is_bad_input(tmp_path: Path, state: dict[str, str]) -> None:
    inv = tmp_path / "plain"
    inv.mkdir()
    r = kumiai("--inventory", inv, "diff", env=state, cwd=tmp_path)
    assert r.code == 2 and "git" in r.stderr

"""The render cache cannot lie: its key covers every input of a stack, and an entry edited on disk is caught.

A cached re-plan must equal a plan without the cache after any change of input, including the ones that reach a
stack only through another site (its database site) or through the consortium.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cli_helpers import copy_inventory, kumiai_in_process
from git_helpers import repo_with_inventory

from kumiai.inventory import load_inventory
from kumiai.models import Placement
from kumiai.rendercache import RenderCache, stack_key, stack_keys
from kumiai_stacks.spec import platform_spec, tenant_spec

Edit = Callable[[Path], Any]


def edit(rel: str, old: str, new: str) -> Edit:
    def apply(root: Path) -> None:
        path = root / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {rel}: the lab inventory changed, update this case"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")

    return apply


# --- the key


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_inventory(copy_inventory(tmp_path_factory.mktemp("lab") / "inv"))


def test_equal_inputs_give_equal_keys(lab: Any) -> None:
    site = lab.consortium.site("site-b")
    first = tenant_spec(lab, lab.towns["nakai"], site)
    again = tenant_spec(load_inventory(lab.root), load_inventory(lab.root).towns["nakai"], site)
    assert stack_key(first) == stack_key(again)
    assert len(set(stack_keys([first, again]))) == 1


def test_the_database_site_is_in_the_key(lab: Any) -> None:
    """Same town, same site rendered, same consortium: only the site serving the database differs."""
    job = tenant_spec(lab, lab.towns["nakai"], lab.consortium.site("site-a"))
    other_db = replace(job, db_site=lab.consortium.site("site-b"))
    assert stack_key(job) != stack_key(other_db)


def test_the_database_sites_network_is_in_the_key(lab: Any) -> None:
    job = tenant_spec(lab, lab.towns["nakai"], lab.consortium.site("site-b"))  # db site is site-a
    moved = replace(job, db_site=job.db_site.model_copy(update={"db_network": "127.0.9.0/24"}))
    assert stack_key(job) != stack_key(moved)


@pytest.mark.parametrize("part", ["consortium", "site", "town"])
def test_every_other_input_is_in_the_key(lab: Any, part: str) -> None:
    job = tenant_spec(lab, lab.towns["nakai"], lab.consortium.site("site-a"))
    changed = {
        "consortium": replace(job, consortium="other"),
        "site": replace(job, site=lab.consortium.site("site-b")),
        "town": replace(job, town=job.town.model_copy(update={"placement": Placement(primary="site-a", dr="site-b")})),
    }[part]
    assert stack_key(job) != stack_key(changed)


def test_a_platform_key_differs_from_a_town_key(lab: Any) -> None:
    site = lab.consortium.site("site-a")
    assert stack_key(platform_spec(lab, site)) != stack_key(tenant_spec(lab, lab.towns["nakai"], site))


# --- what the index says about an entry holds only for that entry

RESOURCES = [{"type": "kubernetes:core/v1:Namespace", "name": "n", "inputs": {"kind": "Namespace"}}]


def test_a_result_is_reused_for_the_entry_it_was_made_on(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path)
    cache.write("ab12", RESOURCES)
    cache.write_index({"ab12": {"checkov": []}})

    again = RenderCache(tmp_path)
    assert again.read("ab12") == RESOURCES
    assert again.read_index() == {"ab12": {"checkov": [], "digest": mock.ANY}}


def test_a_result_is_not_reused_for_an_entry_edited_since(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path)
    cache.write("ab12", RESOURCES)
    cache.write_index({"ab12": {"checkov": []}})
    entry = cache.path("ab12")
    entry.write_text(json.dumps([*RESOURCES, CLUSTER_ADMIN]), encoding="utf-8")

    again = RenderCache(tmp_path)
    again.read("ab12")
    assert again.read_index() == {}


def test_an_index_edited_to_match_nothing_is_not_believed(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path)
    cache.write("ab12", RESOURCES)
    cache.write_index({"ab12": {"checkov": [{"check_id": "CKV_K8S_16"}]}})
    index = json.loads((tmp_path / "index.json").read_text(encoding="utf-8"))
    index["ab12"] = {"checkov": [], "digest": "0" * 64}  # the failure removed, without knowing the digest
    (tmp_path / "index.json").write_text(json.dumps(index), encoding="utf-8")

    again = RenderCache(tmp_path)
    again.read("ab12")
    assert again.read_index() == {}


def test_results_are_returned_only_for_entries_read_by_this_process(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path)
    cache.write("ab12", RESOURCES)
    cache.write_index({"ab12": {"checkov": []}})
    assert RenderCache(tmp_path).read_index() == {}


def test_an_index_entry_without_a_cache_entry_is_dropped(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path)
    cache.write_index({"cd34": {"checkov": []}})
    assert json.loads((tmp_path / "index.json").read_text(encoding="utf-8")) == {}


# --- plans through the CLI: cached equals uncached


def plan(root: Path, state: Path, out: Path, *extra: str) -> tuple[int, Any]:
    """Exit code and what the plan says: its file's content, or the problems of a refused inventory."""
    os.environ["KUMIAI_STATE_DIR"] = str(state)
    result = kumiai_in_process("--inventory", root, "plan", "--no-validate", "--workers", "1", "--out", out, *extra)
    if result.code == 2:
        return result.code, result.stderr
    assert result.code in (0, 1), result
    doc = json.loads(out.read_text(encoding="utf-8"))
    return result.code, {k: doc[k] for k in ("consortium", "towns", "sites", "policy", "resources")}


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("KUMIAI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))  # plan() changes it; monkeypatch restores it
    monkeypatch.chdir(tmp_path)


def place_nakai_at_site_b(root: Path) -> None:
    with (root / "towns" / "nakai.yaml").open("a", encoding="utf-8") as fh:
        fh.write("placement: {primary: site-b, dr: site-a}\n")


def nothing(root: Path) -> None:
    pass


# (inventory before, the edit, the exit code after). Each edit changes what some stack renders, or whether the
# inventory is valid, through one input; the comment says which.
EDITS = {
    # site-b's stacks see site-a only as the database site of the towns it serves
    "db-site-network": (nothing, edit("consortium.yaml", "db_network: 127.0.1.0/24", "db_network: 127.0.5.0/24"), 0),
    # nakai's stack at site-a sees site-b only as nakai's database site
    "other-site-network": (
        place_nakai_at_site_b,
        edit("consortium.yaml", "db_network: 127.0.2.0/24", "db_network: 127.0.6.0/24"),
        0,
    ),
    "placement": (nothing, place_nakai_at_site_b, 0),
    "default-tier": (nothing, edit("consortium.yaml", "  tier: s\n", "  tier: m\n"), 0),
    # town files unchanged, but a system they run is no longer one of the consortium's
    "local-systems": (nothing, edit("consortium.yaml", "  - name: 電子申請\n    segments: [internet]\n", ""), 2),
    "consortium-name": (nothing, edit("consortium.yaml", "name: lab", "name: lab-two"), 0),
}


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, Any]]:
    """A state directory whose cache holds the lab inventory's stacks, and that plan (rendered once per module)."""
    tmp = tmp_path_factory.mktemp("warm")
    saved = os.environ.get("KUMIAI_STATE_DIR")
    try:
        return tmp / "state", plan(repo_with_inventory(tmp / "repo"), tmp / "state", tmp / "plan.json")
    finally:
        os.environ.pop("KUMIAI_STATE_DIR")
        if saved is not None:
            os.environ["KUMIAI_STATE_DIR"] = saved


@pytest.mark.usefixtures("isolated_env")
@pytest.mark.parametrize(("setup", "change", "code"), list(EDITS.values()), ids=list(EDITS))
def test_a_cached_replan_equals_a_plan_without_cache(
    tmp_path: Path, warm: tuple[Path, tuple[int, Any]], setup: Edit, change: Edit, code: int
) -> None:
    root = repo_with_inventory(tmp_path / "repo")  # a plan file records the inventory's commit
    if setup is nothing:
        shutil.copytree(warm[0], tmp_path / "cached")
        before = warm[1]
    else:
        setup(root)
        before = plan(root, tmp_path / "cached", tmp_path / "warm.json")

    change(root)
    cached = plan(root, tmp_path / "cached", tmp_path / "cached.json")
    fresh = plan(root, tmp_path / "fresh", tmp_path / "fresh.json", "--no-cache")

    assert cached == fresh
    assert cached[0] == code
    assert cached != before, "the edit must change the plan, or this test proves nothing"


# --- a poisoned entry


def poison(cache_dir: Path, namespace: str, resource: dict[str, Any]) -> Path:
    """Add `resource` to the cache entry of the stack that renders `namespace`, as an attacker editing it would."""
    for entry in cache_dir.glob("*/*.json"):
        resources = json.loads(entry.read_text(encoding="utf-8"))
        if any(
            r["inputs"].get("kind") == "Namespace" and r["inputs"]["metadata"]["name"] == namespace for r in resources
        ):
            entry.write_text(json.dumps([*resources, resource]), encoding="utf-8")
            return entry
    raise AssertionError(f"no cache entry renders {namespace}")


CLUSTER_ADMIN = {
    "type": "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
    "name": "nakai-lgwan-everything",
    "inputs": {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "nakai-everything", "labels": {"kumiai.io/town": "nakai"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "kumiai:lab:nakai:ops", "apiGroup": "rbac.authorization.k8s.io"}],
    },
}


@pytest.mark.usefixtures("isolated_env")
def test_a_poisoned_cache_entry_is_caught_by_plan(tmp_path: Path) -> None:
    root = copy_inventory(tmp_path / "inv")
    state = tmp_path / "state"
    os.environ["KUMIAI_STATE_DIR"] = str(state)
    first = kumiai_in_process("--inventory", root, "plan", "--no-validate", "--workers", "1", "--json")
    assert first.code == 0, first
    poison(state / "cache" / "render", "nakai-lgwan", CLUSTER_ADMIN)

    again = kumiai_in_process("--inventory", root, "plan", "--no-validate", "--workers", "1", "--json")

    assert again.code == 1, again
    summary = json.loads(again.stdout)
    assert summary["rendered"] == 0  # the entry was used, not rendered again: the rules ran on what it holds
    found = [v for v in summary["policy"]["violations"] if v["resource"] == "ClusterRoleBinding nakai-everything"]
    assert ("nakai", "rbac-scope") in {(v["town"], v["rule"]) for v in found}, summary["policy"]

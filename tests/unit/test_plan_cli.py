"""`kumiai plan` as a user runs it: exit codes 0/1/2, clean --json, the plan file, the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import KANAGAWA, LAB, clean_env, kumiai


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return clean_env(KUMIAI_STATE_DIR=str(tmp_path / "state"))


def test_kanagawa_renders_14_towns_at_both_sites_and_every_check_passes(tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "plan.json"
    manifests = tmp_path / "manifests"
    r = kumiai("--inventory", KANAGAWA, "plan", "--manifests", manifests, "--out", out, "--json", env=env)
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)  # nothing but JSON on stdout
    assert summary["ok"] and summary["policy"]["violations"] == []
    assert len(summary["towns"]) == 14 and summary["sites"] == ["primary-dc", "dr-dc"]
    assert summary["validation"]["kubernetes_validate"]["errors"] == []
    assert summary["validation"]["checkov"]["failed"] == []
    plan = json.loads(out.read_text(encoding="utf-8"))
    assert {r["site"] for r in plan["resources"]} == {"primary-dc", "dr-dc"}
    assert all(set(r) == {"site", "town", "type", "name", "inputs"} for r in plan["resources"])
    assert len({r["town"] for r in plan["resources"]} - {"_platform"}) == 14
    for site in ("primary-dc", "dr-dc"):
        assert len([d for d in (manifests / site).iterdir() if d.is_dir()]) == 15  # 14 towns and the platform
    assert sorted(p.name for p in (manifests / "dr-dc" / "hayama").glob("*.yaml")) == [
        "hayama-internet.yaml",
        "hayama-lgwan.yaml",
        "hayama-mynumber.yaml",
    ]


def test_replan_renders_only_what_changed(tmp_path: Path, env: dict[str, str]) -> None:
    inv = tmp_path / "lab"
    shutil.copytree(LAB, inv)
    first = kumiai("--inventory", inv, "plan", "--no-validate", "--workers", "1", "--json", env=env)
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout)["rendered"] == 8  # 3 towns and the platform, at 2 sites
    town = inv / "towns" / "nakai.yaml"
    town.write_text(town.read_text(encoding="utf-8").replace("tier: s", "tier: m"), encoding="utf-8")
    again = kumiai("--inventory", inv, "plan", "--no-validate", "--json", env=env)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["rendered"] == 2  # nakai at both sites


def test_a_violation_exits_1_and_names_town_resource_and_rule(tmp_path: Path, env: dict[str, str]) -> None:
    # A consortium whose database network is the whole internet: every town's allow-db policy breaks isolation.
    inv = tmp_path / "lab"
    shutil.copytree(LAB, inv)
    conf = inv / "consortium.yaml"
    conf.write_text(conf.read_text(encoding="utf-8").replace("127.0.1.0/24", "0.0.0.0/0"), encoding="utf-8")
    r = kumiai("--inventory", inv, "plan", "--no-validate", "--workers", "1", "--json", env=env)
    assert r.code == 1, r.stderr
    violations = json.loads(r.stdout)["policy"]["violations"]
    assert violations and {v["rule"] for v in violations} == {"same-town-segment"}
    assert {v["town"] for v in violations} == {"kiyokawa", "manazuru", "nakai"}
    assert all(v["resource"].startswith("NetworkPolicy ") and v["resource"].endswith("/allow-db") for v in violations)
    human = kumiai("--inventory", inv, "plan", "--no-validate", env=env)
    assert human.code == 1
    assert "nakai @ site-a: NetworkPolicy nakai-mynumber/allow-db: [same-town-segment]" in human.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [(("--town", "atlantis"), "--town"), (("--site", "site-z"), "--site")],
)
def test_unknown_town_or_site_is_bad_input(env: dict[str, str], args: tuple[str, str], named: str) -> None:
    r = kumiai("--inventory", LAB, "plan", "--no-validate", "--json", *args, env=env)
    assert r.code == 2
    assert r.stdout == ""
    assert named in r.stderr and args[1] in r.stderr


def test_bad_inventory_is_bad_input(tmp_path: Path, env: dict[str, str]) -> None:
    inv = tmp_path / "lab"
    shutil.copytree(LAB, inv)
    (inv / "towns" / "nakai.yaml").write_text("id: nakai\ncode: '143610'\n", encoding="utf-8")
    r = kumiai("--inventory", inv, "plan", "--json", env=env)
    assert r.code == 2
    assert r.stdout == ""
    assert "nakai.yaml" in r.stderr


def test_one_town_one_site(tmp_path: Path, env: dict[str, str]) -> None:
    r = kumiai(
        "--inventory",
        LAB,
        "plan",
        "--town",
        "nakai",
        "--site",
        "site-b",
        "--manifests",
        tmp_path / "m",
        "--json",
        env=env,
    )
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["towns"] == ["nakai"] and data["sites"] == ["site-b"] and data["stacks"] == 1
    assert [p.name for p in (tmp_path / "m").iterdir() if p.is_dir()] == ["site-b"]


def _cache_entry(state: Path, site: str, town: str) -> Path:
    entries = [
        p
        for p in (state / "cache" / "render").glob("*/*.json")
        if (data := json.loads(p.read_text(encoding="utf-8"))) and data[0]["site"] == site and data[0]["town"] == town
    ]
    assert len(entries) == 1, entries
    return entries[0]


def test_a_poisoned_cache_entry_is_caught_not_trusted(tmp_path: Path, env: dict[str, str]) -> None:
    first = kumiai("--inventory", LAB, "plan", "--no-validate", "--workers", "1", "--json", env=env)
    assert first.code == 0, first.stderr
    entry = _cache_entry(tmp_path / "state", "site-a", "nakai")
    resources = json.loads(entry.read_text(encoding="utf-8"))
    resources.append(
        {
            "site": "site-a",
            "town": "nakai",
            "type": "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
            "name": "nakai-root",
            "inputs": {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "nakai-root", "labels": {"kumiai.io/town": "nakai"}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "Group", "name": "system:authenticated"}],
            },
        }
    )
    entry.write_text(json.dumps(resources), encoding="utf-8")
    # The index still says this stack has no violations: it is not asked.
    again = kumiai("--inventory", LAB, "plan", "--no-validate", "--json", env=env)
    assert again.code == 1, again.stderr
    data = json.loads(again.stdout)
    assert data["rendered"] == 0  # served from the cache, and checked all the same
    caught = [v for v in data["policy"]["violations"] if "nakai-root" in v["resource"]]
    assert caught and {v["rule"] for v in caught} >= {"rbac-scope"} and {v["site"] for v in caught} == {"site-a"}


def test_a_cache_entry_that_is_not_json_is_rendered_again(tmp_path: Path, env: dict[str, str]) -> None:
    assert kumiai("--inventory", LAB, "plan", "--no-validate", "--workers", "1", env=env).code == 0
    _cache_entry(tmp_path / "state", "site-b", "manazuru").write_text("[{", encoding="utf-8")
    again = kumiai("--inventory", LAB, "plan", "--no-validate", "--json", env=env)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["rendered"] == 1


def test_a_cached_plan_equals_a_plan_without_cache(tmp_path: Path, env: dict[str, str]) -> None:
    cold = tmp_path / "cold.json"
    assert kumiai("--inventory", LAB, "plan", "--no-validate", "--no-cache", "--out", cold, env=env).code == 0
    warm = tmp_path / "warm.json"
    warmed = kumiai("--inventory", LAB, "plan", "--no-validate", "--out", warm, "--json", env=env)
    assert warmed.code == 0 and json.loads(warmed.stdout)["rendered"] == 0
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in (cold, warm))
    assert a["resources_hash"] == b["resources_hash"] and a["policy"] == b["policy"]

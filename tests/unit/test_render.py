"""The tenant and platform components, rendered under Pulumi's mocks (no engine, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kumiai import render
from kumiai.inventory import Inventory, load_inventory
from kumiai.models import Placement
from kumiai_stacks import naming
from kumiai_stacks.spec import platform_spec, tenant_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kanagawa() -> Inventory:
    return load_inventory(ROOT / "inventories" / "kanagawa")


@pytest.fixture(scope="module")
def rendered(kanagawa: Inventory) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for site in kanagawa.consortium.sites:
        jobs: list[render.Job] = [platform_spec(kanagawa, site)]
        jobs += [tenant_spec(kanagawa, t, site) for t in kanagawa.towns.values()]
        out.update(render.render_batch(jobs))
    return out


def objects(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r["inputs"] for r in resources if r["inputs"].get("kind") == kind]


def test_every_town_at_every_site(kanagawa: Inventory, rendered: dict[tuple[str, str], Any]) -> None:
    assert len(kanagawa.towns) == 14
    for site in kanagawa.consortium.sites:
        assert (site.id, render.PLATFORM) in rendered
        for town in kanagawa.towns.values():
            resources = rendered[(site.id, town.id)]
            namespaces = objects(resources, "Namespace")
            assert sorted(n["metadata"]["name"] for n in namespaces) == sorted(
                naming.namespace_name(town.id, s) for s in town.segments
            )
            assert resources[0]["type"] == "kumiai:tenant:Town"


def test_namespace_labels_and_pod_security(kanagawa: Inventory, rendered: dict[tuple[str, str], Any]) -> None:
    ns = next(n for n in objects(rendered[("dr-dc", "hayama")], "Namespace") if n["metadata"]["name"] == "hayama-lgwan")
    labels = ns["metadata"]["labels"]
    assert labels[naming.LABEL_TOWN] == "hayama"
    assert labels[naming.LABEL_SEGMENT] == "lgwan"
    assert labels[naming.LABEL_SITE] == "dr-dc"
    assert labels[naming.LABEL_CODE] == "143014"
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "v1.30"


# Written out here, not read from kumiai.models: a changed or broken table must fail this test.
QUOTA_S = {
    "requests.cpu": "2",
    "requests.memory": "4Gi",
    "limits.cpu": "4",
    "limits.memory": "8Gi",
    "pods": "20",
    "persistentvolumeclaims": "10",
    "requests.storage": "100Gi",
}
QUOTA_M = {
    "requests.cpu": "4",
    "requests.memory": "8Gi",
    "limits.cpu": "8",
    "limits.memory": "16Gi",
    "pods": "40",
    "persistentvolumeclaims": "20",
    "requests.storage": "250Gi",
}
QUOTA_L = {
    "requests.cpu": "8",
    "requests.memory": "16Gi",
    "limits.cpu": "16",
    "limits.memory": "32Gi",
    "pods": "80",
    "persistentvolumeclaims": "40",
    "requests.storage": "500Gi",
}


@pytest.mark.parametrize(
    ("town", "tier", "hard"),
    [
        ("kiyokawa", "s", QUOTA_S),
        ("oi", "m", QUOTA_M),
        ("hakone", "s", QUOTA_S),
        ("hayama", "m", QUOTA_M),
        ("samukawa", "l", QUOTA_L),
    ],
)
def test_quota_follows_the_tier(
    kanagawa: Inventory, rendered: dict[tuple[str, str], Any], town: str, tier: str, hard: dict[str, str]
) -> None:
    assert kanagawa.towns[town].tier == tier  # the inventory still has this example
    for site in ("primary-dc", "dr-dc"):
        quotas = objects(rendered[(site, town)], "ResourceQuota")
        assert len(quotas) == len(kanagawa.towns[town].segments)
        assert all(q["spec"]["hard"] == hard for q in quotas)


def test_limits_follow_the_tier(rendered: dict[tuple[str, str], Any]) -> None:
    expected = {
        "kiyokawa": (
            {"cpu": "500m", "memory": "512Mi"},
            {"cpu": "100m", "memory": "128Mi"},
            {"cpu": "2", "memory": "4Gi"},
        ),
        "oi": ({"cpu": "1", "memory": "1Gi"}, {"cpu": "200m", "memory": "256Mi"}, {"cpu": "4", "memory": "8Gi"}),
        "samukawa": ({"cpu": "1", "memory": "2Gi"}, {"cpu": "250m", "memory": "512Mi"}, {"cpu": "8", "memory": "16Gi"}),
    }
    for town, (default, request, most) in expected.items():
        for lr in objects(rendered[("primary-dc", town)], "LimitRange"):
            (container,) = [item for item in lr["spec"]["limits"] if item["type"] == "Container"]
            assert (container["default"], container["defaultRequest"], container["max"]) == (default, request, most)


def test_default_service_account_is_patched_without_token(rendered: dict[tuple[str, str], Any]) -> None:
    resources = rendered[("primary-dc", "nakai")]
    patches = [r for r in resources if r["type"] == "kubernetes:core/v1:ServiceAccountPatch"]
    assert len(patches) == 3
    assert all(p["inputs"]["metadata"]["name"] == "default" for p in patches)
    assert all(p["inputs"]["automountServiceAccountToken"] is False for p in patches)


def test_db_service_points_at_the_current_primary(kanagawa: Inventory) -> None:
    town = kanagawa.towns["oiso"]
    dr = kanagawa.consortium.site("dr-dc")
    normal = render.render_batch([tenant_spec(kanagawa, town, dr)])[("dr-dc", "oiso")]
    failed_over_town = town.model_copy(update={"placement": Placement(primary="dr-dc", dr="primary-dc")})
    failed_over = render.render_batch([tenant_spec(kanagawa, failed_over_town, dr)])[("dr-dc", "oiso")]

    def db(resources: list[dict[str, Any]]) -> set[str]:
        return {s["spec"]["externalName"] for s in objects(resources, "Service") if s["metadata"]["name"] == "db"}

    assert db(normal) == {"oiso.db.primary-dc.kanagawa.internal"}
    assert db(failed_over) == {"oiso.db.dr-dc.kanagawa.internal"}
    cidrs = {
        peer["ipBlock"]["cidr"]
        for p in objects(failed_over, "NetworkPolicy")
        for rule in p["spec"].get("egress", [])
        for peer in rule["to"]
        if "ipBlock" in peer
    }
    assert cidrs == {"10.20.0.0/16"}


def test_rbac_is_namespaced_and_explicit(rendered: dict[tuple[str, str], Any]) -> None:
    resources = rendered[("primary-dc", "kiyokawa")]
    assert not objects(resources, "ClusterRole") and not objects(resources, "ClusterRoleBinding")
    for binding in objects(resources, "RoleBinding"):
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ops"}
        assert [s["name"] for s in binding["subjects"]] == ["kumiai:kanagawa:kiyokawa:ops"]
    for role in objects(resources, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_platform_is_small_and_locked_down(rendered: dict[tuple[str, str], Any]) -> None:
    platform = rendered[("primary-dc", render.PLATFORM)]
    kinds = sorted(r["inputs"].get("kind", r["type"]) for r in platform)
    assert kinds == ["LimitRange", "Namespace", "NetworkPolicy", "ResourceQuota", "kumiai:platform:Site"]


def test_fast_runtime_registers_exactly_what_the_stock_runtime_does(kanagawa: Inventory) -> None:
    site = kanagawa.consortium.site("primary-dc")
    jobs: list[render.Job] = [platform_spec(kanagawa, site)]
    jobs += [tenant_spec(kanagawa, kanagawa.towns[t], site) for t in ("hayama", "kiyokawa")]
    stock = render.render_straightforward(jobs)
    fast = render.render_batch(jobs)
    assert stock == fast


def test_secrets_are_masked() -> None:
    import pulumi
    import pulumi_kubernetes as k8s

    def program() -> None:
        k8s.core.v1.Secret(
            "s",
            metadata={"name": "s", "namespace": "x"},
            string_data={"password": pulumi.Output.secret("hunter2"), "user": "app"},
        )

    recorded = render._run(program, "site", "p", "s")
    (secret,) = recorded
    # Pulumi marks the whole map secret once one value in it is: the plan shows it masked, never the value.
    assert secret["inputs"]["stringData"] == render.SECRET
    assert secret["inputs"]["metadata"] == {"name": "s", "namespace": "x"}
    assert "hunter2" not in repr(recorded)


@pytest.mark.parametrize(
    ("project", "config", "namespaces"),
    [
        ("tenant", {"kumiai:town": "nakai", "kumiai:site": "site-b"}, {"nakai-mynumber", "nakai-lgwan"}),
        ("platform", {"kumiai:site": "site-a"}, {"kumiai-system"}),
    ],
)
def test_pulumi_projects_run_the_same_programs(project: str, config: dict[str, str], namespaces: set[str]) -> None:
    """stacks/<project>/__main__.py as the engine would run it, with the stack config the Automation API sets."""
    import runpy

    import pulumi

    pulumi.runtime.set_all_config({"kumiai:inventory": str(ROOT / "inventories" / "lab"), **config})
    try:
        recorded = render._run(
            lambda: runpy.run_path(str(ROOT / "stacks" / project / "__main__.py")), "x", f"kumiai-{project}", "s"
        )
    finally:
        pulumi.runtime.set_all_config({})
    assert {r["inputs"]["metadata"]["name"] for r in recorded if r["inputs"].get("kind") == "Namespace"} == namespaces


def test_numbers_come_out_as_kubernetes_writes_them(rendered: dict[tuple[str, str], Any]) -> None:
    # The mock monitor passes numbers as floats; a manifest must say port 5432, not 5432.0.
    def numbers(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [n for v in value.values() for n in numbers(v)]
        if isinstance(value, list):
            return [n for v in value for n in numbers(v)]
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []

    found = [n for rs in rendered.values() for r in rs for n in numbers(r["inputs"])]
    assert 5432 in found and 53 in found
    assert not [n for n in found if isinstance(n, float)]


def test_outstanding_outputs_behave_as_the_runtime_deque() -> None:
    from collections import deque

    ops: list[tuple[str, Any]] = [("append", "a"), ("append", "b"), ("append", "a"), ("remove", "a"), ("remove", "a")]
    ops += [("append", "c"), ("popleft", None), ("append", "e"), ("popleft", None), ("clear", None), ("append", "d")]
    stock: deque[str] = deque()
    fast = render._Outstanding()
    for op, arg in ops:
        args = () if arg is None else (arg,)
        got = getattr(fast, op)(*args)
        want = getattr(stock, op)(*args)
        assert got == want, op
        assert len(fast) == len(stock)
    for container in (fast, deque[str]()):
        container.clear()
        with pytest.raises(IndexError):
            container.popleft()
        with pytest.raises(ValueError):
            container.remove("x")


def test_schema_errors_are_kubernetes_validates_own(rendered: dict[tuple[str, str], Any]) -> None:
    import copy

    import kubernetes_validate as kv

    from kumiai import manifests
    from kumiai.validate import K8S_VERSION, schema_errors

    objs = [manifests.manifest(r["inputs"]) for r in rendered[("primary-dc", "hayama")] if "kind" in r["inputs"]]
    broken = copy.deepcopy(objs)
    broken[0]["metadata"]["labels"] = {"x": 1}
    broken[1]["spec"] = {"unknownField": True}
    broken[2]["kind"] = "NoSuchKind"
    broken[3]["metadata"]["name"] = 5

    def library(obj: dict[str, Any]) -> str | None:
        name = f"{obj.get('kind')} {obj.get('metadata', {}).get('namespace', '')}/{obj.get('metadata', {}).get('name')}"
        try:
            kv.validate(obj, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            return f"{name}: {'.'.join(str(p) for p in exc.path) or '(object)'}: {exc.message}"
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as exc:
            return f"{name}: {exc}"
        return None

    assert schema_errors(objs) == []
    expected = [m for m in map(library, broken) if m is not None]
    assert len(expected) == 4
    assert schema_errors(broken) == expected

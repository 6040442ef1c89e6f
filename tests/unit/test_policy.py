"""The isolation rules: rendered stacks pass, and each rule, broken on purpose, is caught and named."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
from pulumi_policy import PolicyResource, PolicyResourceOptions, StackValidationArgs

from kumiai import render
from kumiai.inventory import Inventory, load_inventory
from kumiai_stacks import policypack, rules
from kumiai_stacks.spec import TenantSpec, tenant_spec
from kumiai_stacks.tenant import TownTenant

ROOT = Path(__file__).resolve().parents[2]
Resources = list[dict[str, Any]]


@pytest.fixture(scope="module")
def kanagawa() -> Inventory:
    return load_inventory(ROOT / "inventories" / "kanagawa")


@pytest.fixture(scope="module")
def site_a(kanagawa: Inventory) -> dict[tuple[str, str], Resources]:
    site = kanagawa.consortium.site("primary-dc")
    return render.render_batch([tenant_spec(kanagawa, kanagawa.towns[t], site) for t in ("hayama", "nakai")])


@pytest.fixture
def hayama(site_a: dict[tuple[str, str], Resources]) -> Resources:
    return copy.deepcopy(site_a[("primary-dc", "hayama")])


@pytest.fixture
def both(site_a: dict[tuple[str, str], Resources]) -> Resources:
    return copy.deepcopy(site_a[("primary-dc", "hayama")] + site_a[("primary-dc", "nakai")])


def find(resources: Resources, kind: str, namespace: str | None = None, name: str | None = None) -> dict[str, Any]:
    for r in resources:
        obj = r["inputs"]
        meta = obj.get("metadata", {})
        in_ns = namespace is None or meta.get("namespace", meta.get("name")) == namespace
        if obj.get("kind") == kind and in_ns and (name is None or meta.get("name") == name):
            return obj
    raise AssertionError(f"no {kind} {namespace}/{name}")


def drop(resources: Resources, kind: str, namespace: str, name: str) -> Resources:
    obj = find(resources, kind, namespace, name)
    return [r for r in resources if r["inputs"] is not obj]


def caught(resources: Resources, rule: str, town: str = "hayama") -> list[rules.Violation]:
    found = [v for v in rules.check(resources) if v.rule == rule]
    assert found, f"rule {rule} did not fire"
    assert all(v.town == town for v in found), found
    assert all(v.resource and v.message for v in found)
    return found


def test_rendered_stacks_pass_every_rule(both: Resources) -> None:
    assert rules.check(both) == []


@pytest.mark.parametrize("mode", ["enforce", "audit", "warn"])
def test_pod_security_level(hayama: Resources, mode: str) -> None:
    find(hayama, "Namespace", "hayama-mynumber")["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] = (
        "baseline"
    )
    (v,) = caught(hayama, "pod-security")
    assert v.resource == "Namespace hayama-mynumber" and mode in v.message


def test_pod_security_version_pinned(hayama: Resources) -> None:
    find(hayama, "Namespace", "hayama-lgwan")["metadata"]["labels"]["pod-security.kubernetes.io/enforce-version"] = (
        "latest"
    )
    caught(hayama, "pod-security")


def test_namespace_labels(hayama: Resources) -> None:
    find(hayama, "Namespace", "hayama-lgwan")["metadata"]["labels"]["kumiai.io/segment"] = "internet"
    caught(hayama, "namespace-labels")


def test_default_deny_missing(hayama: Resources) -> None:
    broken = drop(hayama, "NetworkPolicy", "hayama-internet", "default-deny")
    (v,) = caught(broken, "default-deny")
    assert v.resource == "Namespace hayama-internet"


def test_default_deny_that_allows_is_not_a_deny(hayama: Resources) -> None:
    deny = find(hayama, "NetworkPolicy", "hayama-internet", "default-deny")
    deny["spec"]["policyTypes"] = ["Ingress"]
    caught(hayama, "default-deny")


def test_ingress_from_another_segment(hayama: Resources) -> None:
    pol = find(hayama, "NetworkPolicy", "hayama-mynumber", "allow-same-segment")
    pol["spec"]["ingress"][0]["from"].append(
        {"namespaceSelector": {"matchLabels": {"kumiai.io/town": "hayama", "kumiai.io/segment": "internet"}}}
    )
    (v,) = caught(hayama, "same-town-segment")
    assert v.resource == "NetworkPolicy hayama-mynumber/allow-same-segment"


def test_egress_to_another_town(both: Resources) -> None:
    pol = find(both, "NetworkPolicy", "hayama-lgwan", "allow-same-segment")
    pol["spec"]["egress"][0]["to"] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nakai-lgwan"}}}
    ]
    caught(both, "same-town-segment")


def test_ingress_from_everywhere(hayama: Resources) -> None:
    pol = find(hayama, "NetworkPolicy", "hayama-lgwan", "allow-same-segment")
    pol["spec"]["ingress"] = [{}]
    caught(hayama, "same-town-segment")


def test_egress_to_any_namespace(hayama: Resources) -> None:
    pol = find(hayama, "NetworkPolicy", "hayama-lgwan", "allow-same-segment")
    pol["spec"]["egress"][0]["to"] = [{"namespaceSelector": {}, "podSelector": {}}]
    caught(hayama, "same-town-segment")


def test_egress_to_the_internet(hayama: Resources) -> None:
    pol = find(hayama, "NetworkPolicy", "hayama-internet", "allow-db")
    pol["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] = "0.0.0.0/0"
    caught(hayama, "same-town-segment")


def test_database_egress_on_other_ports(hayama: Resources) -> None:
    pol = find(hayama, "NetworkPolicy", "hayama-internet", "allow-db")
    del pol["spec"]["egress"][0]["ports"]
    caught(hayama, "same-town-segment")


def test_dns_egress_on_other_ports(hayama: Resources) -> None:
    pol = find(hayama, "NetworkPolicy", "hayama-internet", "allow-dns")
    pol["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 443})
    caught(hayama, "same-town-segment")


@pytest.mark.parametrize("kind", ["ResourceQuota", "LimitRange"])
def test_quota_and_limits_missing(hayama: Resources, kind: str) -> None:
    name = "quota" if kind == "ResourceQuota" else "limits"
    (v,) = caught(drop(hayama, kind, "hayama-lgwan", name), "quota")
    assert v.resource == "Namespace hayama-lgwan"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("verbs", "*"),
        ("resources", "*"),
        ("apiGroups", "*"),
        ("verbs", "bind"),
        ("verbs", "escalate"),
        ("verbs", "impersonate"),
    ],
)
def test_role_wildcards_and_escalation(hayama: Resources, field: str, value: str) -> None:
    find(hayama, "Role", "hayama-mynumber", "ops")["rules"][0][field].append(value)
    (v,) = caught(hayama, "rbac-scope")
    assert v.resource == "Role hayama-mynumber/ops"


def test_role_granting_rbac_objects(hayama: Resources) -> None:
    role = find(hayama, "Role", "hayama-mynumber", "ops")
    role["rules"].append(
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]}
    )
    caught(hayama, "rbac-scope")


def test_cluster_scoped_rbac(hayama: Resources) -> None:
    labels = {"kumiai.io/town": "hayama"}
    hayama.append(
        {
            "type": "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
            "name": "x",
            "inputs": {"kind": "ClusterRoleBinding", "metadata": {"name": "hayama-admin", "labels": labels}},
        }
    )
    caught(hayama, "rbac-scope")


def test_binding_to_a_cluster_role(hayama: Resources) -> None:
    find(hayama, "RoleBinding", "hayama-lgwan", "ops")["roleRef"]["kind"] = "ClusterRole"
    caught(hayama, "rbac-scope")


def test_binding_another_towns_group(hayama: Resources) -> None:
    find(hayama, "RoleBinding", "hayama-lgwan", "ops")["subjects"][0]["name"] = "kumiai:kanagawa:nakai:ops"
    caught(hayama, "rbac-scope")


def test_role_in_another_towns_namespace(both: Resources) -> None:
    role = find(both, "Role", "hayama-lgwan", "ops")
    role["metadata"]["namespace"] = "nakai-lgwan"
    found = caught(both, "rbac-scope")
    assert any("nakai-lgwan" in v.message for v in found)


def test_service_account_token(hayama: Resources) -> None:
    find(hayama, "ServiceAccount", "hayama-lgwan", "default")["automountServiceAccountToken"] = True
    (v,) = caught(hayama, "service-account")
    assert v.resource == "Namespace hayama-lgwan"


def test_object_in_another_towns_namespace(both: Resources) -> None:
    find(both, "Service", "hayama-lgwan", "db")["metadata"]["namespace"] = "nakai-lgwan"
    found = caught(both, "town-boundary")
    assert found[0].resource == "Service nakai-lgwan/db"


def test_one_namespace_claimed_by_two_towns() -> None:
    found = rules.namespace_owners([("a", "hayama", "shared-lgwan"), ("a", "nakai", "shared-lgwan"), ("b", "oi", "x")])
    assert {(v.town, v.rule) for v in found} == {("hayama", "town-boundary"), ("nakai", "town-boundary")}


class LeakyTenant(TownTenant):
    """A deliberately broken component: adds a policy letting anything in from anywhere."""

    def __init__(self, name: str, spec: TenantSpec) -> None:
        super().__init__(name, spec)
        ns = next(iter(self.namespaces.values()))
        k8s.networking.v1.NetworkPolicy(
            f"{ns}-leak",
            metadata={"name": "leak", "namespace": ns, "labels": {"kumiai.io/town": spec.town.id}},
            spec={"pod_selector": {}, "policy_types": ["Ingress"], "ingress": [{}]},
            opts=pulumi.ResourceOptions(parent=self),
        )


def test_a_broken_component_is_caught(kanagawa: Inventory) -> None:
    spec = tenant_spec(kanagawa, kanagawa.towns["oi"], kanagawa.consortium.site("dr-dc"))
    recorded = render._run(lambda: LeakyTenant("oi", spec), "dr-dc", "kumiai-tenant", "oi.dr-dc")
    found = caught(recorded, "same-town-segment", town="oi")
    assert found[0].resource == "NetworkPolicy oi-mynumber/leak"


def _policy_args(resources: Resources) -> StackValidationArgs:
    opts = PolicyResourceOptions(False, [], None, [], None, [])  # type: ignore[arg-type]
    return StackValidationArgs(
        [
            PolicyResource(r["type"], r["inputs"], f"urn:{r['name']}", r["name"], opts, None, None, [], {})
            for r in resources
        ]
    )


def test_policy_pack_runs_the_same_rules(hayama: Resources) -> None:
    policies = {p.name: p for p in policypack.policies()}
    assert set(policies) == {f"kumiai-{r.name}" for r in rules.RULES}

    def reported(resources: Resources) -> list[str]:
        messages: list[str] = []
        report: Callable[[str, str | None], None] = lambda m, _urn=None: messages.append(m)  # noqa: E731
        for rule in rules.RULES:
            policypack.validator(rule)(_policy_args(resources), report)
        return messages

    assert reported(hayama) == []
    find(hayama, "Role", "hayama-mynumber", "ops")["rules"][0]["verbs"].append("impersonate")
    messages = reported(hayama)
    assert len(messages) == 1 and "hayama" in messages[0] and "rbac-scope" in messages[0]


def test_service_account_without_the_field_automounts(hayama: Resources) -> None:
    """Kubernetes mounts the token unless the field is false: a missing field is no better than true."""
    del find(hayama, "ServiceAccount", "hayama-lgwan", "default")["automountServiceAccountToken"]
    (v,) = caught(hayama, "service-account")
    assert v.resource == "Namespace hayama-lgwan"


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/15", "10.0.0.0/15"])
def test_database_egress_wider_than_a_site_network(hayama: Resources, cidr: str) -> None:
    """Private but wider than a /16: it reaches other towns' databases and every other private host."""
    find(hayama, "NetworkPolicy", "hayama-internet", "allow-db")["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] = cidr
    (v,) = caught(hayama, "same-town-segment")
    assert v.resource == "NetworkPolicy hayama-internet/allow-db"


def test_database_egress_to_a_site_network_is_allowed(hayama: Resources) -> None:
    """The positive control of the test above: a /16 or narrower private network is a database network."""
    for cidr in ("10.20.0.0/16", "10.20.30.0/24"):
        find(hayama, "NetworkPolicy", "hayama-internet", "allow-db")["spec"]["egress"][0]["to"][0]["ipBlock"][
            "cidr"
        ] = cidr
        assert rules.check(hayama) == []

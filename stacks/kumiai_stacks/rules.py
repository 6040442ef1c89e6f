"""The isolation rules, as code over rendered resources. Pure: no Pulumi, no files.

One implementation serves both callers: `kumiai plan` checks the resources it rendered under mocks, and the
PolicyPack (stacks/policy) checks the resources the engine is about to create. A resource here is a mapping with
"type" (the Pulumi type token), "name" (the logical name) and "inputs" (the Kubernetes object as the provider
receives it: apiVersion, kind, metadata, spec, camelCase keys).

Every violation names the town, the resource and the rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kumiai.catalogue import Segment
from kumiai_stacks import naming

Resource = Mapping[str, Any]

NO_TOWN = "-"
RBAC_GROUP = "rbac.authorization.k8s.io"
PINNED_VERSION = re.compile(r"^v1\.[0-9]+$")
SEGMENTS = tuple(s.value for s in Segment)
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True, order=True)
class Violation:
    town: str
    resource: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.town}: {self.resource}: [{self.rule}] {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"town": self.town, "resource": self.resource, "rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[View], list[Violation]]


class View:
    """The resources of one stack (or several), indexed the way the rules need them."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.objects: list[tuple[str, str, dict[str, Any]]] = []
        for r in resources:
            inputs = r.get("inputs") or {}
            if isinstance(inputs, Mapping) and "kind" in inputs:
                self.objects.append((str(r.get("type", "")), str(r.get("name", "")), dict(inputs)))
        # namespace name -> its labels, for every Namespace in the set
        self.namespaces: dict[str, dict[str, str]] = {
            _meta(o).get("name", ""): dict(_meta(o).get("labels") or {}) for o in self.of_kind("Namespace")
        }

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for _t, _n, o in self.objects if o.get("kind") == kind]

    def in_namespace(self, namespace: str, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.of_kind(kind) if _meta(o).get("namespace") == namespace]

    def town_namespaces(self) -> dict[str, str]:
        """Namespace -> town, for namespaces that carry a town label."""
        return {ns: lab[naming.LABEL_TOWN] for ns, lab in self.namespaces.items() if lab.get(naming.LABEL_TOWN)}

    def town_of(self, obj: Mapping[str, Any]) -> str:
        meta = _meta(obj)
        labels = meta.get("labels") or {}
        if labels.get(naming.LABEL_TOWN):
            return str(labels[naming.LABEL_TOWN])
        ns = meta.get("namespace") if obj.get("kind") != "Namespace" else meta.get("name")
        return str((self.namespaces.get(str(ns)) or {}).get(naming.LABEL_TOWN) or NO_TOWN)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def describe(obj: Mapping[str, Any]) -> str:
    """e.g. NetworkPolicy hayama-mynumber/allow-dns."""
    meta = _meta(obj)
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind', '?')} {where}{meta.get('name', '?')}"


def _v(view: View, obj: Mapping[str, Any], rule: str, message: str) -> Violation:
    return Violation(view.town_of(obj), describe(obj), rule, message)


def _empty_selector(selector: Any) -> bool:
    return isinstance(selector, Mapping) and not selector.get("matchLabels") and not selector.get("matchExpressions")


# --- rules -------------------------------------------------------------------------------------------------------


def namespace_labels(view: View) -> list[Violation]:
    out: list[Violation] = []
    for obj in view.of_kind("Namespace"):
        name = str(_meta(obj).get("name", ""))
        labels = _meta(obj).get("labels") or {}
        for mode in naming.PSS_MODES:
            level = labels.get(f"pod-security.kubernetes.io/{mode}")
            version = labels.get(f"pod-security.kubernetes.io/{mode}-version")
            if level != naming.PSS_LEVEL:
                out.append(_v(view, obj, "pod-security", f"{mode} must be {naming.PSS_LEVEL!r}, is {level!r}"))
            if not isinstance(version, str) or not PINNED_VERSION.match(version):
                out.append(_v(view, obj, "pod-security", f"{mode}-version must be pinned (v1.N), is {version!r}"))
        if name == naming.SYSTEM_NAMESPACE:
            continue
        town, segment = labels.get(naming.LABEL_TOWN), labels.get(naming.LABEL_SEGMENT)
        if not town or not segment:
            out.append(_v(view, obj, "namespace-labels", "a tenant namespace carries town and segment labels"))
        elif segment not in SEGMENTS:
            out.append(_v(view, obj, "namespace-labels", f"segment {segment!r} is not one of {', '.join(SEGMENTS)}"))
        elif name != naming.namespace_name(town, segment):
            out.append(_v(view, obj, "namespace-labels", f"name must be <town>-<segment>, i.e. {town}-{segment}"))
        if name in RESERVED_NAMESPACES:
            out.append(_v(view, obj, "namespace-labels", f"{name} is a system namespace, not a tenant's"))
    return out


def default_deny(view: View) -> list[Violation]:
    out: list[Violation] = []
    for ns, labels in view.namespaces.items():
        denies = [
            p
            for p in view.in_namespace(ns, "NetworkPolicy")
            if _empty_selector((p.get("spec") or {}).get("podSelector"))
            and {"Ingress", "Egress"} <= set((p.get("spec") or {}).get("policyTypes") or [])
            and not (p.get("spec") or {}).get("ingress")
            and not (p.get("spec") or {}).get("egress")
        ]
        if not denies:
            obj = {"kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
            out.append(_v(view, obj, "default-deny", "no NetworkPolicy denying all ingress and egress"))
    return out


def _same_segment_peer(view: View, ns: str, peer: Mapping[str, Any]) -> bool:
    if peer.get("ipBlock"):
        return False
    selector = peer.get("namespaceSelector")
    if selector is None:
        return True  # only a pod selector: pods of this very namespace
    if not isinstance(selector, Mapping) or selector.get("matchExpressions"):
        return False
    match = selector.get("matchLabels") or {}
    if match == {"kubernetes.io/metadata.name": ns}:
        return True
    own = view.namespaces.get(ns) or {}
    wanted = {naming.LABEL_TOWN: own.get(naming.LABEL_TOWN), naming.LABEL_SEGMENT: own.get(naming.LABEL_SEGMENT)}
    return bool(own) and all(wanted.values()) and dict(match) == wanted


def _ports(rule: Mapping[str, Any]) -> set[tuple[str, Any]]:
    return {(str(p.get("protocol", "TCP")), p.get("port")) for p in rule.get("ports") or []}


def _dns_peer(peer: Mapping[str, Any]) -> bool:
    ns_sel = peer.get("namespaceSelector") or {}
    pod_sel = peer.get("podSelector") or {}
    return (
        not peer.get("ipBlock")
        and not ns_sel.get("matchExpressions")
        and not pod_sel.get("matchExpressions")
        and ns_sel.get("matchLabels") == {"kubernetes.io/metadata.name": naming.DNS_NAMESPACE}
        and pod_sel.get("matchLabels") == naming.DNS_POD_LABELS
    )


def _db_peer(peer: Mapping[str, Any]) -> bool:
    block = peer.get("ipBlock")
    if not isinstance(block, Mapping) or peer.get("namespaceSelector") or peer.get("podSelector"):
        return False
    try:
        net = ipaddress.ip_network(str(block.get("cidr")), strict=False)
    except ValueError:
        return False
    # A database network is private and not wider than a /16; the open internet never is.
    return net.is_private and net.prefixlen >= 16


def network_peers(view: View) -> list[Violation]:
    """Traffic only within the same town and segment; egress also to cluster DNS and the town's database port."""
    out: list[Violation] = []
    for ns in view.namespaces:
        for pol in view.in_namespace(ns, "NetworkPolicy"):
            spec = pol.get("spec") or {}
            for rule in spec.get("ingress") or []:
                peers = rule.get("from") or []
                if not peers:
                    out.append(_v(view, pol, "same-town-segment", "ingress rule without 'from' admits every source"))
                for peer in peers:
                    if not _same_segment_peer(view, ns, peer):
                        out.append(_v(view, pol, "same-town-segment", f"ingress from outside {ns}: {dict(peer)}"))
            for rule in spec.get("egress") or []:
                peers = rule.get("to") or []
                if not peers:
                    out.append(_v(view, pol, "same-town-segment", "egress rule without 'to' reaches everything"))
                ports = _ports(rule)
                for peer in peers:
                    if _same_segment_peer(view, ns, peer):
                        continue
                    if _dns_peer(peer):
                        if not ports or {p for _proto, p in ports} != {naming.DNS_PORT}:
                            out.append(_v(view, pol, "same-town-segment", "DNS egress must be limited to port 53"))
                        continue
                    if _db_peer(peer):
                        if ports != {("TCP", naming.DB_PORT)}:
                            out.append(_v(view, pol, "same-town-segment", "database egress must be TCP 5432 only"))
                        continue
                    out.append(_v(view, pol, "same-town-segment", f"egress to outside {ns}: {dict(peer)}"))
    return out


REQUIRED_QUOTA = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods")


def quota_and_limits(view: View) -> list[Violation]:
    out: list[Violation] = []
    for ns, labels in view.namespaces.items():
        obj = {"kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
        quotas = view.in_namespace(ns, "ResourceQuota")
        hard: set[str] = set()
        for q in quotas:
            hard |= set(((q.get("spec") or {}).get("hard") or {}).keys())
        missing = [k for k in REQUIRED_QUOTA if k not in hard]
        if missing:
            out.append(_v(view, obj, "quota", f"no ResourceQuota bounding {', '.join(missing)}"))
        ranges = [
            item
            for lr in view.in_namespace(ns, "LimitRange")
            for item in (lr.get("spec") or {}).get("limits") or []
            if item.get("type") == "Container" and item.get("default") and item.get("max")
        ]
        if not ranges:
            out.append(_v(view, obj, "quota", "no LimitRange giving containers default and max limits"))
    return out


def rbac_scope(view: View) -> list[Violation]:
    out: list[Violation] = []
    town_ns = view.town_namespaces()
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for obj in view.of_kind(kind):
            out.append(_v(view, obj, "rbac-scope", "nothing cluster-scoped: towns get Roles in their namespaces"))
    for role in view.of_kind("Role"):
        ns = str(_meta(role).get("namespace", ""))
        town = view.town_of(role)
        if town_ns.get(ns) != town or town == NO_TOWN:
            out.append(_v(view, role, "rbac-scope", f"Role outside the town's own namespaces ({ns or 'none'})"))
        for i, rule in enumerate(role.get("rules") or []):
            groups, resources, verbs = (list(rule.get(k) or []) for k in ("apiGroups", "resources", "verbs"))
            if "*" in groups or "*" in resources or "*" in verbs:
                out.append(_v(view, role, "rbac-scope", f"rules[{i}] uses a wildcard"))
            bad = sorted(set(verbs) & naming.FORBIDDEN_VERBS - {"*"})
            if bad:
                out.append(_v(view, role, "rbac-scope", f"rules[{i}] grants {', '.join(bad)}"))
            if RBAC_GROUP in groups:
                out.append(_v(view, role, "rbac-scope", f"rules[{i}] grants RBAC objects"))
            if rule.get("nonResourceURLs"):
                out.append(_v(view, role, "rbac-scope", f"rules[{i}] grants non-resource URLs (cluster-scoped)"))
    for binding in view.of_kind("RoleBinding"):
        ns = str(_meta(binding).get("namespace", ""))
        town = view.town_of(binding)
        if town_ns.get(ns) != town or town == NO_TOWN:
            out.append(_v(view, binding, "rbac-scope", f"RoleBinding outside the town's namespaces ({ns or 'none'})"))
        ref = binding.get("roleRef") or {}
        if ref.get("kind") != "Role":
            out.append(_v(view, binding, "rbac-scope", f"binds a {ref.get('kind')}, not a Role of the namespace"))
        pattern = re.compile(rf"^kumiai:[a-z0-9-]+:{re.escape(town)}:ops$")
        for subject in binding.get("subjects") or []:
            if subject.get("kind") != "Group" or not pattern.match(str(subject.get("name", ""))):
                out.append(
                    _v(view, binding, "rbac-scope", f"subject {subject.get('name')!r} is not {town}'s ops group")
                )
    return out


def service_account_token(view: View) -> list[Violation]:
    out: list[Violation] = []
    for ns, labels in view.namespaces.items():
        accounts = [
            sa
            for sa in view.in_namespace(ns, "ServiceAccount")
            if _meta(sa).get("name") == "default" and sa.get("automountServiceAccountToken") is False
        ]
        if not accounts and labels.get(naming.LABEL_TOWN):
            obj = {"kind": "Namespace", "metadata": {"name": ns, "labels": labels}}
            out.append(_v(view, obj, "service-account", "default ServiceAccount must not automount its token"))
    return out


def town_boundary(view: View) -> list[Violation]:
    """A town's objects live only in that town's namespaces."""
    out: list[Violation] = []
    town_ns = view.town_namespaces()
    for _typ, _name, obj in view.objects:
        meta = _meta(obj)
        labels = meta.get("labels") or {}
        ns = meta.get("namespace")
        town = labels.get(naming.LABEL_TOWN)
        if obj.get("kind") == "Namespace" or not town:
            continue
        if not ns:
            out.append(_v(view, obj, "town-boundary", "a town's object must be namespaced"))
        elif town_ns.get(str(ns)) != town:
            owner = town_ns.get(str(ns), "no town")
            out.append(_v(view, obj, "town-boundary", f"labelled for {town} but lives in {ns} ({owner})"))
    return out


RULES: tuple[Rule, ...] = (
    Rule("pod-security", "Namespaces enforce, audit and warn Pod Security 'restricted', pinned", namespace_labels),
    Rule("default-deny", "Every namespace denies all ingress and egress unless allowed", default_deny),
    Rule(
        "same-town-segment",
        "Traffic only within the same town and segment, plus DNS and the town's database",
        network_peers,
    ),
    Rule("quota", "Every namespace has a ResourceQuota and a LimitRange", quota_and_limits),
    Rule("rbac-scope", "Roles only in the town's namespaces, no wildcards, no bind/escalate/impersonate", rbac_scope),
    Rule("service-account", "The default ServiceAccount does not automount a token", service_account_token),
    Rule("town-boundary", "A town's objects live only in its own namespaces", town_boundary),
)


def check(resources: Iterable[Resource], rules: Sequence[Rule] = RULES) -> list[Violation]:
    """Every violation of the rules in this set of resources, sorted."""
    view = View(resources)
    found: set[Violation] = set()
    for rule in rules:
        found.update(rule.check(view))
    return sorted(found)


def namespace_owners(claims: Iterable[tuple[str, str, str]]) -> list[Violation]:
    """Across stacks: (site, town, namespace) claims; one namespace name belongs to one town at a site."""
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for site, town, ns in claims:
        owners[(site, ns)].add(town)
    return sorted(
        Violation(town, f"Namespace {ns}", "town-boundary", f"claimed by {len(towns)} towns at {site}")
        for (site, ns), towns in owners.items()
        if len(towns) > 1
        for town in sorted(towns)
    )

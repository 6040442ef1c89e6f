"""The town tenant component: everything one town gets at one site, one namespace per 三層 segment it uses."""

from __future__ import annotations

from collections.abc import Callable

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core.v1 import (
    LimitRangeItemArgs,
    LimitRangeSpecArgs,
    ResourceQuotaSpecArgs,
    ServicePortArgs,
    ServiceSpecArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs, ObjectMetaPatchArgs
from pulumi_kubernetes.networking.v1 import (
    IPBlockArgs,
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)
from pulumi_kubernetes.rbac.v1 import PolicyRuleArgs, RoleRefArgs, SubjectArgs

from kumiai.catalogue import Segment
from kumiai.models import TIER_LIMITS, TIER_QUOTAS, Tier
from kumiai_stacks import naming
from kumiai_stacks.spec import TenantSpec

TYPE = "kumiai:tenant:Town"


def default_deny(name: str, meta: ObjectMetaArgs, opts: pulumi.ResourceOptions) -> k8s.networking.v1.NetworkPolicy:
    """Select every pod of the namespace for both directions with no rule: nothing in, nothing out."""
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=meta,
        spec=NetworkPolicySpecArgs(pod_selector=LabelSelectorArgs(), policy_types=["Ingress", "Egress"]),
        opts=opts,
    )


def allow_dns(name: str, meta: ObjectMetaArgs, opts: pulumi.ResourceOptions) -> k8s.networking.v1.NetworkPolicy:
    return k8s.networking.v1.NetworkPolicy(
        name,
        metadata=meta,
        spec=NetworkPolicySpecArgs(
            pod_selector=LabelSelectorArgs(),
            policy_types=["Egress"],
            egress=[
                NetworkPolicyEgressRuleArgs(
                    to=[
                        NetworkPolicyPeerArgs(
                            namespace_selector=LabelSelectorArgs(
                                match_labels={"kubernetes.io/metadata.name": naming.DNS_NAMESPACE}
                            ),
                            pod_selector=LabelSelectorArgs(match_labels=dict(naming.DNS_POD_LABELS)),
                        )
                    ],
                    ports=[
                        NetworkPolicyPortArgs(protocol="UDP", port=naming.DNS_PORT),
                        NetworkPolicyPortArgs(protocol="TCP", port=naming.DNS_PORT),
                    ],
                )
            ],
        ),
        opts=opts,
    )


def locked_namespace(
    parent: pulumi.Resource, ns_name: str, labels: dict[str, str], tier: Tier
) -> tuple[Callable[[str], ObjectMetaArgs], pulumi.ResourceOptions]:
    """A namespace with Pod Security `restricted`, quota and limits of the tier, and a default deny.

    Returns what the caller needs to put more in it: metadata for a named object of the namespace, and options
    that make it wait for the namespace when the engine applies the stack.
    """
    ns = k8s.core.v1.Namespace(
        ns_name,
        metadata=ObjectMetaArgs(name=ns_name, labels={**labels, **naming.pss_labels()}),
        opts=pulumi.ResourceOptions(parent=parent),
    )
    opts = pulumi.ResourceOptions(parent=parent, depends_on=[ns])

    def meta(name: str) -> ObjectMetaArgs:
        return ObjectMetaArgs(name=name, namespace=ns_name, labels=labels)

    k8s.core.v1.ResourceQuota(
        f"{ns_name}-quota",
        metadata=meta("quota"),
        spec=ResourceQuotaSpecArgs(hard=dict(TIER_QUOTAS[tier])),
        opts=opts,
    )
    limits = TIER_LIMITS[tier]
    k8s.core.v1.LimitRange(
        f"{ns_name}-limits",
        metadata=meta("limits"),
        spec=LimitRangeSpecArgs(
            limits=[
                LimitRangeItemArgs(
                    type="Container",
                    default=dict(limits["default"]),
                    default_request=dict(limits["defaultRequest"]),
                    max=dict(limits["max"]),
                )
            ]
        ),
        opts=opts,
    )
    default_deny(f"{ns_name}-default-deny", meta("default-deny"), opts)
    return meta, opts


class TownTenant(pulumi.ComponentResource):
    """Namespaces, quotas, limits, network policies, RBAC, default ServiceAccount and `db` Service of a town."""

    namespaces: dict[Segment, str]

    def __init__(self, name: str, spec: TenantSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        town = spec.town
        self.namespaces = {}
        for segment in town.segments:
            self.namespaces[segment] = self._segment(spec, segment)
        self.register_outputs({"namespaces": list(self.namespaces.values())})

    def _segment(self, spec: TenantSpec, segment: Segment) -> str:
        town = spec.town
        ns_name = naming.namespace_name(town.id, segment)
        labels = {
            naming.LABEL_TOWN: town.id,
            naming.LABEL_SEGMENT: segment.value,
            naming.LABEL_SITE: spec.site.id,
            naming.LABEL_CODE: town.code,
            naming.LABEL_MANAGED_BY: naming.MANAGED_BY,
        }
        meta, opts = locked_namespace(self, ns_name, labels, town.tier)
        allow_dns(f"{ns_name}-allow-dns", meta("allow-dns"), opts)
        # A peer with only a pod selector means "pods of this namespace": the town's own segment, nothing else.
        same_segment = [NetworkPolicyPeerArgs(pod_selector=LabelSelectorArgs())]
        k8s.networking.v1.NetworkPolicy(
            f"{ns_name}-allow-same-segment",
            metadata=meta("allow-same-segment"),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(),
                policy_types=["Ingress", "Egress"],
                ingress=[NetworkPolicyIngressRuleArgs(from_=same_segment)],
                egress=[NetworkPolicyEgressRuleArgs(to=same_segment)],
            ),
            opts=opts,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{ns_name}-allow-db",
            metadata=meta("allow-db"),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(),
                policy_types=["Egress"],
                egress=[
                    NetworkPolicyEgressRuleArgs(
                        to=[NetworkPolicyPeerArgs(ip_block=IPBlockArgs(cidr=str(spec.db_site.db_network)))],
                        ports=[NetworkPolicyPortArgs(protocol="TCP", port=naming.DB_PORT)],
                    )
                ],
            ),
            opts=opts,
        )
        group = naming.ops_group(spec.consortium, town.id)
        k8s.rbac.v1.Role(
            f"{ns_name}-ops",
            metadata=meta("ops"),
            rules=[
                PolicyRuleArgs(api_groups=list(groups), resources=list(resources), verbs=list(verbs))
                for groups, resources, verbs in naming.OPS_RULES
            ],
            opts=opts,
        )
        k8s.rbac.v1.RoleBinding(
            f"{ns_name}-ops",
            metadata=meta("ops"),
            role_ref=RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name="ops"),
            subjects=[SubjectArgs(kind="Group", name=group, api_group="rbac.authorization.k8s.io")],
            opts=opts,
        )
        # The default ServiceAccount exists as soon as the namespace does: patch it rather than create it.
        k8s.core.v1.ServiceAccountPatch(
            f"{ns_name}-default-sa",
            metadata=ObjectMetaPatchArgs(name="default", namespace=ns_name, labels=labels),
            automount_service_account_token=False,
            opts=opts,
        )
        k8s.core.v1.Service(
            f"{ns_name}-db",
            metadata=meta(naming.DB_SERVICE),
            spec=ServiceSpecArgs(
                type="ExternalName",
                external_name=naming.db_host(town.id, spec.db_site.id, spec.consortium),
                ports=[ServicePortArgs(name="postgresql", port=naming.DB_PORT, protocol="TCP")],
            ),
            opts=opts,
        )
        return ns_name

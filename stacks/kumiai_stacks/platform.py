"""The site platform component: what a site needs once, before any town.

Kubernetes has no cluster-wide default deny, so each tenant namespace carries its own (see tenant.py). The platform
holds only kumiai's own namespace, locked down the same way as a tenant's.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core.v1 import LimitRangeItemArgs, LimitRangeSpecArgs, ResourceQuotaSpecArgs
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from kumiai.models import TIER_LIMITS, TIER_QUOTAS, Tier
from kumiai_stacks import naming
from kumiai_stacks.spec import PlatformSpec
from kumiai_stacks.tenant import default_deny

TYPE = "kumiai:platform:Site"


class SitePlatform(pulumi.ComponentResource):
    """kumiai-system: Pod Security restricted, default deny, quota and limits."""

    namespace: str

    def __init__(self, name: str, spec: PlatformSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        ns_name = naming.SYSTEM_NAMESPACE
        labels = {naming.LABEL_SITE: spec.site.id, naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
        ns = k8s.core.v1.Namespace(
            ns_name,
            metadata=ObjectMetaArgs(name=ns_name, labels={**labels, **naming.pss_labels()}),
            opts=pulumi.ResourceOptions(parent=self),
        )
        opts = pulumi.ResourceOptions(parent=self, depends_on=[ns])

        def meta(name: str) -> ObjectMetaArgs:
            return ObjectMetaArgs(name=name, namespace=ns_name, labels=labels)

        k8s.core.v1.ResourceQuota(
            f"{ns_name}-quota",
            metadata=meta("quota"),
            spec=ResourceQuotaSpecArgs(hard=dict(TIER_QUOTAS[Tier.s])),
            opts=opts,
        )
        k8s.core.v1.LimitRange(
            f"{ns_name}-limits",
            metadata=meta("limits"),
            spec=LimitRangeSpecArgs(
                limits=[
                    LimitRangeItemArgs(
                        type="Container",
                        default=dict(TIER_LIMITS[Tier.s]["default"]),
                        default_request=dict(TIER_LIMITS[Tier.s]["defaultRequest"]),
                        max=dict(TIER_LIMITS[Tier.s]["max"]),
                    )
                ]
            ),
            opts=opts,
        )
        default_deny(f"{ns_name}-default-deny", meta("default-deny"), opts)
        self.namespace = ns_name
        self.register_outputs({"namespace": ns_name})

"""The site platform component: what a site needs once, before any town.

Kubernetes has no cluster-wide default deny, so each tenant namespace carries its own (see tenant.py). The platform
holds only kumiai's own namespace, locked down the same way as a tenant's.
"""

from __future__ import annotations

import pulumi

from kumiai.models import Tier
from kumiai_stacks import naming
from kumiai_stacks.spec import PlatformSpec
from kumiai_stacks.tenant import locked_namespace

TYPE = "kumiai:platform:Site"


class SitePlatform(pulumi.ComponentResource):
    """kumiai-system: Pod Security restricted, default deny, quota and limits."""

    namespace: str

    def __init__(self, name: str, spec: PlatformSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        ns_name = naming.SYSTEM_NAMESPACE
        labels = {naming.LABEL_SITE: spec.site.id, naming.LABEL_MANAGED_BY: naming.MANAGED_BY}
        locked_namespace(self, ns_name, labels, Tier.s)
        self.namespace = ns_name
        self.register_outputs({"namespace": ns_name})

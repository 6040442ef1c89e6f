"""Pulumi programs: what each stack's `__main__.py` runs, and what `kumiai plan` runs under mocks.

The engine runs one stack per town and site (project stacks/tenant) and one per site (project stacks/platform).
Rendering under mocks may put many components of one site into a single program run: the components are the
same, only the stack boundary differs, and their resource names are unique within a site.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pulumi

from kumiai.inventory import load_inventory
from kumiai_stacks.platform import SitePlatform
from kumiai_stacks.spec import PlatformSpec, TenantSpec, platform_spec, tenant_spec
from kumiai_stacks.tenant import TownTenant


def tenant_program(spec: TenantSpec) -> TownTenant:
    return TownTenant(spec.town.id, spec)


def platform_program(spec: PlatformSpec) -> SitePlatform:
    return SitePlatform(spec.site.id, spec)


def site_program(platform: PlatformSpec | None, tenants: Sequence[TenantSpec]) -> None:
    """Several stacks of one site in one run (rendering only)."""
    sites = {t.site.id for t in tenants} | ({platform.site.id} if platform else set())
    if len(sites) > 1:
        raise ValueError(f"one site per run, got {', '.join(sorted(sites))}")
    if platform is not None:
        platform_program(platform)
    for spec in tenants:
        tenant_program(spec)


def _inventory_config() -> tuple[pulumi.Config, Path]:
    config = pulumi.Config("kumiai")
    return config, Path(config.require("inventory"))


def tenant_main() -> None:
    """Entry point of stacks/tenant: config kumiai:inventory, kumiai:town, kumiai:site."""
    config, path = _inventory_config()
    inventory = load_inventory(path)
    town = inventory.town(config.require("town"))
    site = inventory.consortium.site(config.require("site"))
    component = tenant_program(tenant_spec(inventory, town, site))
    pulumi.export("namespaces", list(component.namespaces.values()))


def platform_main() -> None:
    """Entry point of stacks/platform: config kumiai:inventory, kumiai:site."""
    config, path = _inventory_config()
    inventory = load_inventory(path)
    site = inventory.consortium.site(config.require("site"))
    component = platform_program(platform_spec(inventory, site))
    pulumi.export("namespace", component.namespace)

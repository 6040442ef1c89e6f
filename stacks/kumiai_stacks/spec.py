"""What one stack renders: typed inputs derived from the inventory. Pure: no Pulumi here."""

from __future__ import annotations

from dataclasses import dataclass

from kumiai.inventory import Inventory
from kumiai.models import Site, Town


@dataclass(frozen=True)
class TenantSpec:
    """One town at one site. `db_site` is the site currently primary for the town (where its database writes)."""

    consortium: str
    town: Town
    site: Site
    db_site: Site

    @property
    def stack_name(self) -> str:
        return f"{self.town.id}.{self.site.id}"


@dataclass(frozen=True)
class PlatformSpec:
    """What a site needs once, before any town."""

    consortium: str
    site: Site

    @property
    def stack_name(self) -> str:
        return self.site.id


def tenant_spec(inventory: Inventory, town: Town, site: Site) -> TenantSpec:
    db_site, _standby = inventory.placement(town)
    return TenantSpec(consortium=inventory.consortium.name, town=town, site=site, db_site=db_site)


def platform_spec(inventory: Inventory, site: Site) -> PlatformSpec:
    return PlatformSpec(consortium=inventory.consortium.name, site=site)

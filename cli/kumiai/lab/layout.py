"""Where every lab process lives: addresses, ports, directories. Pure: derived from the models and the slots.

Each town owns a *slot* (see slots.py), assigned once at onboarding and never moved, so adding a town never
shifts the addresses of the towns already running. A town's members at a site take consecutive addresses in
the site's db_network starting at FIRST_MEMBER_HOST + slot * MEMBERS_PER_SITE; the site's etcd takes host 1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kumiai.errors import KumiaiError
from kumiai.inventory import Inventory
from kumiai.models import Site, Town

MEMBERS_PER_SITE = 2
# Host 1 is the site's etcd, 2-10 are kept for further site services.
ETCD_HOST = 1
FIRST_MEMBER_HOST = 11
PG_PORT = 5432
REST_PORT = 8008
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"


def max_slots(network: ipaddress.IPv4Network) -> int:
    """How many towns fit in a site network (the broadcast address is not used)."""
    usable = network.num_addresses - 1 - FIRST_MEMBER_HOST
    return max(usable // MEMBERS_PER_SITE, 0)


def member_address(network: ipaddress.IPv4Network, slot: int, index: int) -> ipaddress.IPv4Address:
    """Address of member `index` (1-based) of the town in `slot` (0-based) at a site."""
    if not 1 <= index <= MEMBERS_PER_SITE:
        raise ValueError(f"member index {index} outside 1..{MEMBERS_PER_SITE}")
    if not 0 <= slot < max_slots(network):
        raise KumiaiError(f"slot {slot} does not fit in {network}: it has room for {max_slots(network)} towns")
    return network.network_address + FIRST_MEMBER_HOST + slot * MEMBERS_PER_SITE + index - 1


def sql_name(town_id: str) -> str:
    """Town ids may hold '-', which SQL identifiers should not."""
    return town_id.replace("-", "_")


def group_name(text: str) -> str:
    """Ansible group names allow letters, digits and '_'."""
    return text.replace("-", "_")


@dataclass(frozen=True)
class SiteLayout:
    id: str
    role: str
    network: ipaddress.IPv4Network
    dir: Path
    repo_path: Path

    @property
    def host(self) -> str:
        """The site's service host in the Ansible inventory."""
        return self.id

    @property
    def etcd_address(self) -> str:
        return str(self.network.network_address + ETCD_HOST)

    @property
    def etcd_endpoint(self) -> str:
        return f"{self.etcd_address}:{ETCD_CLIENT_PORT}"

    @property
    def etcd_name(self) -> str:
        return self.id

    @property
    def etcd_data_dir(self) -> Path:
        return self.dir / "etcd"

    @property
    def supervisor_dir(self) -> Path:
        return self.dir / "supervisor"

    @property
    def supervisor_config(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"


@dataclass(frozen=True)
class MemberLayout:
    town: str
    site: str
    index: int
    address: str
    dir: Path

    @property
    def name(self) -> str:
        return f"{self.town}-{self.site}-{self.index}"

    @property
    def program(self) -> str:
        """The supervisord program (or systemd unit) running this member's Patroni."""
        return f"patroni-{self.name}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        # The member directory is distinct per member, which is what PostgreSQL needs of a socket directory.
        return self.dir

    @property
    def patroni_config(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def pgbackrest_config(self) -> Path:
        return self.dir / "pgbackrest.conf"

    @property
    def rest_url(self) -> str:
        return f"http://{self.address}:{REST_PORT}"


@dataclass(frozen=True)
class TownLayout:
    id: str
    slot: int
    primary_site: str
    dr_site: str
    members: tuple[MemberLayout, ...]

    @property
    def database(self) -> str:
        return sql_name(self.id)

    @property
    def app_user(self) -> str:
        return f"{sql_name(self.id)}_app"

    @property
    def dr_slot_name(self) -> str:
        """Permanent slot at the primary site through which the DR standby cluster streams."""
        return f"kumiai_dr_{sql_name(self.dr_site)}"

    def at(self, site_id: str) -> tuple[MemberLayout, ...]:
        return tuple(m for m in self.members if m.site == site_id)


@dataclass(frozen=True)
class LabLayout:
    dir: Path
    sites: tuple[SiteLayout, ...]
    towns: Mapping[str, TownLayout]

    def site(self, site_id: str) -> SiteLayout:
        return next(s for s in self.sites if s.id == site_id)

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    def secrets_file(self, town_id: str) -> Path:
        return self.secrets_dir / f"{town_id}.vault.yml"


def site_layout(lab_dir: Path, site: Site) -> SiteLayout:
    storage = site.object_storage
    # Production repos are S3; in the lab a posix path under the lab directory stands in for the site's storage.
    repo = lab_dir / storage.path if storage.type == "posix" and storage.path else lab_dir / site.id / "backup"
    return SiteLayout(id=site.id, role=site.role.value, network=site.db_network, dir=lab_dir / site.id, repo_path=repo)


def town_layout(lab_dir: Path, inv: Inventory, town: Town, slot: int) -> TownLayout:
    primary, dr = inv.placement(town)
    members = tuple(
        MemberLayout(
            town=town.id,
            site=site.id,
            index=index,
            address=str(member_address(site.db_network, slot, index)),
            dir=lab_dir / site.id / "towns" / town.id / f"member{index}",
        )
        for site in (primary, dr)
        for index in range(1, MEMBERS_PER_SITE + 1)
    )
    return TownLayout(id=town.id, slot=slot, primary_site=primary.id, dr_site=dr.id, members=members)


def build_layout(lab_dir: Path, inv: Inventory, slots: Mapping[str, int]) -> LabLayout:
    """The lab for an inventory; only towns holding a slot (onboarded, or being onboarded) have members."""
    sites = tuple(site_layout(lab_dir, s) for s in inv.consortium.sites)
    towns = {
        tid: town_layout(lab_dir, inv, inv.towns[tid], slot) for tid, slot in sorted(slots.items()) if tid in inv.towns
    }
    return LabLayout(dir=lab_dir, sites=sites, towns=towns)


def lowest_free_slot(used: set[int]) -> int:
    slot = 0
    while slot in used:
        slot += 1
    return slot

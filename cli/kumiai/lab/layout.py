"""The lab's addressing: every process on this machine, derived from the models and the slots. Pure.

Each town owns a *slot* (see slots.py), assigned once at onboarding and never moved, so adding a town never
shifts the addresses of the towns already running. A town's members at a site take consecutive addresses in
the site's db_network starting at FIRST_MEMBER_HOST + slot * MEMBERS_PER_SITE; the site's etcd takes host 1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path

from kumiai.datalayer.certs import controller_tls
from kumiai.datalayer.hostvars import repo_number, town_sites
from kumiai.datalayer.topology import MEMBERS_PER_SITE, MemberLayout, RepoLayout, SiteLayout, Topology, TownLayout
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory
from kumiai.models import Site, Town
from kumiai.objectstore.lab import S3_REPO_PATH, lab_object_store

# Host 1 is the site's etcd, 2-10 are kept for further site services.
ETCD_HOST = 1
FIRST_MEMBER_HOST = 11


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


def site_layout(lab_dir: Path, site: Site, inv: Inventory) -> SiteLayout:
    storage = site.object_storage
    if storage.type == "posix" and storage.path and Path(storage.path).is_absolute():
        # Real hosts may keep a repo at an absolute path; the lab keeps everything under its own directory.
        index = inv.consortium.sites.index(site)
        raise InputError(
            Problem(
                str(inv.root / "consortium.yaml"),
                f"sites[{index}].object_storage.path",
                f"the lab keeps repos under its directory: give a relative path such as {site.id}/backup",
            )
        )
    repo = lab_dir / storage.path if storage.type == "posix" and storage.path else lab_dir / site.id / "backup"
    return SiteLayout(
        id=site.id,
        role=site.role.value,
        network=site.db_network,
        dir=lab_dir / site.id,
        repo_path=repo,
        etcd_address=str(site.db_network.network_address + ETCD_HOST),
        object_store=lab_object_store(lab_dir, site, inv) if storage.type == "s3" else None,
    )


def repo_layout(site: SiteLayout, number: int, town_id: str) -> RepoLayout:
    """The town's repo at a site: its bucket in the site's object store, or its own directory below the site's
    posix repo directory (owned by the town's OS user, so no other town's user can read its backups)."""
    if site.object_store:
        return RepoLayout(number, site.id, S3_REPO_PATH, bucket=site.object_store.bucket(town_id))
    return RepoLayout(number, site.id, site.repo_path / town_id)


def town_layout(lab_dir: Path, inv: Inventory, town: Town, slot: int) -> TownLayout:
    primary, dr = inv.placement(town)
    sites = town_sites(inv, town)
    members = tuple(
        MemberLayout(
            town=town.id,
            site=site.id,
            index=index,
            address=str(member_address(site.db_network, slot, index)),
            dir=lab_dir / site.id / "towns" / town.id / f"member{index}",
            tls=controller_tls(lab_dir / "ca", lab_dir / "pki"),
        )
        for site in sites
        for index in range(1, MEMBERS_PER_SITE + 1)
    )
    repos = tuple(repo_layout(site_layout(lab_dir, site, inv), repo_number(inv, site.id), town.id) for site in sites)
    return TownLayout(
        id=town.id, slot=slot, primary_site=primary.id, dr_site=dr.id, members=members, repos=repos, tier=town.tier
    )


def build_layout(lab_dir: Path, inv: Inventory, slots: Mapping[str, int]) -> Topology:
    """The lab for an inventory; only towns holding a slot (onboarded, or being onboarded) have members."""
    sites = tuple(site_layout(lab_dir, s, inv) for s in inv.consortium.sites)
    towns = {
        tid: town_layout(lab_dir, inv, inv.towns[tid], slot) for tid, slot in sorted(slots.items()) if tid in inv.towns
    }
    return Topology(dir=lab_dir, sites=sites, towns=towns)


def lowest_free_slot(used: set[int]) -> int:
    slot = 0
    while slot in used:
        slot += 1
    return slot

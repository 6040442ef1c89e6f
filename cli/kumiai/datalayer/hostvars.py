"""The environment-neutral facts of each town's data layer, derived from the models. Pure.

The Ansible inventory of every target is built on these (a target adds addresses and paths), and `kumiai diff`
compares them between two versions of the inventory, so what an auditor reads is what the playbooks get.
"""

from __future__ import annotations

from typing import Any

from kumiai.inventory import Inventory
from kumiai.models import TIER_WAL, Site, Town


def repo_number(inv: Inventory, site_id: str) -> int:
    """pgBackRest repo number of a site: its position in consortium.yaml's `sites` (1-based).

    Numbered by site, not by role, so a failover never renumbers a town's repos."""
    for number, site in enumerate(inv.consortium.sites, start=1):
        if site.id == site_id:
            return number
    raise KeyError(site_id)


def town_sites(inv: Inventory, town: Town) -> list[Site]:
    """The sites holding the town (its primary and its DR site), in consortium order."""
    primary, dr = inv.placement(town)
    return [s for s in inv.consortium.sites if s.id in (primary.id, dr.id)]


def town_vars(inv: Inventory, town: Town) -> dict[str, Any]:
    """What the data layer of a town is, wherever it runs: placement, repos, schedule, protection targets."""
    primary, dr = inv.placement(town)
    p = town.protection
    return {
        "kumiai_town": town.id,
        "kumiai_primary_site": primary.id,
        "kumiai_dr_site": dr.id,
        "kumiai_repos": [
            {"number": repo_number(inv, s.id), "site": s.id, "storage": s.object_storage.type}
            for s in town_sites(inv, town)
        ],
        "kumiai_backup_schedule": p.backup_schedule,
        "kumiai_retention_full": p.retention_full,
        "kumiai_rpo_seconds": p.rpo_seconds,
        "kumiai_rto_seconds": p.rto_seconds,
        "kumiai_immutable_days": p.immutable_days,
        "kumiai_tier": town.tier.value,
        # WAL kept for the DR site at most (MiB): the slot's limit, and the archive queue's.
        "kumiai_max_slot_wal_keep_size_mb": TIER_WAL[town.tier].max_slot_wal_keep_size,
        "kumiai_archive_push_queue_max_mb": TIER_WAL[town.tier].archive_push_queue_max,
    }

"""Failure scenarios measured under a continuous writer, shared by the integration tests and bench/dr.py.

A scenario breaks something real in a lab, measures what clients saw (tests.support.writer) and what Patroni did,
puts the lab back as it found it (same members, one leader with a synchronous standby, the DR standby streaming),
and returns the measurements; the caller asserts on them or reports them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from kumiai.datalayer.patroni import cluster_view, get_config
from kumiai.inventory import load_inventory
from kumiai.lab.target import LabTarget
from support import faults
from support.writer import Writer, held_seqs, lab_town, town_endpoint

InSiteFault = Literal["postmaster", "member_tree"]
HEALTHY_TIMEOUT_S = 180


class LabLike(Protocol):
    """What a scenario needs of a lab (tests/integration/conftest.py's Lab)."""

    inventory: Path
    lab_dir: Path

    @property
    def vault_keys(self) -> Path: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class InSiteOutcome:
    town: str
    fault: InSiteFault
    killed_member: str
    killed_pids: int
    ttl_s: int
    loop_wait_s: int
    leader_before: str
    leader_after: str  # the member that acknowledged the first commit after the kill
    writable_after_s: float  # from the SIGKILL to that first acknowledged commit
    outage_s: float  # the writer's longest stretch without an acknowledged commit
    acknowledged: int
    ambiguous: int
    lost: int  # acknowledged commits the new leader does not hold

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wait_healthy(lab: LabLike, town_id: str, timeout_s: float = HEALTHY_TIMEOUT_S) -> dict[str, Any]:
    """Until `kumiai status` calls the town healthy (leader, sync standby, DR streaming, backups)."""
    deadline = time.monotonic() + timeout_s
    while True:
        town = lab.status()[town_id]
        if town["healthy"]:
            return town
        if time.monotonic() > deadline:
            raise AssertionError(f"{town_id} not healthy within {timeout_s} s: {town}")
        time.sleep(1)


def in_site_failover(lab: LabLike, town_id: str, fault: InSiteFault, *, warmup: int = 100) -> InSiteOutcome:
    """SIGKILL the town's primary-site leader (its PostgreSQL, or its whole member held down) under a writer."""
    wait_healthy(lab, town_id)
    town, secrets = lab_town(lab.inventory, lab.lab_dir, lab.vault_keys, town_id)
    target = LabTarget(load_inventory(lab.inventory), lab.lab_dir)
    site = target.topology().site(town.primary_site)
    members = town.at(town.primary_site)
    config = get_config(members)
    view = cluster_view(members) or {}
    victim = next(m for m in members for v in view.get("members", []) if v["name"] == m.name and v["role"] == "leader")
    endpoint = town_endpoint(town, secrets, [town.primary_site])
    writer = Writer(endpoint, f"insite_{fault}").start()
    try:
        writer.wait_for(warmup)
        killed = faults.kill_postmaster(victim) if fault == "postmaster" else faults.kill_member_held_down(site, victim)
        writer.wait_for(warmup, timeout_s=config["ttl"] * 3)
    finally:
        result = writer.stop()
    first = next(c for c in result.acknowledged if c.at > killed.at)
    leader = next(m for m in members if m.address == first.host)
    # Read at the new leader itself: a replica that is still catching up would count as a loss.
    held = held_seqs(endpoint.only(leader.address), f"insite_{fault}")
    outcome = InSiteOutcome(
        town=town_id,
        fault=fault,
        killed_member=victim.name,
        killed_pids=len(killed.pids),
        ttl_s=int(config["ttl"]),
        loop_wait_s=int(config["loop_wait"]),
        leader_before=victim.name,
        leader_after=leader.name,
        writable_after_s=round(first.at - killed.at, 2),
        outage_s=round(result.outage().seconds, 2),
        acknowledged=len(result.acknowledged),
        ambiguous=len(result.ambiguous),
        lost=len(result.lost(held)),
    )
    if fault == "member_tree":
        target.services.start(site.id, [victim.program])
    wait_healthy(lab, town_id)
    return outcome

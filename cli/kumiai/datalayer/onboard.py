"""Onboarding towns and reading their state, through a target: what `kumiai onboard` and `kumiai status` do."""

from __future__ import annotations

import time
from collections.abc import Sequence

from kumiai.datalayer.etcd import ensure_etcd_certificates
from kumiai.datalayer.secrets import check_town_keys, ensure_town_secrets, load_town_secrets
from kumiai.datalayer.status import TownStatus, gather_town_status
from kumiai.datalayer.target import Target
from kumiai.datalayer.topology import Topology, group_name
from kumiai.errors import InputError, KumiaiError
from kumiai.inventory import Inventory
from kumiai.objectstore.provision import ensure_evidence_buckets, ensure_town_buckets
from kumiai.ops import Operation

# Bound on waiting for a freshly onboarded town to report healthy after its playbook finished.
HEALTHY_TIMEOUT_S = 60.0


def check_towns(inv: Inventory, town_ids: Sequence[str]) -> None:
    """Every id names a town of the inventory; raises InputError (exit 2) listing every unknown one."""
    problems = []
    for tid in town_ids:
        try:
            inv.town(tid)
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)


def onboarded(target: Target, town_ids: Sequence[str]) -> Topology:
    """The topology, after checking that these towns are known and onboarded at this target."""
    check_towns(target.inventory, town_ids)
    topology = target.topology()
    missing = [t for t in town_ids if t not in topology.towns]
    if missing:
        raise KumiaiError(f"not onboarded here: {', '.join(missing)} (kumiai onboard ID)")
    return topology


def limit_for(town_ids: Sequence[str]) -> str:
    """Ansible --limit selecting the members of these towns."""
    return ":".join(f"town_{group_name(tid)}" for tid in town_ids)


def town_status(target: Target, topology: Topology, town_id: str) -> TownStatus:
    secrets_file = topology.secrets_file(town_id)
    secrets = load_town_secrets(secrets_file) if secrets_file.exists() else None
    return gather_town_status(topology.towns[town_id], secrets, target.run_as(town_id))


def wait_healthy(
    target: Target, topology: Topology, town_ids: Sequence[str], timeout: float = HEALTHY_TIMEOUT_S
) -> list[TownStatus]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = [town_status(target, topology, tid) for tid in town_ids]
        if all(s.healthy for s in statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


def onboard_towns(target: Target, town_ids: Sequence[str], op: Operation) -> list[TownStatus]:
    """Credentials, addresses, onboard_town.yml for both sites, then check: DR streaming, backups in every repo."""
    check_towns(target.inventory, town_ids)
    target.check_capacity(town_ids)
    down = target.sites_down()
    if down:
        raise KumiaiError(f"site services are not running at {', '.join(down)}: run `kumiai lab up` first")
    with op.step("credentials and addresses"):
        # Credentials first: a run interrupted after this point finds them and reuses them.
        secrets_of = target.topology()
        check_town_keys([secrets_of.secrets_file(tid) for tid in town_ids])
        for tid in town_ids:
            ensure_town_secrets(secrets_of.secrets_file(tid))
        topology = target.prepare(town_ids)
        # The towns' etcd client certificates (the playbook installs them on the members).
        ensure_etcd_certificates(topology)
    with op.step("object stores: each town's S3 user and locked bucket, the evidence buckets") as step:
        # Before the playbook: its stanza-create writes into the buckets.
        changes = ensure_town_buckets(target, topology, town_ids) + ensure_evidence_buckets(target, topology)
        step.detail = f"{len(changes)} changes"
    with op.step("both sites: onboard_town.yml") as step:
        result = target.run_playbook("onboard_town.yml", limit=limit_for(town_ids), towns=town_ids)
        step.detail = f"changed={result.changed}"
    with op.step("DR standby streaming, full backups in every repo") as step:
        statuses = wait_healthy(target, topology, town_ids)
        bad = [s.town for s in statuses if not s.healthy]
        if bad:
            raise KumiaiError(f"onboarded but not healthy after {HEALTHY_TIMEOUT_S:.0f} s: {', '.join(bad)}")
        step.detail = f"{len(statuses)} towns healthy"
    op.target["changed"] = result.changed
    return statuses

"""Onboarding towns and reading their state, through a target: what `kumiai onboard` and `kumiai status` do."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence

from kumiai.datalayer.certs import ensure_town_certificates, serial
from kumiai.datalayer.etcd import ensure_etcd_certificates
from kumiai.datalayer.patroni import cluster_view
from kumiai.datalayer.secrets import TownSecrets, check_town_keys, ensure_town_secrets, load_town_secrets
from kumiai.datalayer.sql import connect
from kumiai.datalayer.status import TownStatus, gather_town_status, parse_cluster
from kumiai.datalayer.target import Target
from kumiai.datalayer.topology import PG_PORT, MemberLayout, Topology, TownLayout, group_name
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


def reclone_dr_standby(target: Target, town: TownLayout, secrets: TownSecrets) -> None:
    """Make the town's DR standby cluster bootstrap anew; the playbook then starts it, and its first member clones the
    primary site by base backup. Each step can be repeated, so an interrupted re-clone converges when re-run:
    stop the site's members, remove their cluster from the site's DCS (Patroni then bootstraps a new standby leader
    instead of waiting for the old one), remove their data directories, and only then drop the invalidated slot at
    the primary (Patroni creates it anew, reserving WAL from now on): until that last step the slot says why."""
    members = town.at(town.dr_site)
    target.services.stop(town.dr_site, [m.program for m in members])
    forget_cluster(members[0], town.id)
    for m in members:
        done = subprocess.run(
            [*target.run_as(town.id), "/bin/rm", "-rf", "--", str(m.data_dir)], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise KumiaiError(f"could not remove the data directory of {m.name}: {done.stderr.strip()}")
    leader = primary_leader(town)
    if leader is None:
        raise KumiaiError(f"{town.id} has no leader at {town.primary_site}: its DR slot cannot be renewed")
    with connect(leader.address, PG_PORT, secrets, tls=leader.tls, app="kumiai-onboard") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND wal_status = 'lost'",
            (town.dr_slot_name,),
        )
    conn.close()


# Patroni's own DCS client, with the member's configuration (endpoints, credentials, the cluster's scope): what
# `patronictl remove` does once its prompts are answered, without the prompts.
FORGET_CLUSTER = """
import sys
from patroni.config import Config
from patroni.dcs import get_dcs
get_dcs(Config(sys.argv[1])).delete_cluster()
"""


def forget_cluster(member: MemberLayout, scope: str) -> None:
    """Remove a stopped cluster's keys from its site's DCS, so its next member bootstraps it anew."""
    done = subprocess.run(
        [sys.executable, "-c", FORGET_CLUSTER, str(member.patroni_config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise KumiaiError(f"could not remove {scope} at {member.site} from its DCS: {reason}")


def primary_leader(town: TownLayout) -> MemberLayout | None:
    view = parse_cluster(town.primary_site, "primary", cluster_view(town.at(town.primary_site)))
    return next((m for m in town.at(town.primary_site) if m.name == view.leader), None)


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
    with op.step("certificates of the members and the controller") as step:
        # Before the playbook installs them; kept while valid (kumiai certs rotate replaces them).
        step.detail = f"{len(ensure_town_certificates(topology, town_ids))} certificates"
    with op.step("object stores: each town's S3 user and locked bucket, the evidence buckets") as step:
        # Before the playbook: its stanza-create writes into the buckets.
        changes = ensure_town_buckets(target, topology, town_ids) + ensure_evidence_buckets(target, topology)
        step.detail = f"{len(changes)} changes"
    for tid in town_ids:
        status = town_status(target, topology, tid) if tid in secrets_of.towns else None
        if status is not None and status.dr_reclone:
            town = topology.towns[tid]
            with op.step(f"{tid}: re-clone the DR standby at {town.dr_site}") as step:
                step.detail = status.dr_reclone
                reclone_dr_standby(target, town, load_town_secrets(topology.secrets_file(tid)))
    with op.step("both sites: onboard_town.yml") as step:
        result = target.run_playbook("onboard_town.yml", limit=limit_for(town_ids), towns=town_ids)
        step.detail = f"changed={result.changed}"
    with op.step("DR standby streaming, full backups in every repo") as step:
        statuses = require_healthy(target, topology, town_ids, "onboarded")
        step.detail = f"{len(statuses)} towns healthy"
    op.target["changed"] = result.changed
    return statuses


def require_healthy(target: Target, topology: Topology, town_ids: Sequence[str], done: str) -> list[TownStatus]:
    """wait_healthy, and an error naming the towns that did not become healthy after `done`."""
    statuses = wait_healthy(target, topology, town_ids)
    bad = [s.town for s in statuses if not s.healthy]
    if bad:
        raise KumiaiError(f"{done} but not healthy after {HEALTHY_TIMEOUT_S:.0f} s: {', '.join(bad)}")
    return statuses


def rotate_certificates(target: Target, op: Operation) -> dict[str, dict[str, int]]:
    """Reissue every certificate of the onboarded towns' members, the controller's and etcd's (each site's member,
    root, each town's client), install them (site.yml for etcd; certs.yml: Patroni reloads its REST API, PostgreSQL
    and its etcd client, nothing restarts), then check every town is healthy again. The object stores' certificates
    are not rotated here (radosgw reads its certificate when it starts).
    Returns each certificate's serial before and after, by path."""
    down = target.sites_down()
    if down:
        raise KumiaiError(f"site services are not running at {', '.join(down)}: run `kumiai lab up` first")
    topology = target.topology()
    town_ids = sorted(topology.towns)
    with op.step("reissue the certificates") as step:
        current = [*ensure_town_certificates(topology, town_ids), *ensure_etcd_certificates(topology)]
        before = {str(f.cert): serial(f.cert) for f in current}
        fresh = [
            *ensure_town_certificates(topology, town_ids, force=True),
            *ensure_etcd_certificates(topology, force=True),
        ]
        after = {str(f.cert): serial(f.cert) for f in fresh}
        step.detail = f"{len(after)} certificates"
    with op.step("install etcd's: site.yml (etcd serves them from its next handshake)") as step:
        step.detail = f"changed={target.run_playbook('site.yml').changed}"
    if town_ids:
        with op.step("install them and reload Patroni and PostgreSQL: certs.yml") as step:
            result = target.run_playbook("certs.yml", limit=limit_for(town_ids), towns=town_ids)
            step.detail = f"changed={result.changed}"
        with op.step("every town healthy with the new certificates") as step:
            statuses = require_healthy(target, topology, town_ids, "certificates rotated")
            step.detail = f"{len(statuses)} towns healthy"
    return {path: {"before": before.get(path, 0), "after": number} for path, number in after.items()}

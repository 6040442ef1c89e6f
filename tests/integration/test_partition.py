"""Given a town whose two sites are cut from each other (both still running, the controller reaching both), when
it is failed over in an emergency, then the old primary is fenced before the new one is promoted and no write is
acknowledged by both sides.

The partition (tests/support/partition.py) drops, with nftables, what one site's processes send to the other
site's network, matched by the cgroup v2 group each site's process tree is moved into. Writers run at both sites
throughout: one through the old site's members only, one through the new site's members only (it fails until
the promotion). A lab of its own: the failover changes the town's placement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, Lab, build_lab, networks

from kumiai.datalayer.topology import TownLayout
from kumiai.inventory import load_inventory
from kumiai.lab.target import LabTarget
from support.partition import partitioned, table_exists
from support.scenarios import wait_healthy
from support.writer import (
    Endpoint,
    Writer,
    accepts_write,
    create_table,
    held_seqs,
    lab_town,
    superuser_endpoint,
    town_endpoint,
)

pytestmark = pytest.mark.integration

TOWN = "kiyokawa"
REPORTS = ROOT / "out" / "dr-tests"
# Seconds the old site is watched after the partition heals: Patroni's ttl and a few of its loops.
WATCH_AFTER_HEAL_S = 30


@pytest.fixture(scope="module")
def plab() -> Iterator[Lab]:
    nets = networks("KUMIAI_TEST_PARTITION_NETWORKS", "127.0.41.0/24,127.0.42.0/24")
    with build_lab(nets, towns=[TOWN], posix=True) as built:
        yield built


def cut_wal_streams(old: Endpoint, new_site_members: list[str]) -> int:
    """End the new site's WAL streams at the old primary: they were opened before the partition and would outlive
    it; the standby then reconnects from inside its group, and is dropped. How many were ended."""
    conn = old.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication WHERE application_name = ANY(%s)",
                (new_site_members,),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def streams_to(old: Endpoint, members: list[str]) -> int:
    conn = old.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_replication WHERE application_name = ANY(%s)", (members,))
            row = cur.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def wait_until(what: str, ready: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.2)


def failover(plab: Lab, town: TownLayout, *extra: str) -> tuple[int, dict[str, Any] | None, str]:
    run = plab.kumiai("failover", "--to", town.dr_site, "--town", town.id, "--yes", "--json", *extra, timeout=300)
    try:
        data = json.loads(run.stdout)
    except ValueError:
        data = None
    return run.code, data, str(run)


def test_emergency_failover_under_a_partition_fences_the_old_primary_before_promoting(
    plab: Lab, record_property: pytest.RecordProperty
) -> None:
    wait_healthy(plab, TOWN)
    town, secrets = lab_town(plab.inventory, plab.lab_dir, plab.vault_keys, TOWN)
    topology = LabTarget(load_inventory(plab.inventory), plab.lab_dir).topology()
    old_site, new_site = town.primary_site, town.dr_site
    old_members = [m.name for m in town.at(old_site)]
    new_members = [m.name for m in town.at(new_site)]
    old_ep = town_endpoint(town, secrets, [old_site])
    new_ep = town_endpoint(town, secrets, [new_site])
    admin_old = superuser_endpoint(town, secrets, [old_site])

    create_table(old_ep, "part_new")  # reaches the new site by replication, before the cut
    old_writer = Writer(old_ep, "part_old").start()
    new_writer: Writer | None = None
    try:
        old_writer.wait_for(50)
        wait_until(
            "the new site holds the old writer's rows",
            lambda: len(held_seqs(new_ep.only(town.at(new_site)[0].address), "part_old")) >= 50,
            60,
        )
        new_writer = Writer(new_ep, "part_new").start(create=False)
        with partitioned(topology.sites, f"{TOWN}-{int(time.time())}") as part:
            assert table_exists(part.table)
            old_site_layout, new_site_layout = topology.site(old_site), topology.site(new_site)
            assert part.blocks(old_site_layout, town.at(new_site)[0].address, 5432)
            assert part.blocks(new_site_layout, town.at(old_site)[0].address, 5432)
            assert cut_wal_streams(admin_old, new_members) >= 1
            cut_at = time.time()
            wait_until("the new site's stream stays cut", lambda: streams_to(admin_old, new_members) == 0, 30)
            time.sleep(3)  # the standby's reconnection attempts are dropped: still no stream
            assert streams_to(admin_old, new_members) == 0
            old_writer.wait_for(50)  # the old primary takes writes the new site never receives: the loss window

            # Reachable, healthy and taking writes: an emergency failover must refuse without --force.
            code, refused, text = failover(plab, town)
            assert code != 0 and refused is not None, text
            assert "--force" in refused["towns"][0]["error"], text
            assert not any("promote" in s["name"] for s in refused["towns"][0]["steps"]), text
            assert old_writer.acknowledged_count() > 0

            code, record, text = failover(plab, town, "--force", "--reason", "partition between the sites (test)")
            assert code == 0, text
            new_writer.wait_for(50, timeout_s=60)
            fenced_old = {m.name: accepts_write(old_ep.only(m.address), "part_old", -1) for m in town.at(old_site)}
        # Healed: the old site's members reach the new site again, and must still refuse writes.
        watch_until = time.monotonic() + WATCH_AFTER_HEAL_S
        after_heal: dict[str, int] = dict.fromkeys(old_members, 0)
        probe = -2
        while time.monotonic() < watch_until:
            for m in town.at(old_site):
                probe -= 1
                after_heal[m.name] += accepts_write(old_ep.only(m.address), "part_old", probe)
            time.sleep(0.5)
    finally:
        old_result = old_writer.stop()
        new_result = new_writer.stop() if new_writer is not None else None

    assert new_result is not None and record is not None
    town_record = record["towns"][0]
    steps = [s["name"].rsplit(": ", 1)[-1] for s in town_record["steps"]]
    statuses = {s["name"].rsplit(": ", 1)[-1]: s["status"] for s in town_record["steps"]}
    old_acks, new_acks = old_result.acknowledged, new_result.acknowledged
    lost = old_result.lost(held_seqs(new_ep, "part_old", read_write=True))
    outcome = {
        "town": TOWN,
        "steps": steps,
        "fencing": town_record.get("fencing"),
        "loss_window": town_record.get("loss_window"),
        "seconds_to_writable": town_record.get("seconds_to_writable"),
        "old_site_acknowledged": len(old_acks),
        "new_site_acknowledged": len(new_acks),
        "last_old_ack_before_first_new_ack_s": round(new_acks[0].at - old_acks[-1].at, 3) if new_acks else None,
        "old_acknowledged_missing_at_new_site": len(lost),
        "old_acknowledged_after_cut": sum(c.at >= cut_at for c in old_acks),
        "old_members_accepting_a_write_after_failover": fenced_old,
        "old_members_writes_accepted_after_heal": after_heal,
    }
    for key, value in outcome.items():
        record_property(key, value)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "partition.json").write_text(json.dumps(outcome, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"\npartition: {json.dumps(outcome, default=str)}")

    # The runbook fenced the old site, and only then promoted the new one.
    fence, promote = "fence-old", "promote-new"
    assert fence in steps and promote in steps, steps
    assert steps.index(fence) < steps.index(promote) and statuses[fence] == "ok", town_record["steps"]
    assert town_record["fencing"], town_record
    # What the clients saw: the old site's last acknowledged commit precedes the new site's first one.
    assert old_acks and new_acks
    assert old_acks[-1].at < new_acks[0].at, outcome
    assert not any(fenced_old.values()), outcome
    assert not any(after_heal.values()), outcome
    # Only what the old primary acknowledged after the cut can be missing at the new site (the loss window).
    assert all(c.at >= cut_at - 1.0 for c in lost), outcome
    # The window kumiai reports covers at least every acknowledged commit that is missing.
    window = town_record.get("loss_window") or {}
    assert window.get("commits") is None or window["commits"] >= len(lost), outcome

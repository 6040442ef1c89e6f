"""Bounded WAL, on a lab of its own with one town (it kills the whole DR site).

With the DR site down and a writer running, the primary's pg_wal stays under the town's tier bound while far more WAL
than that is written: PostgreSQL invalidates the DR slot (max_slot_wal_keep_size) instead of filling the disk.
`kumiai status` then says the DR standby needs a re-clone; with the DR site back, `kumiai onboard` re-clones it and
it streams again with every acknowledged row; a second `onboard` leaves the healthy standby alone.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, build_lab, networks, run_playbook

from kumiai.datalayer.secrets import TownSecrets
from kumiai.datalayer.sql import connect
from kumiai.datalayer.topology import PG_PORT, MemberLayout, SiteLayout
from kumiai.inventory import load_inventory
from kumiai.lab.target import LabTarget
from support import faults
from support.writer import Writer, held_seqs, lab_town, town_endpoint

pytestmark = pytest.mark.integration

TOWN = "nakai"  # tier s
PRIMARY, DR = "site-a", "site-b"
MIB = 1024 * 1024
# The s tier's bound, written out: max(slot keep 512 MiB, archive queue 512 MiB) + 2 x max_wal_size 512 MiB.
BOUND_MIB = 1536
# WAL written during the outage: well over the bound, so only the slot's limit can keep pg_wal under it.
WRITE_MIB = 2560
RESULTS = Path(os.environ.get("KUMIAI_BENCH_OUT", "/var/tmp")) / "kumiai-bounded-wal.json"


@pytest.fixture(scope="module")
def wal_lab() -> Iterator[Lab]:
    with build_lab(networks("KUMIAI_TEST_WAL_NETWORKS", "127.0.77.0/24,127.0.78.0/24"), [TOWN], posix=True) as built:
        yield built


def pg_wal_bytes(member: MemberLayout) -> int:
    total = 0
    for entry in os.scandir(member.data_dir / "pg_wal"):
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


class Sampler:
    """pg_wal's size at the primary's leader every 0.25 s: (seconds since start, bytes)."""

    def __init__(self, member: MemberLayout) -> None:
        self.member = member
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.t0, pg_wal_bytes(self.member)))
            self._stop.wait(0.25)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def peak(self) -> int:
        return max(b for _, b in self.samples)


def dr_alerts(lab: Lab) -> tuple[dict[str, Any], list[str]]:
    town = lab.status()[TOWN]
    return town, [a for a in town["alerts"] if "re-clone" in a]


def test_dr_outage_keeps_pg_wal_bounded_and_onboard_reclones_the_standby(wal_lab: Lab) -> None:
    layout, secrets = lab_town(wal_lab.inventory, wal_lab.lab_dir, wal_lab.vault_keys, TOWN)
    before = wal_lab.status()[TOWN]
    assert before["healthy"], before
    assert before["dr_slot"]["exists"] and before["dr_reclone"] is None, before
    leader = next(m for m in layout.at(PRIMARY) if m.name == before["primary"]["leader"])
    with connect(leader.address, PG_PORT, secrets, tls=leader.tls, app="kumiai-test") as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('max_slot_wal_keep_size'), current_setting('max_wal_size')")
        # The tier's values, converged into the running cluster by the dynamic configuration.
        assert cur.fetchone() == ("512MB", "512MB")
    conn.close()

    killed = faults.kill_site(wal_lab_site(wal_lab, DR))
    assert killed.pids
    app = town_endpoint(layout, secrets, (PRIMARY,))
    filler = connect(
        leader.address, PG_PORT, secrets, tls=leader.tls, database=layout.database, app="kumiai-test-filler"
    )
    filler.autocommit = True
    written = 0
    with Writer(app, "waltest", interval_s=0.05) as writer, Sampler(leader) as sampler, filler.cursor() as cur:
        writer.wait_for(20)
        cur.execute("CREATE TABLE IF NOT EXISTS kumiai_wal_filler (at timestamptz, pad text)")
        cur.execute("SELECT pg_current_wal_lsn()")
        (start,) = cur.fetchone()
        lost_at = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            # A row, then a switch to a new segment: 16 MiB of WAL per round, the way a busy town writes it.
            cur.execute("INSERT INTO kumiai_wal_filler SELECT now(), repeat('x', 1000) FROM generate_series(1, 50)")
            cur.execute("SELECT pg_switch_wal()")
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (start,))
            (written,) = cur.fetchone()
            cur.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (layout.dr_slot_name,))
            row = cur.fetchone()
            if row and row[0] == "lost" and lost_at is None:
                lost_at = sampler.samples[-1][0] if sampler.samples else 0.0
            if written >= WRITE_MIB * MIB and lost_at is not None:
                break
            if written >= WRITE_MIB * MIB:
                cur.execute("CHECKPOINT")  # the checkpoint that invalidates the slot; a timed one would come later
                time.sleep(1)
        time.sleep(2)
    filler.close()
    result = writer.result

    # The positive control: more WAL than the bound went through, and the slot was given up for it.
    assert written > BOUND_MIB * MIB, written
    assert lost_at is not None, "the DR slot was never invalidated"
    assert sampler.peak < BOUND_MIB * MIB, f"pg_wal peaked at {sampler.peak / MIB:.0f} MiB"
    assert result.acknowledged, result.summary()

    town, alerts = dr_alerts(wal_lab)
    assert town["dr_slot"]["wal_status"] == "lost", town["dr_slot"]
    assert alerts and f"kumiai onboard {TOWN}" in alerts[0], town["alerts"]
    text = wal_lab.kumiai("status", "--town", TOWN, timeout=60)
    assert "needs a re-clone" in text.stdout and f"kumiai onboard {TOWN}" in text.stdout, text

    # The DR site back: its services (as `lab up` starts them, without onboarding), then its members, as the site's
    # service manager starts them at boot. They start, but cannot stream: the WAL they need is gone.
    up = run_playbook(wal_lab, "site.yml")
    assert up.returncode == 0, up.stdout[-3000:]
    target = LabTarget(load_inventory(wal_lab.inventory), wal_lab.lab_dir)
    target.services.start(DR, [m.program for m in layout.at(DR)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        town, alerts = dr_alerts(wal_lab)
        if town["dr"]["leader"]:
            break
        time.sleep(2)
    assert town["dr"]["leader"] and not town["dr"]["healthy"] and alerts, town

    t0 = time.monotonic()
    again = wal_lab.kumiai("onboard", TOWN, timeout=900)
    reclone_s = time.monotonic() - t0
    assert again.code == 0, again
    assert "re-clone the DR standby" in audit_steps(wal_lab), again
    after = wal_lab.status()[TOWN]
    assert after["healthy"] and after["dr_reclone"] is None and after["dr_slot"]["wal_status"] != "lost", after
    dr_leader = next(m for m in layout.at(DR) if m.name == after["dr"]["leader"])
    held = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        held = held_seqs(app.only(dr_leader.address), "waltest")
        if result.acknowledged_seqs <= held:
            break
        time.sleep(1)
    assert result.acknowledged_seqs <= held, f"{len(result.acknowledged_seqs - held)} acknowledged rows missing at DR"

    # A second run leaves the healthy standby alone: same postmaster, no re-clone step.
    started = query_text(dr_leader, secrets, "SELECT pg_postmaster_start_time()::text")
    third = wal_lab.kumiai("onboard", TOWN, timeout=900)
    assert third.code == 0, third
    assert query_text(dr_leader, secrets, "SELECT pg_postmaster_start_time()::text") == started

    RESULTS.write_text(
        json.dumps(
            {
                "town": TOWN,
                "tier": "s",
                "bound_mib": BOUND_MIB,
                "wal_written_mib": round(written / MIB),
                "pg_wal_peak_mib": round(sampler.peak / MIB),
                "slot_lost_after_s": round(lost_at, 1),
                "pg_wal_mib_over_time": [(round(t, 1), round(b / MIB)) for t, b in sampler.samples[::8]],
                "reclone_onboard_s": round(reclone_s, 1),
                "writer": result.summary(),
            },
            indent=1,
        ),
        encoding="utf-8",
    )


def wal_lab_site(lab: Lab, site_id: str) -> SiteLayout:
    return LabTarget(load_inventory(lab.inventory), lab.lab_dir).topology().site(site_id)


def query_text(member: MemberLayout, secrets: TownSecrets, sql: str) -> str | None:
    with connect(member.address, PG_PORT, secrets, tls=member.tls, app="kumiai-test") as conn, conn.cursor() as cur:
        cur.execute(sql)
        (value,) = cur.fetchone()
    conn.close()
    return str(value)


def audit_steps(lab: Lab) -> str:
    run = lab.kumiai("audit", "log", "--json", timeout=60)
    return run.stdout

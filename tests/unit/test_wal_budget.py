"""Bounded WAL: the per-tier budget, the pgBackRest settings it becomes, and when status asks for a re-clone."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from kumiai.datalayer.ansible_inventory import build_inventory
from kumiai.datalayer.status import (
    ClusterStatus,
    DrSlot,
    Lag,
    MemberStatus,
    TownStatus,
    reclone_reason,
    segment_start,
)
from kumiai.dr.objectives import status_alerts
from kumiai.inventory import load_inventory
from kumiai.lab.layout import build_layout
from kumiai.models import TIER_WAL, Protection, Tier

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "inventories" / "lab"


def test_each_tier_keeps_a_bounded_amount_of_wal_for_its_dr_site() -> None:
    # Literal numbers (MiB), not read back from the table: a change of the table must change this test.
    assert {t: dataclasses.astuple(TIER_WAL[t]) for t in Tier} == {
        Tier.s: (512, 512, 512),
        Tier.m: (4096, 4096, 1024),
        Tier.l: (16384, 16384, 2048),
    }
    assert [TIER_WAL[t].pg_wal_bound for t in Tier] == [1536, 6144, 20480]
    # A larger tier never keeps less: a town growing out of its tier only gains room.
    bounds = [TIER_WAL[t] for t in (Tier.s, Tier.m, Tier.l)]
    for small, large in itertools.pairwise(bounds):
        assert all(a < b for a, b in zip(dataclasses.astuple(small), dataclasses.astuple(large), strict=True))


def render_pgbackrest(variables: dict[str, Any]) -> str:
    defaults = {
        "ansible_managed": "managed",
        "pgbackrest_repos": [{"number": 1, "type": "posix", "path": "/r1"}],
        "pgbackrest_retention_full": 2,
        "pgbackrest_cipher_type": "aes-256-cbc",
        "pgbackrest_cipher_pass": "x",
        "pgbackrest_compress_type": "zst",
        "pgbackrest_process_max": 1,
        "pgbackrest_log_path": "/m",
        "pgbackrest_lock_path": "/m",
        "pgbackrest_stanza": "nakai",
        "pgbackrest_pg_path": "/m/data",
        "pgbackrest_pg_socket_path": "/m",
        "pgbackrest_pg_port": 5432,
        "pgbackrest_archive_async": True,
        "pgbackrest_spool_path": "/m/spool",
        "pgbackrest_archive_push_queue_max": 0,
    }
    templar = Templar(loader=DataLoader(), variables={**defaults, **variables})
    template = ROOT / "roles" / "pgbackrest" / "templates" / "pgbackrest.conf.j2"
    text = trust_as_template(template.read_text(encoding="utf-8"))
    return str(templar.template(text, escape_backslashes=False, overrides={"trim_blocks": True}))


def test_members_archive_asynchronously_through_their_own_spool_with_the_tiers_queue_limit(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    topology = build_layout(tmp_path, inv, {"nakai": 0})
    hostvars = build_inventory(inv, topology, bin_dir=tmp_path, python=tmp_path / "python")["_meta"]["hostvars"]
    member = hostvars["nakai-site-a-1"]
    assert member["kumiai_archive_push_queue_max_mb"] == 512
    assert member["kumiai_max_slot_wal_keep_size_mb"] == 512
    lines = render_pgbackrest({"pgbackrest_archive_push_queue_max": 512}).splitlines()
    assert "archive-async=y" in lines and "spool-path=/m/spool" in lines
    assert "archive-push-queue-max=512MiB" in lines
    # Without a limit (0) and without async: neither setting, pgBackRest's defaults.
    plain = render_pgbackrest({"pgbackrest_archive_async": False}).splitlines()
    assert not [line for line in plain if line.startswith(("archive-", "spool-path"))]


def _dr(state: str, reachable: bool = True) -> ClusterStatus:
    if not reachable:
        return ClusterStatus(site="site-b", kind="standby", reachable=False)
    members = [
        MemberStatus("nakai-site-b-1", "127.0.2.11", "standby_leader", state),
        MemberStatus("nakai-site-b-2", "127.0.2.12", "replica", "streaming"),
    ]
    return ClusterStatus(site="site-b", kind="standby", reachable=True, leader="nakai-site-b-1", members=members)


def _slot(wal_status: str | None = "reserved", oldest: str = "0/5000000", exists: bool = True) -> DrSlot:
    return DrSlot(
        name="kumiai_dr_site_b", exists=exists, wal_status=wal_status, restart_lsn="0/6000000", oldest_wal_lsn=oldest
    )


def test_an_invalidated_slot_asks_for_a_reclone_even_with_the_dr_site_down() -> None:
    reason = reclone_reason(_slot("lost"), _dr("?", reachable=False), None)
    assert reason is not None and "kumiai_dr_site_b was invalidated (wal_status lost)" in reason
    # Positive control: the same site down with a slot still holding its WAL is an outage, not a lost standby.
    assert reclone_reason(_slot("extended"), _dr("?", reachable=False), None) is None
    assert reclone_reason(_slot("unreserved"), _dr("?", reachable=False), None) is None


def test_a_standby_that_needs_wal_the_primary_no_longer_holds_needs_a_reclone() -> None:
    # The slot was made anew (after an invalidation), the standby leader is back but cannot stream.
    reason = reclone_reason(_slot(oldest="0/9000000"), _dr("running"), "0/4000150")
    assert reason is not None and "needs WAL from 0/4000150" in reason and "only from 0/9000000" in reason
    # The WAL is still there: a standby leader that has not reconnected yet catches up by itself.
    assert reclone_reason(_slot(oldest="0/3000000"), _dr("running"), "0/4000150") is None
    # Streaming, or nothing known about the standby's position: never a reclone.
    assert reclone_reason(_slot(oldest="0/9000000"), _dr("streaming"), "0/4000150") is None
    assert reclone_reason(_slot(oldest="0/9000000"), _dr("running"), None) is None
    assert reclone_reason(None, _dr("running"), "0/4000150") is None
    assert reclone_reason(_slot(exists=False, wal_status=None), _dr("streaming"), "0/4000150") is None


def test_wal_segment_names_give_their_first_position() -> None:
    assert segment_start("000000010000000000000009") == "0/9000000"
    assert segment_start("0000000200000001000000FF") == "1/FF000000"
    assert segment_start("00000002.history") is None
    assert segment_start("0000000100000000000000XY") is None


def test_status_names_the_command_that_reclones() -> None:
    protection = Protection(
        backup_schedule="0 2 * * *", retention_full=7, rpo_seconds=300, rto_seconds=3600, immutable_days=30
    )
    primary = ClusterStatus(
        site="site-a",
        kind="primary",
        reachable=True,
        leader="nakai-site-a-1",
        members=[MemberStatus("nakai-site-a-1", "127.0.1.11", "leader", "running")],
    )
    status = TownStatus(
        town="nakai", primary=primary, dr=_dr("streaming"), dr_lag=Lag(0, 0.0), backups={}, dr_slot=_slot()
    )
    now = datetime(2026, 11, 27, tzinfo=UTC)
    assert status_alerts(status, protection, now, 1800) == []
    status.dr_reclone = reclone_reason(_slot("lost"), status.dr, None)
    alerts = status_alerts(status, protection, now, 1800)
    assert len(alerts) == 1
    assert alerts[0].startswith("the DR standby at site-b needs a re-clone: the DR slot kumiai_dr_site_b")
    assert alerts[0].endswith("; run kumiai onboard nakai")
    assert status.as_dict()["dr_slot"]["wal_status"] == "reserved"

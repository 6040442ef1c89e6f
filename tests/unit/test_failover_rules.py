"""The pure parts of failover: WAL positions, the data-loss window, the [045] detection, the refusal to promote
over a healthy primary, evidence pages, and the command's checks of its input (nothing is changed on bad input)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_helpers import LAB, clean_env, kumiai

from kumiai.datalayer.topology import MemberLayout, RepoLayout, TownLayout
from kumiai.dr import wal
from kumiai.dr.failover import OldSite, archive_id, new_move, refusal, render_evidence, write_evidence
from kumiai.errors import InputError

# pg_waldump (PostgreSQL 15) output from a position on, as it prints it: two inserts and their commits.
WALDUMP = "".join(
    f"rmgr: {rmgr} len (rec/tot): {rec:>6}/{tot:>6}, tx: {tx:>10}, lsn: {lsn}, prev {prev}, desc: {desc}\n"
    for rmgr, rec, tot, tx, lsn, prev, desc in (
        ("Heap       ", 59, 59, 747, "0/0301A2B8", "0/0301A280", "INSERT+INIT off 1 flags 0x00, blkref #0: rel 1/2/3"),
        ("Transaction", 34, 34, 747, "0/0301A2F8", "0/0301A2B8", "COMMIT 2026-11-27 14:50:01.250000 UTC"),
        ("Heap       ", 59, 59, 748, "0/0301A320", "0/0301A2F8", "INSERT off 2 flags 0x00, blkref #0: rel 1/2/3"),
        ("Transaction", 34, 34, 748, "0/0301A360", "0/0301A320", "COMMIT 2026-11-27 14:50:01.750000 UTC"),
    )
)


def test_lsn_text_and_number_round_trip() -> None:
    assert wal.lsn_int("0/3000148") == 0x3000148
    assert wal.lsn_int("1/0") == 1 << 32
    assert wal.lsn_text(wal.lsn_int("2A/FF0010")) == "2A/FF0010"
    with pytest.raises(ValueError):
        wal.lsn_int("3000148")


def test_the_newest_timeline_ignores_history_files_and_partial_segments() -> None:
    names = ["000000010000000000000003", "00000002.history", "000000020000000000000003.partial", "archive_status"]
    assert wal.newest_timeline(names) == 1
    assert wal.newest_timeline([*names, "000000030000000000000004"]) == 3
    assert wal.newest_timeline(["archive_status"]) is None


def test_waldump_output_gives_the_end_of_wal_and_every_commit() -> None:
    tail = wal.parse_waldump(WALDUMP + "pg_waldump: error: error in WAL record at 0/301A388: invalid record length\n")
    assert tail is not None
    # The last record starts at 0x0301A360 and is 34 bytes long; the next one would start 8-byte aligned.
    assert tail.end == 0x0301A360 + 40
    assert [wal.lsn_text(c.lsn) for c in tail.commits] == ["0/301A2F8", "0/301A360"]
    assert tail.commits[1].time == datetime(2026, 11, 27, 14, 50, 1, 750000, tzinfo=UTC)
    assert wal.parse_waldump("pg_waldump: error: could not find file") is None


def test_no_record_after_the_start_means_the_wal_ends_there() -> None:
    err = "pg_waldump: error: could not find a valid record after 0/301A388\n"
    assert wal.nothing_after(err, 0x301A388) == wal.WalTail(end=0x301A388, commits=())
    assert wal.nothing_after("pg_waldump: error: could not open file", 0x301A388) is None


def test_the_loss_window_counts_the_commits_past_the_new_primarys_position() -> None:
    tail = wal.parse_waldump(WALDUMP)
    replayed = datetime(2026, 11, 27, 14, 50, 1, 0, tzinfo=UTC)
    # The new primary received everything up to the first commit's record, not the second.
    window = wal.loss_window(0x0301A320, replayed, tail, "test")
    assert window.bytes == 0x0301A388 - 0x0301A320
    assert window.commits == 1
    assert window.seconds == pytest.approx(0.75)
    assert window.old_end_lsn == "0/301A388"


def test_nothing_lost_when_the_new_primary_has_all_of_it() -> None:
    tail = wal.parse_waldump(WALDUMP)
    assert tail is not None
    window = wal.loss_window(tail.end, None, tail, "test")
    assert (window.bytes, window.seconds, window.commits) == (0, 0.0, 0)


def test_an_unreadable_old_site_gives_an_unknown_window_not_zero() -> None:
    window = wal.loss_window(0x0301A320, None, None, "unknown: the old site can be neither queried nor read")
    assert (window.bytes, window.seconds, window.commits) == (None, None, None)
    assert "unknown bytes, unknown seconds" in window.summary()


def _archiver(archived: datetime | None, failed: datetime | None, wal_name: str = "000000010000000000000007"):
    return wal.ArchiverState("000000010000000000000006", archived, wal_name if failed else None, failed)


def test_a_segment_failing_after_the_last_success_is_stuck() -> None:
    now = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    assert wal.failing_segment(_archiver(now, now + timedelta(seconds=1))) == "000000010000000000000007"
    assert wal.failing_segment(_archiver(None, now)) == "000000010000000000000007"


def test_an_old_failure_or_a_history_file_is_not_a_stuck_segment() -> None:
    now = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    assert wal.failing_segment(_archiver(now, now - timedelta(seconds=1))) is None
    assert wal.failing_segment(_archiver(now, None)) is None
    assert wal.failing_segment(_archiver(None, now, "00000002.history")) is None


def test_a_segment_is_confirmed_in_a_repo_only_by_its_own_name() -> None:
    listing = "000000010000000000000007-5e8f0c2a8d1b3a7d5c1e2f3a4b5c6d7e8f9a0b1c.zst\n"
    assert wal.segment_listed(listing, "000000010000000000000007")
    assert not wal.segment_listed(listing, "000000010000000000000070")
    assert not wal.segment_listed("", "000000010000000000000007")
    assert wal.segment_dir("000000010000000000000007") == "0000000100000000"


def test_the_archive_id_is_read_per_repo() -> None:
    info = [
        {
            "archive": [
                {"id": "15-1", "database": {"repo-key": 1}},
                {"id": "15-1", "database": {"repo-key": 2}},
                {"id": "15-2", "database": {"repo-key": 2}},
            ]
        }
    ]
    assert archive_id(info, 1) == "15-1"
    assert archive_id(info, 2) == "15-2"
    assert archive_id(info, 3) is None
    assert archive_id([], 1) is None


def test_a_reachable_writable_primary_is_not_promoted_over_without_force_and_reason() -> None:
    healthy = OldSite(patroni_answers=True, writers=("nakai-site-a-1",), services_answer=True)
    assert "accepts writes" in (refusal(healthy, force=False, reason=None) or "")
    assert refusal(healthy, force=True, reason=None) is not None
    assert refusal(healthy, force=True, reason="site-a cut off from site-b") is None


def test_a_lost_or_fenced_old_site_is_no_reason_to_refuse() -> None:
    lost = OldSite(patroni_answers=False, writers=(), services_answer=False)
    fenced = OldSite(patroni_answers=True, writers=(), services_answer=True)
    assert refusal(lost, force=False, reason=None) is None
    assert refusal(fenced, force=False, reason=None) is None


def _town() -> TownLayout:
    members = tuple(
        MemberLayout(town="nakai", site=site, index=i, address=f"127.0.{n}.{10 + i}", dir=Path(f"/lab/{site}/m{i}"))
        for n, site in ((1, "site-a"), (2, "site-b"))
        for i in (1, 2)
    )
    repos = (RepoLayout(1, "site-a", Path("/r1")), RepoLayout(2, "site-b", Path("/r2")))
    return TownLayout(id="nakai", slot=0, primary_site="site-a", dr_site="site-b", members=members, repos=repos)


class _NoTarget:
    """new_move only records its target; nothing is called on it."""


def test_a_move_is_from_the_other_site_whatever_the_placement_says_now() -> None:
    town = _town()
    move = new_move(_NoTarget(), town, "site-b", "emergency")  # type: ignore[arg-type]
    assert (move.from_site, move.to_site) == ("site-a", "site-b")
    assert (move.after.primary_site, move.after.dr_site) == ("site-b", "site-a")
    assert [m.name for m in move.old] == ["nakai-site-a-1", "nakai-site-a-2"]
    # Interrupted after writing the placement: the town file names site-b already; the move is the same.
    placed = replace(town, primary_site="site-b", dr_site="site-a")
    rerun = new_move(_NoTarget(), placed, "site-b", "emergency")  # type: ignore[arg-type]
    assert (rerun.from_site, rerun.to_site) == ("site-a", "site-b")


def test_a_site_not_holding_the_town_is_refused() -> None:
    with pytest.raises(InputError) as exc:
        new_move(_NoTarget(), _town(), "site-c", "planned")  # type: ignore[arg-type]
    assert "--to" in exc.value.message and "site-c" in exc.value.message


def test_the_evidence_page_says_unknown_rather_than_a_number_it_does_not_have() -> None:
    page = render_evidence(
        {
            "town": "nakai",
            "kind": "emergency",
            "from": "site-a",
            "to": "site-b",
            "result": "pass",
            "loss_window": wal.loss_window(0x10, None, None, "unknown: unreachable").as_dict(),
            "fencing": ["unreachable: neither Patroni nor the service manager answers"],
            "steps": [{"name": "nakai: emergency-failover: assess", "status": "ok", "seconds": 0.1, "detail": "a|b"}],
        }
    )
    assert "data-loss window bytes: unknown" in page
    assert "data-loss window seconds: unknown" in page
    assert "| nakai: emergency-failover: assess | ok | 0.1 | a\\|b |" in page


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["failover", "--to", "site-b"], "--town/--all"),
        (["failover", "--to", "site-b", "--town", "nakai", "--all"], "--town/--all"),
        (["failover", "--to", "site-b", "--town", "nakai", "--force"], "--reason"),
        (["failover", "--to", "site-b", "--town", "nakai", "--planned", "--force", "--reason", "x"], "--force"),
        (["failover", "--to", "site-z", "--town", "nakai"], "--to"),
        (["failback"], "--town/--all"),
    ],
)
def test_bad_failover_input_exits_2_and_changes_nothing(tmp_path: Path, args: list[str], field: str) -> None:
    env = clean_env(KUMIAI_STATE_DIR=str(tmp_path / "state"), KUMIAI_INVENTORY=str(LAB))
    result = kumiai(*args, "--yes", env=env)
    assert result.code == 2, result
    assert field in result.stderr and "Nothing was changed" in result.stderr
    assert not (tmp_path / "state" / "evidence").exists()


def test_evidence_is_written_as_json_and_markdown_named_by_town_and_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path))
    record = {"town": "nakai", "kind": "planned", "from": "site-a", "to": "site-b", "result": "pass", "steps": []}
    path = write_evidence(record)
    assert path.parent == tmp_path / "evidence" / "failovers"
    assert path.name.endswith("-nakai-planned.json")
    assert json.loads(path.read_text(encoding="utf-8")) == record
    assert path.with_suffix(".md").read_text(encoding="utf-8") == render_evidence(record)

"""Backups, pure parts: WAL positions, pgBackRest's verify report, staleness against a schedule, status alerts."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import clean_env, kumiai

from kumiai.datalayer import pgbackrest
from kumiai.datalayer.status import Backup, ClusterStatus, Lag, MemberStatus, TownStatus, parse_archive_max
from kumiai.datalayer.topology import MemberLayout
from kumiai.dr.backup import (
    RepoVerdict,
    archive_gap,
    backup_repo,
    failures,
    parse_verify,
    problem_lines,
    run_pgbackrest,
    segment_position,
    wal_segment,
)
from kumiai.dr.objectives import stale_reason, status_alerts
from kumiai.dr.runbook import load_runbook, register_actions, runbooks_dir
from kumiai.models import Protection

# What pgBackRest 2.45 printed in the lab for `verify --output=text --verbose`: a clean repo, then the same repo
# after 15 bytes of one backup file were overwritten. The exit code was 0 both times.
VERIFY_OK = """stanza: nakai
status: ok
  archiveId: 15-1, total WAL checked: 6, total valid WAL: 6
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261127-144904F, status: valid, total files checked: 970, total valid files: 970
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
"""
VERIFY_DAMAGED = """stanza: nakai
status: error
  archiveId: 15-1, total WAL checked: 7, total valid WAL: 7
    missing: 0, checksum invalid: 0, size invalid: 0, other: 0
  backup: 20261127-144913F, status: invalid, total files checked: 970, total valid files: 969
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
"""


def test_wal_segment_names() -> None:
    assert wal_segment(1, 134217728) == "000000010000000000000008"
    assert wal_segment(1, 134217727) == "000000010000000000000007"
    # 256 segments of 16 MiB make one 4 GiB log id
    assert wal_segment(3, 0x1_0000_0000 + 5 * 16 * 1024 * 1024 + 17) == "000000030000000100000005"
    assert segment_position("000000030000000100000005") == (3, 256 + 5)
    with pytest.raises(ValueError, match="not a WAL segment"):
        segment_position("00000002.history")


@pytest.mark.parametrize(
    ("archive_max", "current", "gap"),
    [
        ("000000010000000000000007", "000000010000000000000008", False),
        ("000000010000000000000008", "000000010000000000000008", False),
        ("0000000100000000000000FF", "000000010000000100000000", False),
        ("000000010000000000000006", "000000010000000000000008", True),
        # the primary was promoted to timeline 2; the archive still ends on timeline 1
        ("000000010000000000000009", "000000020000000000000009", True),
        (None, "000000010000000000000008", True),
    ],
)
def test_archive_gap(archive_max: str | None, current: str, gap: bool) -> None:
    assert (archive_gap(archive_max, current) is not None) is gap


def test_verify_report_clean() -> None:
    assert parse_verify(0, VERIFY_OK, "") == []


def test_verify_report_with_a_damaged_file_fails_although_pgbackrest_exits_0() -> None:
    assert parse_verify(0, VERIFY_DAMAGED, "") == [
        "verify status: error",
        "backup 20261127-144913F: invalid",
        "backup 20261127-144913F: checksum invalid 1",
    ]


def test_verify_without_a_report_or_with_errors_fails() -> None:
    assert parse_verify(0, "", "") == ["pgBackRest's verify printed no report"]
    stderr = "ERROR: [055]: unable to load info file '/x/archive/nakai/archive.info' or '.copy'\n"
    assert parse_verify(55, "", stderr) == [
        "ERROR: [055]: unable to load info file '/x/archive/nakai/archive.info' or '.copy'",
        "pgBackRest's verify printed no report",
    ]
    missing = VERIFY_OK.replace(
        "missing: 0, checksum invalid: 0, size invalid: 0, other: 0\n  backup",
        "missing: 2, checksum invalid: 0, size invalid: 0, other: 0\n  backup",
    )
    assert parse_verify(0, missing, "") == ["archiveId 15-1: missing 2"]


def test_problem_lines_drop_log_prefixes_and_keep_only_errors_and_warnings() -> None:
    text = (
        "2026-11-27 14:00:00.123 P00   INFO: check command begin 2.45\n"
        "2026-11-27 14:01:00.456 P00  ERROR: [082]: WAL segment 000000010000000000000009 was not archived before "
        "the 60000ms timeout\n"
        "WARN: repo2: unable to find a valid backup\n"
    )
    assert problem_lines(text) == [
        "ERROR: [082]: WAL segment 000000010000000000000009 was not archived before the 60000ms timeout",
        "WARN: repo2: unable to find a valid backup",
    ]


def test_newest_archived_wal_per_repo() -> None:
    info = [
        {
            "archive": [
                {"database": {"repo-key": 1}, "id": "15-1", "max": "000000010000000000000009"},
                {"database": {"repo-key": 2}, "id": "15-1", "max": "000000010000000000000007"},
                {"database": {"repo-key": 2}, "id": "15-2", "max": "000000010000000000000003"},
                {"database": {"repo-key": 3}, "id": "15-1", "max": "0000000100000000000000AA"},
            ]
        }
    ]
    assert parse_archive_max(info, [1, 2]) == {1: "000000010000000000000009", 2: "000000010000000000000007"}
    assert parse_archive_max([], [1, 2]) == {1: None, 2: None}


NOW = datetime(2026, 11, 27, 14, 44, 30, tzinfo=UTC)  # 23:44:30 in Japan


@pytest.mark.parametrize(
    ("schedule", "newest", "grace", "stale"),
    [
        # daily at 02:00 JST (17:00 UTC the day before): a backup after that is fresh, one before is stale
        ("0 2 * * *", datetime(2026, 11, 26, 17, 0, 20, tzinfo=UTC), 1800, False),
        ("0 2 * * *", datetime(2026, 11, 26, 16, 59, 0, tzinfo=UTC), 1800, True),
        # every minute: a backup from 14:40 is stale at once without grace, fresh with ten minutes of it
        ("* * * * *", datetime(2026, 11, 27, 14, 40, tzinfo=UTC), 0, True),
        ("* * * * *", datetime(2026, 11, 27, 14, 40, tzinfo=UTC), 600, False),
        # hourly at :30 JST; at 23:44:30 with 20 minutes of grace the 23:30 backup may still run, 22:30's is due
        ("30 * * * *", datetime(2026, 11, 27, 13, 31, tzinfo=UTC), 1200, False),
        ("30 * * * *", datetime(2026, 11, 27, 13, 29, tzinfo=UTC), 1200, True),
        ("30 * * * *", datetime(2026, 11, 27, 13, 31, tzinfo=UTC), 600, True),
        (" 0 0 30 2 *", datetime(2020, 1, 1, tzinfo=UTC), 0, False),
        ("0 2 * * *", None, 1800, True),
    ],
)
def test_staleness_against_the_schedule(schedule: str, newest: datetime | None, grace: int, stale: bool) -> None:
    assert (stale_reason(schedule, newest, NOW, grace) is not None) is stale


def _cluster(site: str, kind: str, leader_state: str, *, leader: bool = True) -> ClusterStatus:
    role = ("leader" if kind == "primary" else "standby_leader") if leader else "replica"
    return ClusterStatus(
        site=site,
        kind=kind,
        reachable=True,
        leader=f"n-{site}-1" if leader else None,
        members=[
            MemberStatus(f"n-{site}-1", "127.0.0.1", role, leader_state),
            MemberStatus(f"n-{site}-2", "127.0.0.2", "sync_standby" if kind == "primary" else "replica", "streaming"),
        ],
    )


def _backup(repo: int, stopped: str) -> Backup:
    return Backup(repo=repo, label=f"{repo}F", type="full", stopped=stopped, size_bytes=1, repo_size_bytes=1)


PROTECTION = Protection(
    backup_schedule="0 2 * * *", retention_full=7, rpo_seconds=300, rto_seconds=3600, immutable_days=30
)


def _status(lag_s: float = 0.0, repo2: str = "2026-11-26T18:00:00+00:00", leader: bool = True) -> TownStatus:
    return TownStatus(
        town="nakai",
        primary=_cluster("site-a", "primary", "running", leader=leader),
        dr=_cluster("site-b", "standby", "streaming"),
        dr_lag=Lag(bytes=4096 if lag_s else 0, seconds=lag_s),
        backups={1: _backup(1, "2026-11-26T17:05:00+00:00"), 2: _backup(2, repo2)},
    )


def test_a_town_within_its_targets_has_no_alert() -> None:
    assert status_alerts(_status(lag_s=299.0), PROTECTION, NOW, 1800) == []


def test_status_flags_lag_over_the_rpo_a_stale_backup_and_a_missing_leader() -> None:
    alerts = status_alerts(_status(lag_s=301.5), PROTECTION, NOW, 1800)
    assert alerts == ["cross-site lag 301.5 s (4096 B) exceeds the RPO of 300 s"]
    alerts = status_alerts(_status(repo2="2026-11-26T16:00:00+00:00"), PROTECTION, NOW, 1800)
    assert len(alerts) == 1 and alerts[0].startswith("repo2: newest backup finished 2026-11-26T16:00:00+00:00")
    alerts = status_alerts(_status(leader=False), PROTECTION, NOW, 1800)
    assert alerts == ["no healthy leader at site-a (primary cluster: leader none, not healthy)"]
    unknown = _status()
    unknown.dr_lag = None
    unknown.backups[1] = None
    assert status_alerts(unknown, PROTECTION, NOW, 1800) == [
        "cross-site lag to site-b unknown: the DR standby is not streaming from the primary",
        "repo1: no backup at all",
    ]


def test_failures_name_each_town_and_repo_that_is_not_ok() -> None:
    ok = RepoVerdict("kiyokawa", 1, "site-a")
    stale = RepoVerdict("kiyokawa", 2, "site-b", stale="newest backup is old")
    broken = RepoVerdict("nakai", 2, "site-b", broken=["verify status: error", "backup 1F: invalid"])
    assert [v.status for v in (ok, stale, broken)] == ["ok", "stale", "broken"]
    assert failures([ok, stale, broken]) == [
        "kiyokawa repo2 at site-b (stale: newest backup is old)",
        "nakai repo2 at site-b (broken: verify status: error, backup 1F: invalid)",
    ]


def test_backup_commands_refuse_bad_options_and_change_nothing(tmp_path: Path) -> None:
    env = clean_env(KUMIAI_STATE_DIR=str(tmp_path / "state"), KUMIAI_LAB_DIR=str(tmp_path / "lab"))
    bad_type = kumiai("backup", "run", "--type", "snapshot", env=env)
    assert bad_type.code == 2 and "--type" in bad_type.stderr and "allowed: full, diff, incr" in bad_type.stderr
    unknown = kumiai("backup", "verify", "--town", "atlantis", env=env)
    assert unknown.code == 2 and "atlantis" in unknown.stderr, unknown
    assert not (tmp_path / "state").exists() and not (tmp_path / "lab").exists()


def test_the_backup_verify_runbook_loads_with_every_step_known() -> None:
    register_actions()
    book = load_runbook(runbooks_dir() / "backup-verify.yaml")
    assert [s.action for s in book.steps] == [
        "backup-read-info",
        "backup-verify-repos",
        "backup-check-age",
        "backup-check-archive",
        "backup-check-locks",
        "backup-verdict",
    ]


def test_a_pgbackrest_command_that_overruns_is_a_failure_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def overrun(*args: object, timeout: float) -> None:
        raise subprocess.TimeoutExpired(["pgbackrest"], timeout)

    monkeypatch.setattr(pgbackrest, "run", overrun)
    member = MemberLayout("nakai", "site-a", 1, "127.0.1.11", Path("/var/tmp/lab/site-a/towns/nakai/member1"))
    result = backup_repo([], member, 2, "full")
    assert not result.ok and result.repo == 2
    assert result.error == "ERROR: pgbackrest backup did not finish within 21600 s and was stopped"
    out = run_pgbackrest([], member, "--repo=1", "verify", timeout=0.0)
    assert parse_verify(out.returncode, out.stdout, out.stderr) == [
        "ERROR: pgbackrest verify did not finish within 0 s and was stopped",
        "pgBackRest's verify printed no report",
    ]

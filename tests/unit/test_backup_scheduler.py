"""The backup scheduler: job files, when jobs fire, bad files skipped; and systemd agreeing on the firing times."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest

from kumiai.datalayer.topology import ControllerTLS, MemberLayout
from kumiai.dr import scheduler
from kumiai.dr.backup import RepoBackup
from kumiai.dr.schedule import next_fire, systemd_calendar
from kumiai.dr.scheduler import BackupJob, Scheduler, job_run_as, load_job, run_job

ROOT = Path(__file__).resolve().parents[2]


def job_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "town": "nakai",
        "site": "site-a",
        "user": "kumiai-nakai",
        "index": 2,
        "address": "127.0.1.12",
        "member_dir": "/var/tmp/lab/site-a/towns/nakai/member2",
        "schedule": "* * * * *",
        "repos": [1, 2],
        "type": "full",
    }
    data.update(changes)
    return data


def write_job(directory: Path, name: str, data: dict[str, Any] | str) -> Path:
    path = directory / f"{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_a_job_names_its_member(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, "nakai-site-a-2", job_data()))
    member_dir = Path("/var/tmp/lab/site-a/towns/nakai/member2")
    assert job.member == MemberLayout(
        "nakai",
        "site-a",
        2,
        "127.0.1.12",
        member_dir,
        ControllerTLS(
            member_dir / "tls" / "ca.crt", member_dir / "tls" / "client.crt", member_dir / "tls" / "client.key"
        ),
    )
    # Patroni's REST API is HTTPS, verified against the CA installed beside the member (plain HTTP is refused).
    assert job.member.rest_url == "https://127.0.1.12:8008"
    assert job.member.pgbackrest_config == Path("/var/tmp/lab/site-a/towns/nakai/member2/pgbackrest.conf")


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"member_dir": "towns/nakai"}, "member_dir"),
        ({"repos": []}, "repos"),
        ({"type": "snapshot"}, "type"),
        ({"town": "Nakai; rm -rf /"}, "town"),
        ({"command": "/bin/sh"}, "command"),
        ({"user": "root"}, "user"),
        ({"user": "postgres"}, "user"),
        ({"user": "kumiai-nakai --reuid=0"}, "user"),
    ],
)
def test_bad_jobs_are_refused_naming_the_field(tmp_path: Path, changes: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        load_job(write_job(tmp_path, "bad", job_data(**changes)))


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 27, 10, minute, second, tzinfo=UTC)


def test_a_job_fires_once_per_scheduled_minute_from_when_it_was_first_seen(tmp_path: Path) -> None:
    write_job(tmp_path, "nakai-site-a-2", job_data())
    sched = Scheduler(tmp_path)
    assert sched.due(at(0, 30)) == []  # first seen: counting starts now, 10:00 is not caught up on
    assert [name for name, _ in sched.due(at(1, 3))] == ["nakai-site-a-2.json"]
    assert sched.due(at(1, 8)) == []
    assert sched.due(at(1, 59)) == []
    # a tick that comes late (the machine was busy) still fires, once, for the minutes it missed
    assert len(sched.due(at(4, 2))) == 1
    assert sched.due(at(4, 7)) == []


def test_a_job_file_added_or_changed_is_read_without_restarting(tmp_path: Path) -> None:
    sched = Scheduler(tmp_path)
    assert sched.due(at(0, 30)) == []
    write_job(tmp_path, "manazuru-site-a-1", job_data(town="manazuru", index=1, schedule="*/5 * * * *"))
    assert sched.due(at(1, 3)) == []  # first seen at 10:01:03; next firing 10:05
    assert [job.town for _, job in sched.due(at(5, 4))] == ["manazuru"]
    # a changed schedule counts from the change: every minute from 10:06:02 fires first at 10:07, not at once
    write_job(tmp_path, "manazuru-site-a-1", job_data(town="manazuru", index=1, schedule="* * * * *"))
    assert sched.due(at(6, 2)) == []
    assert [job.town for _, job in sched.due(at(7, 1))] == ["manazuru"]
    (tmp_path / "manazuru-site-a-1.json").unlink()
    assert sched.due(at(10, 4)) == []
    assert sched.since == {} and sched.known == {}


def test_a_bad_job_file_is_skipped_with_one_log_line_and_the_others_still_fire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_job(tmp_path, "nakai-site-a-2", job_data())
    write_job(tmp_path, "broken", "{not json")
    sched = Scheduler(tmp_path)
    with caplog.at_level(logging.ERROR, logger="kumiai-scheduler"):
        sched.due(at(0, 30))
        assert [name for name, _ in sched.due(at(1, 3))] == ["nakai-site-a-2.json"]
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping job file {tmp_path / 'broken.json'}: file: Invalid JSON: key must be a string at line 1 column 2"
    ]


def test_a_job_backs_up_each_repo_only_where_its_member_leads(monkeypatch: pytest.MonkeyPatch) -> None:
    job = BackupJob.model_validate(job_data(type="diff"))
    calls: list[tuple[str, int, str]] = []

    def fake_backup(run_as: list[str], member: MemberLayout, repo: int, kind: str) -> RepoBackup:
        calls.append((member.name, repo, kind))
        return RepoBackup(member.town, repo, kind, ok=True, seconds=0.1, label=f"{repo}D")

    monkeypatch.setattr(scheduler, "backup_repo", fake_backup)
    monkeypatch.setattr(scheduler, "is_primary", lambda member: False)
    assert run_job(job) == []
    assert calls == []
    monkeypatch.setattr(scheduler, "is_primary", lambda member: member.address == "127.0.1.12")
    assert [r.label for r in run_job(job)] == ["1D", "2D"]
    assert calls == [("nakai-site-a-2", 1, "diff"), ("nakai-site-a-2", 2, "diff")]


def test_a_job_runs_as_the_towns_user_dropped_from_root_or_as_itself() -> None:
    job = BackupJob.model_validate(job_data())
    assert job_run_as(job, euid=0) == [
        "/usr/bin/setpriv",
        "--reuid=kumiai-nakai",
        "--regid=kumiai-nakai",
        "--init-groups",
    ]
    assert job_run_as(job, euid=1234) == []


def test_once_exits_1_when_a_backup_fails_and_2_on_a_bad_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(run_as: list[str], member: MemberLayout, repo: int, kind: str) -> RepoBackup:
        return RepoBackup(member.town, repo, kind, ok=repo == 1, seconds=0.1, error=None if repo == 1 else "lock")

    monkeypatch.setattr(scheduler, "backup_repo", failing)
    monkeypatch.setattr(scheduler, "is_primary", lambda member: True)
    assert scheduler.main(["once", str(write_job(tmp_path, "ok", job_data()))]) == 1
    assert scheduler.main(["once", str(write_job(tmp_path, "bad", "[]"))]) == 2


# systemd-analyze computes a calendar's next elapses from a base time without a running systemd.
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
ELAPSE = re.compile(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


def systemd_elapses(calendar: str, base: datetime, count: int) -> list[datetime]:
    assert SYSTEMD_ANALYZE is not None
    out = subprocess.run(
        [SYSTEMD_ANALYZE, "calendar", f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC", f"--iterations={count}", calendar],
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    ).stdout
    return [datetime.fromisoformat(f"{m}+00:00") for m in ELAPSE.findall(out)]


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(
    "expression",
    ["0 2 * * *", "*/20 9-17 * * 1-5", "30 4 1,15 * 5", "0 0 * * */2", "15 3 29 2 *", "5/25 */6 * 1-3,10 0,6"],
)
def test_the_systemd_timer_fires_when_the_scheduler_does(expression: str) -> None:
    base = datetime(2026, 11, 27, 14, 44, 30, tzinfo=UTC)
    count = 6
    theirs = sorted({t for cal in systemd_calendar(expression) for t in systemd_elapses(cal, base, count)})[:count]
    ours: list[datetime] = []
    moment = base
    for _ in range(count):
        fire = next_fire(expression, moment)
        assert fire is not None
        ours.append(fire.astimezone(UTC))
        moment = fire
    assert ours == theirs
    assert ours[0] > base and ours[-1] - ours[0] > timedelta(0)


def render_role_template(name: str, **variables: Any) -> str:
    """A template of roles/backup_schedule as Ansible renders it (its filter plugin loaded the same way)."""
    role = ROOT / "roles" / "backup_schedule"
    spec = importlib.util.spec_from_file_location("backup_schedule_filters", role / "filter_plugins" / "cron.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(role / "templates"), undefined=jinja2.StrictUndefined)
    env.filters.update(module.FilterModule().filters())
    return env.get_template(name).render(**variables)


def test_the_production_timer_and_service_of_a_job() -> None:
    variables = {
        "ansible_managed": "managed",
        "backup_schedule_town": "nakai",
        "backup_schedule_cron": "30 4 1,15 * 5",
        "backup_schedule_user": "kumiai-nakai",
        "backup_schedule_bin_dir": "/opt/kumiai/bin",
        "_backup_schedule_name": "nakai-site-a-1",
        "_backup_schedule_unit": "kumiai-backup-nakai-site-a-1",
        "_backup_schedule_job_file": "/etc/kumiai/backup-jobs/nakai-site-a-1.json",
    }
    timer = render_role_template("backup.timer.j2", **variables)
    assert [line for line in timer.splitlines() if line.startswith("OnCalendar=")] == [
        "OnCalendar=*-*-01,15 04:30:00 Asia/Tokyo",
        "OnCalendar=Fri *-*-* 04:30:00 Asia/Tokyo",
    ]
    assert "Unit=kumiai-backup-nakai-site-a-1.service" in timer and "Persistent=true" in timer
    service = render_role_template("backup.service.j2", **variables)
    assert "Type=oneshot" in service and "User=kumiai-nakai" in service
    assert "ExecStart=/opt/kumiai/bin/kumiai-scheduler once /etc/kumiai/backup-jobs/nakai-site-a-1.json" in service

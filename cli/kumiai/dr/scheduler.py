"""`kumiai-scheduler`: the towns' scheduled backups, run on the hosts of each site.

Each town member has a job file (`<jobs dir>/<member>.json`, written by the role backup_schedule): the town, the
member, its cron schedule and the repos. When the schedule fires, the job backs up only if its member is the
leader of a primary cluster (Patroni answers 200 on /primary), so exactly one member of the town backs up, at the
town's primary site, and after a failover the other site's jobs take over by themselves.

- `kumiai-scheduler run --jobs DIR`: the lab's long-lived scheduler, one per site under its supervisor. It re-reads
  DIR on every tick, so onboarding a town never restarts it; a job file it cannot read is skipped with a log line.
- `kumiai-scheduler once FILE`: one firing of one job, for production, where a systemd timer per job fires it.

Each town's backups run as the town's own OS user (the job's `user`, owning the town's data and repos): the lab's
scheduler runs as root and drops to that user for each job; a systemd timer's service already runs as it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kumiai.datalayer.target import as_user
from kumiai.datalayer.topology import ControllerTLS, MemberLayout
from kumiai.dr.backup import RepoBackup, backup_repo, is_primary
from kumiai.dr.schedule import next_fire, parse

log = logging.getLogger("kumiai-scheduler")

TICK_S = 5.0
NAME = r"^[a-z][a-z0-9-]{0,62}$"
# A Linux user name as kumiai gives a town (kumiai.datalayer.topology.os_user).
USER = r"^[a-z_][a-z0-9_-]{0,31}$"


class BackupJob(BaseModel):
    """One member's scheduled backup, as the role writes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    town: Annotated[str, Field(pattern=NAME)]
    site: Annotated[str, Field(pattern=NAME)]
    user: Annotated[str, Field(pattern=USER)]
    index: Annotated[int, Field(ge=1, le=9)]
    address: IPv4Address
    member_dir: Path
    schedule: str
    repos: Annotated[list[Annotated[int, Field(ge=1, le=256)]], Field(min_length=1)]
    type: Literal["full", "diff", "incr"] = "full"

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse(value)
        return value

    @field_validator("user")
    @classmethod
    def _not_shared(cls, value: str) -> str:
        if value in ("root", "postgres"):
            raise ValueError("must be the town's own OS user, not root or postgres")
        return value

    @field_validator("member_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @property
    def member(self) -> MemberLayout:
        """The job's member, its REST API verified against the CA the role installed beside it (the scheduler asks
        only whether the member leads: a GET that needs no credentials)."""
        tls = self.member_dir / "tls"
        return MemberLayout(
            town=self.town,
            site=self.site,
            index=self.index,
            address=str(self.address),
            dir=self.member_dir,
            tls=ControllerTLS(ca_file=tls / "ca.crt", cert=tls / "client.crt", key=tls / "client.key"),
        )


def load_job(path: Path) -> BackupJob:
    """A job file; ValueError (naming what is wrong) when it cannot be used."""
    try:
        return BackupJob.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ValueError(where) from None


def job_run_as(job: BackupJob, euid: int | None = None) -> list[str]:
    """How the job's pgBackRest runs: as root, dropped to the job's user; as any other user (a systemd service with
    `User=` the job's user), as itself."""
    return as_user(job.user) if (os.geteuid() if euid is None else euid) == 0 else []


def run_job(job: BackupJob, run_as: Sequence[str] | None = None) -> list[RepoBackup]:
    """One firing: back up into every repo of the job if its member leads a primary cluster now."""
    if run_as is None:
        run_as = job_run_as(job)
    member = job.member
    if not is_primary(member):
        log.info("%s: %s is not the leader of a primary cluster: no backup from here", job.town, member.name)
        return []
    results = []
    for repo in job.repos:
        result = backup_repo(run_as, member, repo, job.type)
        if result.ok:
            log.info("%s repo%d: %s backup %s in %.1f s", job.town, repo, job.type, result.label, result.seconds)
        else:
            log.error(
                "%s repo%d: %s backup failed after %.1f s: %s", job.town, repo, job.type, result.seconds, result.error
            )
        results.append(result)
    return results


class Scheduler:
    """Fires the jobs of one directory when their schedules say so; one tick at a time (see `tick`)."""

    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = jobs_dir
        self.since: dict[str, datetime] = {}  # job file -> firings up to this time are handled
        self.known: dict[str, BackupJob] = {}  # job file -> the job as last read
        self.reported: dict[str, float] = {}  # bad job file -> its mtime when reported (one log line per version)
        self.running: dict[str, threading.Thread] = {}

    def jobs(self) -> dict[str, BackupJob]:
        jobs = {}
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                jobs[path.name] = load_job(path)
                self.reported.pop(path.name, None)
            except ValueError as exc:
                mtime = path.stat().st_mtime if path.exists() else 0.0
                if self.reported.get(path.name) != mtime:
                    log.error("skipping job file %s: %s", path, exc)
                    self.reported[path.name] = mtime
        return jobs

    def due(self, now: datetime) -> list[tuple[str, BackupJob]]:
        """Jobs whose schedule fired since the last tick (a job seen for the first time, or changed, starts
        counting now: a new schedule is not caught up on)."""
        jobs = self.jobs()
        for gone in set(self.since) - set(jobs):
            del self.since[gone]
            del self.known[gone]
        due = []
        for name, job in jobs.items():
            if self.known.get(name) != job:
                self.known[name] = job
                self.since[name] = now
            since = self.since[name]
            fire = next_fire(job.schedule, since)
            if fire is not None and fire <= now:
                self.since[name] = now
                due.append((name, job))
        return due

    def tick(self, now: datetime) -> None:
        for name, job in self.due(now):
            previous = self.running.get(name)
            if previous is not None and previous.is_alive():
                log.warning("%s: the previous backup of %s still runs; this firing is skipped", job.town, name)
                continue
            thread = threading.Thread(target=run_job, args=(job,), name=name, daemon=True)
            self.running[name] = thread
            thread.start()


def serve(jobs_dir: Path, tick_s: float = TICK_S) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    scheduler = Scheduler(jobs_dir)
    log.info("scheduling the backup jobs of %s every %.0f s", jobs_dir, tick_s)
    while not stop.is_set():
        try:
            scheduler.tick(datetime.now(UTC))
        except OSError as exc:  # the directory itself unreadable for a moment: keep running, say so
            log.error("cannot read %s: %s", jobs_dir, exc)
        stop.wait(tick_s)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kumiai-scheduler", description="Scheduled backups of the towns.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the jobs of a directory on their schedules, until stopped")
    run.add_argument("--jobs", type=Path, required=True, help="directory of job files (<member>.json)")
    run.add_argument("--tick", type=float, default=TICK_S, help="seconds between looks at the schedules")
    once = commands.add_parser("once", help="fire one job now (what a systemd timer runs)")
    once.add_argument("job", type=Path, help="job file")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "run":
        serve(args.jobs, args.tick)
        return 0
    try:
        job = load_job(args.job)
    except ValueError as exc:
        log.error("cannot use job file %s: %s", args.job, exc)
        return 2
    return 1 if any(not r.ok for r in run_job(job)) else 0

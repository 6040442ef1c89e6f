"""Backups of the towns: taken on demand (`kumiai backup run`) and by the scheduler, listed, and verified.

A backup runs where the town's leader is (pgBackRest backs up from the primary), one pgBackRest command per repo;
pgBackRest expires old backups after each one by the repo's `retention-full`. Verification (`kumiai backup
verify`, runbook dr-runbooks/backup-verify.yaml) asks, for every repo of every town: does pgBackRest's verify find
the backups and the archive intact (its output is read, not only its exit code: it has exited 0 on errors), is the
newest backup as recent as the town's schedule requires, and does the repo's WAL archive reach the primary's
current segment (pgBackRest's check forces a WAL switch and waits for it to be archived).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kumiai import paths
from kumiai.datalayer import pgbackrest
from kumiai.datalayer.patroni import open_member
from kumiai.datalayer.status import Backup, parse_all_backups, parse_archive_max
from kumiai.datalayer.target import Target
from kumiai.datalayer.topology import MemberLayout, Topology, TownLayout
from kumiai.dr.failover import leader_of
from kumiai.dr.objectives import stale_reason
from kumiai.dr.runbook import RunContext, action
from kumiai.dr.wal import SEGMENT_BYTES, SEGMENT_NAME, SEGMENTS_PER_LOG
from kumiai.objectstore.evidence import copy_evidence

BACKUP_TYPES = ("full", "diff", "incr")
# pgBackRest prints its failures as "ERROR: [code]: text" and "WARN: text"; the rest of its output is progress.
PROBLEM_LINE = re.compile(r"^(?:P\d+\s+)?(ERROR|WARN):\s*(.*)$")


# --- pure -------------------------------------------------------------------------------------------------------


def wal_segment(timeline: int, lsn: int) -> str:
    """The WAL file name holding an LSN on a timeline (PostgreSQL's pg_walfile_name)."""
    number = lsn // SEGMENT_BYTES
    return f"{timeline:08X}{number // SEGMENTS_PER_LOG:08X}{number % SEGMENTS_PER_LOG:08X}"


def segment_position(name: str) -> tuple[int, int]:
    """A WAL file name -> (timeline, segment number)."""
    match = SEGMENT_NAME.match(name)
    if match is None:
        raise ValueError(f"not a WAL segment name: {name!r}")
    timeline, log, segment = (int(g, 16) for g in match.groups())
    return timeline, log * SEGMENTS_PER_LOG + segment


def archive_gap(archive_max: str | None, current: str) -> str | None:
    """Why a repo's archive does not reach the segment before the primary's current one, or None when it does.

    The current segment is still being written (it is archived when it is switched), so the one before it must be
    in every repo."""
    if archive_max is None:
        return f"no WAL archived at all (the primary writes {current})"
    have_tl, have = segment_position(archive_max)
    want_tl, want = segment_position(current)
    if have_tl < want_tl or have < want - 1:
        return f"WAL archive ends at {archive_max}, the primary writes {current}: segments missing in between"
    return None


def problem_lines(output: str) -> list[str]:
    """pgBackRest's ERROR and WARN lines, without its log prefixes."""
    lines = []
    for raw in output.splitlines():
        text = raw.strip()
        # file log format: "2026-11-27 14:00:00.000 P00   WARN: ..."; console: "WARN: ..."
        text = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+", "", text)
        match = PROBLEM_LINE.match(text)
        if match:
            lines.append(f"{match.group(1)}: {match.group(2)}")
    return lines


def parse_verify(returncode: int, stdout: str, stderr: str) -> list[str]:
    """What is wrong according to `pgbackrest verify --output=text --verbose` (its exit code and its report); []
    when every backup and WAL segment is valid.

    The report says `status: error` and counts invalid files per archive id and backup; a clean report says
    `status: ok` and every count is 0."""
    problems = problem_lines(stderr) + problem_lines(stdout)
    status = re.search(r"^\s*status:\s*(\S+)", stdout, re.MULTILINE)
    if status is None:
        problems.append("pgBackRest's verify printed no report")
    elif status.group(1) != "ok":
        problems.append(f"verify status: {status.group(1)}")
    current = ""
    for line in stdout.splitlines():
        what = re.match(r"\s*(archiveId|backup):\s*([^,]+)", line)
        if what:
            current = f"{what.group(1)} {what.group(2).strip()}"
            bad = re.search(r"status:\s*(\S+)", line)
            if what.group(1) == "backup" and bad and bad.group(1).rstrip(",") != "valid":
                problems.append(f"{current}: {bad.group(1).rstrip(',')}")
        for name, count in re.findall(r"(missing|checksum invalid|size invalid|other):\s*(\d+)", line):
            if int(count) > 0:
                problems.append(f"{current or 'repo'}: {name} {count}")
    if returncode != 0 and not problems:
        problems.append(f"verify exited {returncode}")
    return list(dict.fromkeys(problems))


@dataclass
class RepoVerdict:
    """One repo of one town, as `backup verify` found it."""

    town: str
    repo: int
    site: str
    newest: Backup | None = None
    archive_max: str | None = None
    broken: list[str] = field(default_factory=list)
    stale: str | None = None
    verify_report: str = ""

    @property
    def status(self) -> str:
        return "broken" if self.broken else "stale" if self.stale else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "town": self.town,
            "repo": self.repo,
            "site": self.site,
            "status": self.status,
            "newest": asdict(self.newest) if self.newest else None,
            "archive_max": self.archive_max,
            "broken": self.broken,
            "stale": self.stale,
            "verify_report": self.verify_report,
        }


def failures(verdicts: Sequence[RepoVerdict]) -> list[str]:
    """ "town repoN (status: first reason)" for each repo that is not ok."""
    return [
        f"{v.town} repo{v.repo} at {v.site} ({v.status}: {', '.join(v.broken) if v.broken else v.stale})"
        for v in verdicts
        if v.status != "ok"
    ]


# --- backups ----------------------------------------------------------------------------------------------------


def primary_leader(town: TownLayout) -> MemberLayout | None:
    """The member leading the town's primary site as a primary now, per Patroni; None when there is none."""
    leader, role = leader_of(town.at(town.primary_site))
    return leader if role == "leader" else None


def is_primary(member: MemberLayout, timeout: float = 3.0) -> bool:
    """Patroni answers 200 on /primary only on the leader of a cluster that is not a standby cluster."""
    try:
        with open_member(member, "/primary", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def run_pgbackrest(
    run_as: Sequence[str], member: MemberLayout, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """pgbackrest.run; a command still running at the timeout is killed and reported as an error like its own."""
    try:
        return pgbackrest.run(run_as, member, *args, timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        message = f"ERROR: pgbackrest {args[-1]} did not finish within {timeout:.0f} s and was stopped"
        return subprocess.CompletedProcess(list(args), -1, "", message)


@dataclass
class RepoBackup:
    town: str
    repo: int
    type: str
    ok: bool
    seconds: float
    label: str | None = None
    error: str | None = None


def backup_repo(run_as: Sequence[str], member: MemberLayout, repo: int, kind: str) -> RepoBackup:
    """One pgBackRest backup into one repo from this member (the leader); pgBackRest expires old ones after it."""
    t0 = time.perf_counter()
    out = run_pgbackrest(run_as, member, f"--repo={repo}", f"--type={kind}", "backup", timeout=6 * 3600)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        error = "; ".join(problem_lines(out.stderr + out.stdout)) or f"pgbackrest exited {out.returncode}"
        return RepoBackup(member.town, repo, kind, ok=False, seconds=seconds, error=error)
    newest = [b for b in parse_all_backups(pgbackrest.info(run_as, member)) if b.repo == repo]
    return RepoBackup(member.town, repo, kind, ok=True, seconds=seconds, label=newest[-1].label if newest else None)


def backup_towns(
    target: Target, topology: Topology, town_ids: Sequence[str], kind: str, repo: int | None
) -> list[RepoBackup]:
    """Back up each town from its primary site's leader into `repo` (None: every repo of the town)."""
    results = []
    for tid in town_ids:
        town = topology.towns[tid]
        leader = primary_leader(town)
        repos = [r.number for r in town.repos if repo is None or r.number == repo]
        if leader is None:
            results += [
                RepoBackup(tid, n, kind, ok=False, seconds=0.0, error=f"no leader at {town.primary_site}")
                for n in repos
            ]
            continue
        results += [backup_repo(target.run_as(tid), leader, n, kind) for n in repos]
    return results


def list_backups(target: Target, topology: Topology, town_ids: Sequence[str]) -> dict[str, list[Backup]]:
    """Every backup of each town in every repo, oldest first."""
    return {
        tid: parse_all_backups(
            pgbackrest.info(target.run_as(tid), topology.towns[tid].at(topology.towns[tid].primary_site)[0])
        )
        for tid in town_ids
    }


# --- verification: the actions of dr-runbooks/backup-verify.yaml --------------------------------------------------
# ctx.params: target, topology, towns (ids), now (aware datetime), grace_s. ctx.values["verdicts"]: RepoVerdict by
# (town, repo), filled in step by step.


def run_verdicts(ctx: RunContext) -> dict[tuple[str, int], RepoVerdict]:
    verdicts: dict[tuple[str, int], RepoVerdict] = ctx.values.setdefault("verdicts", {})
    return verdicts


def run_towns(ctx: RunContext) -> list[TownLayout]:
    topology: Topology = ctx.params["topology"]
    return [topology.towns[t] for t in ctx.params["towns"]]


def _run_as(ctx: RunContext, town: TownLayout) -> list[str]:
    target: Target = ctx.params["target"]
    return target.run_as(town.id)


def _info(ctx: RunContext, town: TownLayout) -> list[dict[str, Any]]:
    return pgbackrest.info(_run_as(ctx, town), primary_leader(town) or town.at(town.primary_site)[0])


@action("backup-read-info")
def read_info(ctx: RunContext) -> str:
    """pgBackRest's view of each repo: its status, newest backup and newest archived WAL."""
    verdicts = run_verdicts(ctx)
    for town in run_towns(ctx):
        info = _info(ctx, town)
        stanza = info[0] if info else {}
        repo_status = {int(r.get("key", 0)): r.get("status", {}) for r in stanza.get("repo", [])}
        newest = {b.repo: b for b in parse_all_backups(info)}
        archive_max = parse_archive_max(info, [r.number for r in town.repos])
        for repo in town.repos:
            verdict = verdicts.setdefault((town.id, repo.number), RepoVerdict(town.id, repo.number, repo.site))
            verdict.newest = newest.get(repo.number)
            verdict.archive_max = archive_max[repo.number]
            state = repo_status.get(repo.number)
            if not info:
                verdict.broken.append("pgBackRest's info cannot read the stanza")
            elif state is None:
                verdict.broken.append("the stanza has no such repo")
            elif state.get("code") != 0:
                verdict.broken.append(f"repo status: {state.get('message', state.get('code'))}")
    return f"{len(verdicts)} repos of {len(ctx.params['towns'])} towns"


@action("backup-verify-repos")
def verify_repos(ctx: RunContext) -> str:
    """pgBackRest's verify of every repo: every backup file and WAL segment against its checksum."""
    verdicts = run_verdicts(ctx)
    for town in run_towns(ctx):
        member = primary_leader(town) or town.at(town.primary_site)[0]
        for repo in town.repos:
            out = run_pgbackrest(
                _run_as(ctx, town),
                member,
                f"--repo={repo.number}",
                "--output=text",
                "--verbose",
                "verify",
                timeout=ctx.remaining(),
            )
            verdict = verdicts[(town.id, repo.number)]
            verdict.verify_report = out.stdout.strip()
            verdict.broken += parse_verify(out.returncode, out.stdout, out.stderr)
    bad = sum(1 for v in verdicts.values() if v.broken)
    return f"{len(verdicts) - bad} repos verified intact, {bad} not"


@action("backup-check-age")
def check_age(ctx: RunContext) -> str:
    """The newest backup of each repo against the town's schedule."""
    now: datetime = ctx.params["now"]
    grace: float = ctx.params["grace_s"]
    inv = ctx.params["target"].inventory
    verdicts = run_verdicts(ctx)
    for town in run_towns(ctx):
        schedule = inv.towns[town.id].protection.backup_schedule
        for repo in town.repos:
            verdict = verdicts[(town.id, repo.number)]
            newest = verdict.newest.stopped_at if verdict.newest else None
            verdict.stale = stale_reason(schedule, newest, now, grace)
    stale = sum(1 for v in verdicts.values() if v.stale)
    return f"{stale} stale repos"


def current_segment(member: MemberLayout, timeout: float = 5.0) -> str | None:
    """The WAL segment the primary writes now, from Patroni's member status (its timeline and WAL position)."""
    try:
        with open_member(member, "/patroni", timeout=timeout) as resp:
            state = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    location = (state.get("xlog") or {}).get("location")
    timeline = state.get("timeline")
    if not isinstance(location, int) or not isinstance(timeline, int):
        return None
    return wal_segment(timeline, location)


@action("backup-check-archive")
def check_archive(ctx: RunContext) -> str:
    """pgBackRest's check at the leader (forces a WAL switch, waits until it is archived), then every repo's
    archive against the primary's current segment."""
    verdicts = run_verdicts(ctx)
    checked = 0
    for town in run_towns(ctx):
        leader = primary_leader(town)
        repos = [verdicts[(town.id, r.number)] for r in town.repos]
        if leader is None:
            for v in repos:
                v.broken.append(f"WAL archive not checked: no leader at {town.primary_site}")
            continue
        out = run_pgbackrest(_run_as(ctx, town), leader, "check", timeout=ctx.remaining())
        if out.returncode != 0:
            errors = "; ".join(problem_lines(out.stderr + out.stdout)) or f"exited {out.returncode}"
            for v in repos:
                # check names the repo it failed on ("repo2: ..."); a failure naming none concerns every repo
                if f"repo{v.repo}" in errors or not re.search(r"repo\d", errors):
                    v.broken.append(f"pgbackrest check: {errors}")
        current = current_segment(leader)
        archive_max = parse_archive_max(_info(ctx, town), [r.number for r in town.repos])
        for v in repos:
            v.archive_max = archive_max[v.repo]
            gap = archive_gap(v.archive_max, current) if current else f"cannot read {leader.name}'s WAL position"
            if gap:
                v.broken.append(gap)
        checked += 1
    return f"archives of {checked} towns checked"


@action("backup-verdict")
def verdict(ctx: RunContext) -> str:
    """The outcome: every repo ok, or which towns and repos are stale or broken."""
    verdicts = list(run_verdicts(ctx).values())
    ctx.values["failures"] = failures(verdicts)
    return f"{len(verdicts) - len(ctx.values['failures'])} of {len(verdicts)} repos ok"


def write_verify_evidence(verdicts: Sequence[RepoVerdict], *, run_id: str, checked_at: datetime, verdict: str) -> Path:
    """One JSON record per verification under the evidence directory (kept when the lab is purged)."""
    where = paths.evidence_dir() / "backup-verify"
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{checked_at:%Y%m%dT%H%M%SZ}-{run_id[:8]}.json"
    record = {"run": run_id, "checked_at": checked_at.isoformat(), "verdict": verdict}
    path.write_text(json.dumps({**record, "repos": [v.as_dict() for v in verdicts]}, indent=2) + "\n", "utf-8")
    copy_evidence(path)
    return path

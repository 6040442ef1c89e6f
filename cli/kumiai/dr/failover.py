"""Moving a town's primary to another site: planned failover, emergency failover (fenced) and failback.

The procedures are the runbooks dr-runbooks/{planned-failover,emergency-failover,failback}.yaml; this module holds
their actions and checks. Everything goes through the data-layer target and Patroni's REST API: a site is
demoted by giving its cluster a `standby_cluster` section and promoted by removing it (kumiai.datalayer.patroni).
The order is what makes it safe: the placement (desired state) is written first, the old site is demoted or
fenced before the new one is promoted, and only then does the new site take writes.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kumiai import paths
from kumiai.datalayer import pgbackrest
from kumiai.datalayer.onboard import limit_for, onboarded
from kumiai.datalayer.patroni import cluster_view, desired_config, open_member, patch_config
from kumiai.datalayer.secrets import TownSecrets, load_town_secrets
from kumiai.datalayer.sql import query_one
from kumiai.datalayer.status import parse_cluster
from kumiai.datalayer.target import Target
from kumiai.datalayer.topology import PG_PORT, MemberLayout, TownLayout, slot_name
from kumiai.dr import wal
from kumiai.dr.runbook import Runbook, RunContext, action, check, load_all
from kumiai.dr.runbook import run as run_book
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.objectstore.evidence import copy_evidence
from kumiai.ops import Operation
from kumiai.placement import write_placement

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Move:
    """One town moving its primary from `from_site` to `to_site`: what the runbook steps share."""

    target: Target
    town: TownLayout  # placed as before the move: primary at from_site
    to_site: str
    kind: str  # planned | emergency | failback
    force: bool = False
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    placement_file: Path | None = None
    _secrets: TownSecrets | None = None

    @property
    def from_site(self) -> str:
        return self.town.primary_site

    @property
    def after(self) -> TownLayout:
        """The town as placed once moved."""
        return replace(self.town, primary_site=self.to_site, dr_site=self.from_site)

    @property
    def old(self) -> tuple[MemberLayout, ...]:
        return self.town.at(self.from_site)

    @property
    def new(self) -> tuple[MemberLayout, ...]:
        return self.town.at(self.to_site)

    @property
    def secrets(self) -> TownSecrets:
        if self._secrets is None:
            self._secrets = load_town_secrets(self.target.topology().secrets_file(self.town.id))
        return self._secrets

    def note(self, key: str, value: Any) -> None:
        self.evidence[key] = value


def new_move(
    target: Target, town: TownLayout, to_site: str, kind: str, *, force: bool = False, reason: str | None = None
) -> Move:
    """The move of `town` to `to_site`, whichever site its placement names now (a re-run after an interruption
    finds the placement already written: the move is still from the other site)."""
    if to_site not in town.sites:
        raise InputError(
            Problem("--to", "", f"{town.id} is held at {' and '.join(town.sites)}; {to_site!r} is neither")
        )
    from_site = next(s for s in town.sites if s != to_site)
    placed = replace(town, primary_site=from_site, dr_site=to_site)
    return Move(target=target, town=placed, to_site=to_site, kind=kind, force=force, reason=reason)


def move_of(ctx: RunContext) -> Move:
    move = ctx.params["move"]
    assert isinstance(move, Move)
    return move


# --- talking to the members -------------------------------------------------------------------------------


def query(member: MemberLayout, secrets: TownSecrets, sql: str, timeout: int = 3) -> tuple[Any, ...] | None:
    """One row of a query as the town's superuser; None when the member does not answer."""
    return query_one(member.address, PG_PORT, secrets, sql, tls=member.tls, timeout=timeout, app="kumiai-failover")


def accepts_writes(member: MemberLayout, secrets: TownSecrets) -> bool:
    """The member answers and is not in recovery: a client could commit there."""
    row = query(member, secrets, "SELECT pg_is_in_recovery() OR current_setting('default_transaction_read_only')::bool")
    return row is not None and row[0] is False


def writers(members: Sequence[MemberLayout], secrets: TownSecrets) -> list[str]:
    return [m.name for m in members if accepts_writes(m, secrets)]


def leader_of(members: Sequence[MemberLayout]) -> tuple[MemberLayout | None, str | None]:
    """The member leading this site's cluster now and its role (leader or standby_leader), from Patroni's view."""
    cluster = parse_cluster(members[0].site, "", cluster_view(members))
    for m in cluster.members:
        if m.name == cluster.leader:
            return next((x for x in members if x.name == m.name), None), m.role
    return None, None


def wait_for(what: str, ready: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise KumiaiError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def replay_lsn(member: MemberLayout, secrets: TownSecrets) -> int | None:
    """Where a member's WAL ends: replayed position in recovery, current position on a primary."""
    row = query(
        member,
        secrets,
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text",
    )
    return wal.lsn_int(row[0]) if row and row[0] else None


# --- checks ------------------------------------------------------------------------------------------------


@check("new-site-writable")
def new_site_writable(ctx: RunContext) -> bool:
    move = move_of(ctx)
    leader, role = leader_of(move.new)
    return leader is not None and role == "leader" and accepts_writes(leader, move.secrets)


@check("old-site-fenced")
def old_site_fenced(ctx: RunContext) -> bool:
    """No member of the old site accepts a write (unreachable members do not)."""
    move = move_of(ctx)
    return not writers(move.old, move.secrets)


@check("old-site-in-recovery")
def old_site_in_recovery(ctx: RunContext) -> bool:
    """The old site's cluster has turned into a standby cluster: its leader is a standby leader, in recovery."""
    move = move_of(ctx)
    leader, role = leader_of(move.old)
    return leader is not None and role == "standby_leader" and not writers(move.old, move.secrets)


@check("new-site-caught-up")
def new_site_caught_up(ctx: RunContext) -> bool:
    """The new site has replayed everything the (demoted) old site wrote."""
    move = move_of(ctx)
    old_leader, _ = leader_of(move.old)
    new_leader, _ = leader_of(move.new)
    if old_leader is None or new_leader is None:
        return False
    old_end, new_end = replay_lsn(old_leader, move.secrets), replay_lsn(new_leader, move.secrets)
    if old_end is None or new_end is None or new_end < old_end:
        return False
    move.note("handover_lsn", wal.lsn_text(old_end))
    return True


def streams_as_standby(site: str, members: Sequence[MemberLayout]) -> bool:
    """The site is a healthy standby cluster: a streaming standby leader and every other member streaming."""
    cluster = parse_cluster(site, "standby", cluster_view(members))
    return cluster.healthy and len(cluster.members) == len(members)


@check("old-site-streaming")
def old_site_streaming(ctx: RunContext) -> bool:
    """The old site is a healthy standby cluster of the new one."""
    move = move_of(ctx)
    return streams_as_standby(move.from_site, move.old)


@check("old-site-not-streaming")
def old_site_not_streaming(ctx: RunContext) -> bool:
    return not old_site_streaming(ctx)


@check("new-site-healthy")
def new_site_healthy(ctx: RunContext) -> bool:
    """The new primary site's cluster leads, and its in-site synchronous standby streams."""
    move = move_of(ctx)
    cluster = parse_cluster(move.to_site, "primary", cluster_view(move.new))
    return cluster.healthy and cluster.sync_standby is not None


# --- actions shared by the procedures ----------------------------------------------------------------------


@action("wait")
def wait(ctx: RunContext) -> None:
    """Nothing to do: the step only waits for its check to hold."""


@action("write-placement")
def write_new_placement(ctx: RunContext) -> str:
    """Desired state first: the town file names the new primary before anything moves."""
    move = move_of(ctx)
    move.placement_file = write_placement(move.target.inventory, move.town.id, move.to_site, move.from_site)
    move.note("placement", {"primary": move.to_site, "dr": move.from_site, "file": str(move.placement_file or "")})
    if move.placement_file is None:
        return "the town file already names the new placement"
    return f"{move.placement_file} now names {move.to_site} primary"


@action("keep-slot-for-old-site")
def keep_slot_for_old_site(ctx: RunContext) -> str:
    """The new site keeps a permanent slot for the old one, so the WAL the old site will stream is kept."""
    move = move_of(ctx)
    slot = slot_name(move.from_site)
    patch_config(move.new, {"slots": {slot: {"type": "physical"}}}, password=move.secrets.patroni_rest_password)
    return f"slot {slot} at {move.to_site}"


@action("demote-old-site")
def demote_old_site(ctx: RunContext) -> str:
    """The old site's cluster becomes a standby cluster of the new site (Patroni demotes its leader)."""
    move = move_of(ctx)
    move.note("demote_started", time.time())
    standby = desired_config(move.after, move.from_site)["standby_cluster"]
    patch_config(move.old, {"standby_cluster": standby}, password=move.secrets.patroni_rest_password)
    return f"{move.from_site} follows {standby['host']}"


@action("promote-new-site")
def promote_new_site(ctx: RunContext) -> str:
    """The new site's cluster leaves standby mode: synchronous inside its site, a slot for the old site."""
    move = move_of(ctx)
    move.note("promote_started", time.time())
    patch_config(move.new, desired_config(move.after, move.to_site), password=move.secrets.patroni_rest_password)
    return f"{move.to_site} promoted"


@action("record-writable")
def record_writable(ctx: RunContext) -> str:
    move = move_of(ctx)
    now = time.time()
    move.note("writable_at", now)
    # A planned move stops writes from the demotion on; an emergency one counts from the start of the command.
    key, since, label = ("writes_stopped_s", "demote_started", "the demotion began")
    if move.kind == "emergency":
        key, since, label = ("seconds_to_writable", "started", "the failover began")
    started = move.evidence.get(since)
    if started is None:
        return "writable"
    move.note(key, round(now - started, 3))
    return f"writable {now - started:.2f} s after {label}"


@action("settle-old-site")
def settle_old_site(ctx: RunContext) -> str:
    """The old site's settings become those of a standby cluster: its old slots dropped, synchronous mode off."""
    move = move_of(ctx)
    patch_config(move.old, desired_config(move.after, move.from_site), password=move.secrets.patroni_rest_password)
    return f"{move.from_site}: standby settings, stale slots dropped"


def archive_id(info: list[dict[str, Any]], repo: int) -> str | None:
    """The archive id (e.g. 15-1) pgBackRest uses for the current database in a repo, from `info --output=json`."""
    archives = info[0].get("archive", []) if info else []
    ids = [a.get("id") for a in archives if int(a.get("database", {}).get("repo-key", 0)) == repo and a.get("id")]
    return str(ids[-1]) if ids else None


@action("clear-archive-conflict")
def clear_archive_conflict(ctx: RunContext) -> str:
    """pgBackRest [045]: after a promotion, a segment of the old timeline may wait as `.ready` at the new
    primary while every repo already holds that name (archived by the old primary, with more WAL in it).
    Archiving stops on it. Marking it done is safe only when every repo has the segment; otherwise it fails."""
    move = move_of(ctx)
    leader, _ = leader_of(move.new)
    if leader is None:
        raise KumiaiError(f"{move.to_site} has no leader to check archiving on")
    row = query(
        leader,
        move.secrets,
        "SELECT last_archived_wal, last_archived_time, last_failed_wal, last_failed_time FROM pg_stat_archiver",
    )
    if row is None:
        raise KumiaiError(f"{leader.name} does not answer")
    segment = wal.failing_segment(wal.ArchiverState(*row))
    if segment is None:
        move.note("archive_conflict", None)
        return "archiving has no stuck segment"
    run_as = move.target.run_as(move.town.id)
    info = pgbackrest.info(run_as, leader)
    missing = []
    for repo in move.town.repos:
        aid = archive_id(info, repo.number)
        listing = pgbackrest.run(
            run_as,
            leader,
            f"--repo={repo.number}",
            f"--filter=^{segment}-",
            "repo-ls",
            f"archive/{move.town.id}/{aid}/{wal.segment_dir(segment)}",
            timeout=60,
        )
        if aid is None or listing.returncode != 0 or not wal.segment_listed(listing.stdout, segment):
            missing.append(f"repo{repo.number}")
    if missing:
        # Not a conflict this step may clear (e.g. the lost site's repo does not answer): the town is served all
        # the same, so this is reported, not failed; a planned failover's check-archiving step fails on it.
        unresolved = f"archiving stuck on {segment}, which {', '.join(missing)} lacks or cannot be read"
        move.note("archive_conflict", {"segment": segment, "unresolved": unresolved})
        return f"{unresolved}: left as it is (pgbackrest check --stanza={move.town.id} says why)"
    status = leader.data_dir / "pg_wal" / "archive_status"
    done = subprocess_run([*run_as, "/bin/mv", str(status / f"{segment}.ready"), str(status / f"{segment}.done")])
    if done.returncode != 0:
        raise KumiaiError(f"could not mark {segment} archived at {leader.name}: {done.stderr.strip()}")
    move.note("archive_conflict", {"segment": segment, "in_repos": [r.number for r in move.town.repos]})
    return f"{segment} was already in every repo: marked archived"


def subprocess_run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@action("check-archiving")
def check_archiving(ctx: RunContext) -> str:
    """`pgbackrest check` at the new primary: WAL reaches every repo again, at both sites."""
    move = move_of(ctx)
    leader, _ = leader_of(move.new)
    if leader is None:
        raise KumiaiError(f"{move.to_site} has no leader")
    deadline = time.monotonic() + ctx.remaining()
    while True:
        result = pgbackrest.run(move.target.run_as(move.town.id), leader, "check", timeout=max(ctx.remaining(), 10))
        if result.returncode == 0:
            return f"WAL archived to repos {', '.join(str(r.number) for r in move.town.repos)}"
        # Right after a promotion the new timeline's history file may still be on its way to the repos.
        if time.monotonic() > deadline - 5:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise KumiaiError(f"pgbackrest check at {leader.name} failed: {lines[-1] if lines else result.returncode}")
        time.sleep(2)


# --- planned ------------------------------------------------------------------------------------------------


@action("planned-preflight")
def planned_preflight(ctx: RunContext) -> str:
    """Both sites healthy and the new one streaming: a planned move needs a healthy old primary to hand over."""
    move = move_of(ctx)
    old = parse_cluster(move.from_site, "primary", cluster_view(move.old))
    new = parse_cluster(move.to_site, "standby", cluster_view(move.new))
    problems = []
    if not old.healthy:
        problems.append(f"{move.from_site} (primary) is not healthy")
    if not new.healthy:
        problems.append(f"{move.to_site} (standby) is not healthy")
    if problems:
        raise KumiaiError(
            f"{move.town.id}: {'; '.join(problems)}. A planned failover hands over from a healthy primary; "
            "when the primary site is lost, run an emergency failover (without --planned)"
        )
    return f"{move.from_site} leads, {move.to_site} streams"


# --- emergency ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OldSite:
    """What the controller sees of the old primary site before an emergency failover."""

    patroni_answers: bool
    writers: tuple[str, ...]
    services_answer: bool


def refusal(old: OldSite, force: bool, reason: str | None) -> str | None:
    """Why an emergency promotion must not go ahead, or None. Pure.

    Promoting while the old primary takes writes makes two primaries: allowed only when forced with a reason
    (e.g. the old site cannot reach the DR site and must be fenced from here)."""
    if old.writers and not (force and reason):
        return (
            f"the old primary is reachable and accepts writes ({', '.join(old.writers)}): use --planned for a "
            "handover without loss, or --force --reason TEXT to fence it and promote anyway"
        )
    return None


@action("assess-old-site")
def assess_old_site(ctx: RunContext) -> str:
    move = move_of(ctx)
    old = OldSite(
        patroni_answers=cluster_view(move.old) is not None,
        writers=tuple(writers(move.old, move.secrets)),
        services_answer=bool(move.target.services.states(move.from_site)),
    )
    move.note("old_site", {"patroni_answers": old.patroni_answers, "writers": list(old.writers)})
    why = refusal(old, move.force, move.reason)
    if why:
        raise InputError(Problem("kumiai failover", "--force", f"{move.town.id}: {why}"))
    new_leader, role = leader_of(move.new)
    if new_leader is None or role not in ("standby_leader", "leader"):
        raise KumiaiError(f"{move.to_site} has no standby leader to promote")
    state = "lost" if not (old.patroni_answers or old.services_answer) else "reachable"
    return f"{move.from_site} {state}; writers there: {', '.join(old.writers) or 'none'}"


@action("fence-old-site")
def fence_old_site(ctx: RunContext) -> str:
    """Wherever the old site can still be reached, its members stop accepting writes: demoted through its own
    Patroni (it then follows the new site), else its Patroni stopped through the service manager."""
    move = move_of(ctx)
    how = []
    if cluster_view(move.old) is not None:
        try:
            standby = desired_config(move.after, move.from_site)["standby_cluster"]
            patch_config(move.old, {"standby_cluster": standby}, password=move.secrets.patroni_rest_password)
            how.append("demoted through Patroni")
        except KumiaiError as exc:
            how.append(f"demotion refused ({exc.message})")
    programs = [m.program for m in move.old]
    running = [p for p, state in move.target.services.states(move.from_site).items() if p in programs]
    if running and "demoted through Patroni" not in how:
        move.target.services.stop(move.from_site, running)
        how.append(f"stopped {', '.join(running)}")
    if not how:
        how.append("unreachable: neither Patroni nor the service manager answers")
    move.note("fencing", how)
    return "; ".join(how)


@action("measure-loss-window")
def measure_loss_window(ctx: RunContext) -> str:
    """Before promoting: the new site's received position against the old primary's end of WAL, read from the old
    members' WAL where the target can still read it (the site's disks), else from a reachable old member."""
    move = move_of(ctx)
    leader, _ = leader_of(move.new)
    if leader is None:
        raise KumiaiError(f"{move.to_site} has no standby leader")
    row = query(
        leader,
        move.secrets,
        "SELECT COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text, pg_last_xact_replay_timestamp()",
    )
    if row is None or row[0] is None:
        raise KumiaiError(f"{leader.name} does not answer")
    new_lsn = wal.lsn_int(row[0])
    window = old_wal_window(move, new_lsn, row[1])
    move.note("loss_window", window.as_dict())
    return window.summary()


def old_wal_window(move: Move, new_lsn: int, new_last_commit: datetime | None) -> wal.LossWindow:
    run_as = move.target.run_as(move.town.id)
    best: wal.WalTail | None = None
    for member in move.old:
        tail = read_wal_tail(run_as, member, new_lsn)
        if tail is not None and (best is None or tail.end > best.end):
            best = tail
    if best is not None:
        return wal.loss_window(new_lsn, new_last_commit, best, "the old members' WAL, read with pg_waldump")
    ends = [e for e in (replay_lsn(m, move.secrets) for m in move.old) if e is not None]
    if ends:
        window = wal.loss_window(new_lsn, None, wal.WalTail(end=max(ends), commits=()), "a reachable old member")
        window.seconds, window.commits = None, None
        window.notes.append("seconds unknown: the old members' WAL could not be read")
        return window
    window = wal.loss_window(new_lsn, None, None, "unknown: the old site can be neither queried nor read")
    window.notes.append(f"the new primary has everything up to {wal.lsn_text(new_lsn)}")
    return window


def read_wal_tail(run_as: Sequence[str], member: MemberLayout, start: int) -> wal.WalTail | None:
    """The member's WAL from `start` on, read from its data directory; None where it cannot be read."""
    pg_wal = member.data_dir / "pg_wal"
    listing = subprocess_run([*run_as, "/bin/ls", str(pg_wal)])
    if listing.returncode != 0:
        return None
    timeline = wal.newest_timeline(listing.stdout.split())
    if timeline is None:
        return None
    dump = subprocess_run(
        [
            *run_as,
            str(PG_BIN / "pg_waldump"),
            f"--path={pg_wal}",
            f"--timeline={timeline}",
            f"--start={wal.lsn_text(start)}",
        ],
        timeout=120,
    )
    # pg_waldump ends with an error at the end of the WAL it has: its records on stdout are what counts.
    return wal.parse_waldump(dump.stdout) or wal.nothing_after(dump.stderr, start)


# --- failback -----------------------------------------------------------------------------------------------


@action("failback-preflight")
def failback_preflight(ctx: RunContext) -> str:
    move = move_of(ctx)
    cluster = parse_cluster(move.from_site, "primary", cluster_view(move.old))
    if cluster.leader is None or not writers(move.old, move.secrets):
        raise KumiaiError(f"{move.town.id} has no writable primary at {move.from_site} to fail back from")
    return f"{move.from_site} serves {move.town.id}"


@action("rebuild-standby-site")
def rebuild_standby_site(ctx: RunContext) -> str:
    """The town's playbook brings the site back as a standby cluster of the current primary: fenced before its
    Patroni starts (roles/patroni_cluster), which then rewinds its old timeline (pg_rewind) or clones anew."""
    move = move_of(ctx)
    result = move.target.run_playbook("onboard_town.yml", limit=limit_for([move.town.id]), towns=[move.town.id])
    return f"onboard_town.yml changed={result.changed}"


@action("reclone-standby-site")
def reclone_standby_site(ctx: RunContext) -> str:
    """Members that could not rewind are cloned anew from the current primary (Patroni's reinitialize)."""
    move = move_of(ctx)
    view = parse_cluster(move.to_site, "standby", cluster_view(move.new))
    done = []
    for m in view.members:
        if m.state != "streaming" and m.role not in ("standby_leader", "leader"):
            member = next(x for x in move.new if x.name == m.name)
            request_reinit(member, move.secrets.patroni_rest_password)
            done.append(m.name)
    if not done:
        raise KumiaiError(
            f"the standby leader at {move.to_site} does not stream and cannot be re-cloned by Patroni: stop the "
            f"site's members, move their data directories aside and run kumiai onboard {move.town.id}"
        )
    return f"re-cloning {', '.join(done)}"


def request_reinit(member: MemberLayout, password: str) -> None:
    try:
        with open_member(member, "/reinitialize", method="POST", body={"force": True}, password=password, timeout=10):
            pass
    except (OSError, urllib.error.URLError) as exc:
        raise KumiaiError(f"{member.name}: reinitialize refused: {exc}") from None


@check("standby-site-streaming")
def standby_site_streaming(ctx: RunContext) -> bool:
    """The site to fail back to is a healthy standby cluster streaming from the current primary."""
    move = move_of(ctx)
    return streams_as_standby(move.to_site, move.new)


@check("standby-site-not-streaming")
def standby_site_not_streaming(ctx: RunContext) -> bool:
    return not standby_site_streaming(ctx)


# --- evidence -----------------------------------------------------------------------------------------------


def evidence_record(move: Move, result: str, error: str | None, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """What a failover leaves for an auditor: no secrets, only names, positions, times and results."""
    data = {
        "town": move.town.id,
        "kind": move.kind,
        "from": move.from_site,
        "to": move.to_site,
        "result": result,
        "error": error,
        "forced": move.force,
        "reason": move.reason,
        **{k: v for k, v in move.evidence.items() if k not in ("started",)},
        "steps": steps,
    }
    if "started" in move.evidence:
        data["started"] = datetime.fromtimestamp(move.evidence["started"], UTC).isoformat(timespec="milliseconds")
    for key in ("demote_started", "promote_started", "writable_at"):
        if isinstance(data.get(key), float):
            data[key] = datetime.fromtimestamp(data[key], UTC).isoformat(timespec="milliseconds")
    return data


def render_evidence(data: dict[str, Any]) -> str:
    """The Markdown page of one failover's evidence. Pure."""
    lines = [
        f"# {data['kind']} failover of {data['town']}: {data['from']} → {data['to']}",
        "",
        f"- result: **{data['result']}**" + (f" ({data['error']})" if data.get("error") else ""),
    ]
    if data.get("forced"):
        lines.append(f"- forced, reason: {data.get('reason')}")
    for key, label in (
        ("started", "started"),
        ("writes_stopped_s", "writes stopped (s)"),
        ("seconds_to_writable", "seconds to writable"),
        ("handover_lsn", "handover LSN"),
    ):
        if data.get(key) is not None:
            lines.append(f"- {label}: {data[key]}")
    window = data.get("loss_window")
    if window:
        for key in ("bytes", "seconds", "commits"):
            value = window.get(key)
            lines.append(f"- data-loss window {key}: {'unknown' if value is None else value}")
        lines.append(f"- loss window measured from: {window['basis']}")
        lines += [f"- note: {n}" for n in window.get("notes", [])]
    if data.get("fencing"):
        lines.append(f"- fencing of {data['from']}: {'; '.join(data['fencing'])}")
    placement = data.get("placement")
    if placement:
        lines.append(f"- placement: primary {placement['primary']}, dr {placement['dr']} {placement['file']}".rstrip())
    lines += ["", "| step | status | seconds | detail |", "|---|---|---|---|"]
    lines += [
        "| " + " | ".join(str(s[k]).replace("|", "\\|") for k in ("name", "status", "seconds", "detail")) + " |"
        for s in data["steps"]
    ]
    return "\n".join(lines) + "\n"


def write_evidence(data: dict[str, Any]) -> Path:
    """JSON and Markdown under the evidence directory (kept by `lab down --purge`); the JSON file's path."""
    directory = paths.evidence_dir() / "failovers"
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{data['town']}-{data['kind']}"
    (directory / f"{name}.md").write_text(render_evidence(data), encoding="utf-8")
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    copy_evidence(directory / f"{name}.md", path)
    return path


# --- running moves ------------------------------------------------------------------------------------------


def run_move(move: Move, books: Sequence[Runbook], op: Operation) -> dict[str, Any]:
    """Run the move's runbooks as steps of `op` (named after the town) and write its evidence, pass or fail."""
    first = len(op.steps)
    move.note("started", time.time())
    ctx = RunContext(params={"move": move})
    error = None
    try:
        for book in books:
            run_book(book, ctx, op, prefix=f"{move.town.id}: ")
    except KumiaiError as exc:
        error = exc.message
    steps = [s.as_dict() for s in op.steps[first:]]
    record = evidence_record(move, "fail" if error else "pass", error, steps)
    record["evidence"] = str(write_evidence(record))
    return record


def already_moved(move: Move) -> bool:
    """The town is served from `to_site` already: its placement says so and a primary leads there."""
    _leader, role = leader_of(move.new)
    return move.target.topology().towns[move.town.id].primary_site == move.to_site and role == "leader"


def fail_over(
    target: Target,
    town_ids: Sequence[str],
    to_site: str,
    op: Operation,
    *,
    planned: bool,
    force: bool = False,
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """Move each town's primary to `to_site`, one town at a time; a record per town (its evidence)."""
    topology = onboarded(target, town_ids)
    books = load_all()
    book = books["planned-failover" if planned else "emergency-failover"]
    records = []
    for tid in town_ids:
        kind = "planned" if planned else "emergency"
        move = new_move(target, topology.towns[tid], to_site, kind, force=force, reason=reason)
        if already_moved(move):
            op.skip(f"{tid}: {book.id}", f"already served from {to_site}")
            records.append({"town": tid, "kind": kind, "result": "already", "to": to_site})
            continue
        records.append(run_move(move, [book], op))
    return records


def fail_back(target: Target, town_ids: Sequence[str], op: Operation) -> list[dict[str, Any]]:
    """Bring each town back to its home site (the consortium's primary site): rebuild, catch up, planned move."""
    topology = onboarded(target, town_ids)
    books = load_all()
    home = target.inventory.primary_site.id
    records = []
    for tid in town_ids:
        move = new_move(target, topology.towns[tid], home, "failback")
        if already_moved(move):
            op.skip(f"{tid}: failback", f"already served from {home}")
            records.append({"town": tid, "kind": "failback", "result": "already", "to": home})
            continue
        records.append(run_move(move, [books["failback"], books["planned-failover"]], op))
    return records

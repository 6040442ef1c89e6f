"""Status of a town at both sites: Patroni's cluster view, cross-site lag and the last backup per repo.

The parse_* functions are pure (they read what Patroni, PostgreSQL and pgBackRest answer); gather_* ask the
running services.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kumiai.datalayer import pgbackrest
from kumiai.datalayer.patroni import cluster_view
from kumiai.datalayer.secrets import TownSecrets
from kumiai.datalayer.sql import query_one
from kumiai.datalayer.topology import PG_PORT, MemberLayout, TownLayout

LEADER_ROLES = ("leader", "standby_leader")


@dataclass
class MemberStatus:
    name: str
    host: str
    role: str
    state: str
    timeline: int | None = None
    lag_bytes: int | None = None


@dataclass
class ClusterStatus:
    site: str
    kind: str  # primary | standby
    reachable: bool
    leader: str | None = None
    members: list[MemberStatus] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """A leader running (streaming, for a standby cluster) and every other member streaming."""
        if not self.reachable or self.leader is None:
            return False
        leader_state = "running" if self.kind == "primary" else "streaming"
        return all(
            (m.state == leader_state) if m.role in LEADER_ROLES else (m.state == "streaming") for m in self.members
        )

    @property
    def sync_standby(self) -> str | None:
        return next((m.name for m in self.members if m.role == "sync_standby"), None)


@dataclass
class Lag:
    bytes: int
    seconds: float


@dataclass
class Backup:
    repo: int
    label: str
    type: str
    stopped: str
    size_bytes: int | None
    repo_size_bytes: int | None
    started: str = ""
    # The WAL a restore of this backup needs (from wal_start to wal_stop).
    wal_start: str | None = None
    wal_stop: str | None = None

    @property
    def stopped_at(self) -> datetime:
        return datetime.fromisoformat(self.stopped)


@dataclass
class DrSlot:
    """The permanent slot at the primary site through which the DR standby cluster streams."""

    name: str
    exists: bool
    wal_status: str | None = None  # reserved | extended | unreserved | lost (PostgreSQL 13+)
    active: bool = False
    restart_lsn: str | None = None
    # The first WAL position the primary still holds (its oldest segment in pg_wal).
    oldest_wal_lsn: str | None = None


WAL_SEGMENT_BYTES = 16 * 1024 * 1024


def lsn_value(lsn: str) -> int:
    """'0/3000148' -> 50331976."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def segment_start(name: str) -> str | None:
    """The first LSN of a WAL segment file name (timeline, log, segment in hex; 16 MiB segments)."""
    if len(name) != 24:
        return None
    try:
        value = (int(name[8:16], 16) << 32) + int(name[16:24], 16) * WAL_SEGMENT_BYTES
    except ValueError:
        return None
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def reclone_reason(slot: DrSlot | None, dr: ClusterStatus, dr_replay_lsn: str | None) -> str | None:
    """Why the DR standby cluster can no longer catch up by streaming and must be cloned anew; None when it can
    (or when nothing says otherwise: a site that cannot be asked is not declared lost).

    - The slot was invalidated (`wal_status = lost`): max_slot_wal_keep_size let the primary remove WAL the DR
      standby had not received.
    - The DR standby leader does not stream and the WAL it needs next is older than the oldest segment the primary
      still holds (e.g. the invalidated slot was dropped and created anew)."""
    if slot is None:
        return None
    if slot.exists and slot.wal_status == "lost":
        return (
            f"the DR slot {slot.name} was invalidated (wal_status lost): the primary removed WAL the DR standby had "
            "not received (max_slot_wal_keep_size)"
        )
    leader = next((m for m in dr.members if m.name == dr.leader), None)
    if leader is None or leader.state == "streaming" or dr_replay_lsn is None or slot.oldest_wal_lsn is None:
        return None
    if lsn_value(dr_replay_lsn) < lsn_value(slot.oldest_wal_lsn):
        return (
            f"the DR standby leader {leader.name} does not stream: it needs WAL from {dr_replay_lsn}, and the primary "
            f"holds WAL only from {slot.oldest_wal_lsn}"
        )
    return None


@dataclass
class TownStatus:
    town: str
    primary: ClusterStatus
    dr: ClusterStatus
    dr_lag: Lag | None
    backups: dict[int, Backup | None]
    # What misses the town's targets (RPO, backup schedule, a healthy leader): filled in by whoever knows them.
    alerts: list[str] = field(default_factory=list)
    dr_slot: DrSlot | None = None  # None: the primary's leader did not answer
    dr_replay_lsn: str | None = None  # None: the DR standby leader did not answer
    # Why the DR standby must be cloned anew (kumiai onboard ID does it); None when it need not be.
    dr_reclone: str | None = None

    @property
    def healthy(self) -> bool:
        return (
            self.primary.healthy
            and self.dr.healthy
            and self.primary.sync_standby is not None
            and all(b is not None for b in self.backups.values())
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, cluster in (("primary", self.primary), ("dr", self.dr)):
            data[key]["healthy"] = cluster.healthy
            data[key]["sync_standby"] = cluster.sync_standby
        data["backups"] = {f"repo{n}": (asdict(b) if b else None) for n, b in self.backups.items()}
        data["healthy"] = self.healthy
        return data


def parse_cluster(site: str, kind: str, view: dict[str, Any] | None) -> ClusterStatus:
    """Patroni's GET /cluster answer -> members and leader."""
    if view is None:
        return ClusterStatus(site=site, kind=kind, reachable=False)
    members = [
        MemberStatus(
            name=m.get("name", "?"),
            host=m.get("host", "?"),
            role=m.get("role", "?"),
            state=m.get("state", "?"),
            timeline=m.get("timeline"),
            lag_bytes=m.get("lag") if isinstance(m.get("lag"), int) else None,
        )
        for m in view.get("members", [])
    ]
    leader = next((m.name for m in members if m.role in LEADER_ROLES), None)
    return ClusterStatus(site=site, kind=kind, reachable=True, leader=leader, members=members)


def _iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def parse_all_backups(info: list[dict[str, Any]]) -> list[Backup]:
    """pgbackrest info --output=json for one stanza -> every backup of every repo, oldest first."""
    stanza = info[0] if info else {}
    backups = []
    for b in stanza.get("backup", []):
        timestamp = b.get("timestamp", {})
        archive = b.get("archive") or {}
        backups.append(
            Backup(
                repo=int(b.get("database", {}).get("repo-key", 0)),
                label=b.get("label", "?"),
                type=b.get("type", "?"),
                stopped=_iso(int(timestamp.get("stop", 0))),
                size_bytes=b.get("info", {}).get("size"),
                repo_size_bytes=b.get("info", {}).get("repository", {}).get("delta"),
                started=_iso(int(timestamp.get("start", 0))),
                wal_start=archive.get("start"),
                wal_stop=archive.get("stop"),
            )
        )
    return sorted(backups, key=lambda b: (b.stopped, b.label))


def parse_backups(info: list[dict[str, Any]], repos: Sequence[int]) -> dict[int, Backup | None]:
    """pgbackrest info --output=json for one stanza -> the newest backup of each repo (None: no backup)."""
    last: dict[int, Backup | None] = dict.fromkeys(repos)
    for backup in parse_all_backups(info):
        if backup.repo in last:
            last[backup.repo] = backup
    return last


def parse_archive_max(info: list[dict[str, Any]], repos: Sequence[int]) -> dict[int, str | None]:
    """pgbackrest info --output=json -> the newest WAL segment archived in each repo (None: none)."""
    newest: dict[int, str | None] = dict.fromkeys(repos)
    stanza = info[0] if info else {}
    for archive in stanza.get("archive", []):
        repo = int(archive.get("database", {}).get("repo-key", 0))
        top = archive.get("max")
        # WAL names sort in WAL order (timeline, then position), also across archive ids after an upgrade.
        if repo in newest and top and (newest[repo] is None or top > str(newest[repo])):
            newest[repo] = top
    return newest


def query_dr_lag(leader: MemberLayout, dr_leader_name: str, secrets: TownSecrets) -> Lag | None:
    """Bytes and seconds the DR standby leader's replay is behind the primary leader."""
    sql = (
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,"
        " COALESCE(EXTRACT(EPOCH FROM replay_lag), 0)::float8"
        " FROM pg_stat_replication WHERE application_name = %s"
    )
    row = query_one(leader.address, PG_PORT, secrets, sql, (dr_leader_name,), tls=leader.tls, app="kumiai-status")
    if row is None:
        return None
    lag_bytes, seconds = int(row[0] or 0), float(row[1] or 0.0)
    # replay_lag keeps its last value for a while after catching up; nothing outstanding means no lag.
    return Lag(bytes=lag_bytes, seconds=seconds if lag_bytes > 0 else 0.0)


SLOT_SQL = (
    "SELECT s.slot_name IS NOT NULL, s.wal_status, COALESCE(s.active, false), s.restart_lsn::text,"
    " (SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$')"
    " FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots AS s ON s.slot_name = %s"
)


def query_dr_slot(leader: MemberLayout, slot: str, secrets: TownSecrets) -> DrSlot | None:
    """The DR slot at the primary site's leader, and the oldest WAL it holds; None when the leader does not answer."""
    row = query_one(leader.address, PG_PORT, secrets, SLOT_SQL, (slot,), tls=leader.tls, app="kumiai-status")
    if row is None:
        return None
    exists, wal_status, active, restart_lsn, oldest = row
    return DrSlot(
        name=slot,
        exists=bool(exists),
        wal_status=wal_status,
        active=bool(active),
        restart_lsn=restart_lsn,
        oldest_wal_lsn=segment_start(oldest) if oldest else None,
    )


def query_replay_lsn(member: MemberLayout, secrets: TownSecrets) -> str | None:
    """The position a standby has replayed to; None when it does not answer or is not in recovery."""
    row = query_one(
        member.address, PG_PORT, secrets, "SELECT pg_last_wal_replay_lsn()::text", tls=member.tls, app="kumiai-status"
    )
    return str(row[0]) if row and row[0] else None


def gather_town_status(town: TownLayout, secrets: TownSecrets | None, run_as: Sequence[str]) -> TownStatus:
    primary = parse_cluster(town.primary_site, "primary", cluster_view(town.at(town.primary_site)))
    dr = parse_cluster(town.dr_site, "standby", cluster_view(town.at(town.dr_site)))
    leader = next((m for m in town.at(town.primary_site) if m.name == primary.leader), None)
    dr_leader = next((m for m in town.at(town.dr_site) if m.name == dr.leader), None)
    lag = slot = replay = None
    if leader is not None and dr.leader is not None and secrets is not None:
        lag = query_dr_lag(leader, dr.leader, secrets)
    if leader is not None and secrets is not None:
        slot = query_dr_slot(leader, town.dr_slot_name, secrets)
    if dr_leader is not None and secrets is not None:
        replay = query_replay_lsn(dr_leader, secrets)
    # Every member's configuration names every repo; the primary site's first member always has one.
    info = pgbackrest.info(run_as, town.at(town.primary_site)[0])
    backups = parse_backups(info, [r.number for r in town.repos])
    return TownStatus(
        town=town.id,
        primary=primary,
        dr=dr,
        dr_lag=lag,
        backups=backups,
        dr_slot=slot,
        dr_replay_lsn=replay,
        dr_reclone=reclone_reason(slot, dr, replay),
    )

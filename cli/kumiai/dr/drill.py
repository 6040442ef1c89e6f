"""Restore drills: prove that a town's backups restore, without touching its production members.

A drill writes a marker row at the town's primary (in the same transaction it takes each table's row count and
checksum), waits until that WAL is in the chosen repo, restores the repo's newest backup into a scratch instance
at the target's drill address up to the marker's transaction, starts it, waits until it takes writes and compares
it with what the primary held. The scratch instance never archives (restored with --archive-mode=off, started
with archive_mode=off and no replication settings), listens only on its own address and port, and is removed
whatever happens. The steps are dr-runbooks/drill.yaml; `drill_town` runs them and builds the evidence.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from kumiai import __version__, paths
from kumiai.datalayer import pgbackrest
from kumiai.datalayer.patroni import cluster_view
from kumiai.datalayer.secrets import TownSecrets, load_town_secrets
from kumiai.datalayer.sql import connect
from kumiai.datalayer.status import parse_cluster
from kumiai.datalayer.target import ScratchLayout, Target
from kumiai.datalayer.topology import PG_PORT, SUPERUSER, ControllerTLS, MemberLayout, RepoLayout, Topology, TownLayout
from kumiai.dr import evidence
from kumiai.dr.evidence import Comparison, DrillEvidence, StepRecord, TableCheck
from kumiai.dr.runbook import RunContext, action, check, load_runbook, run, runbooks_dir
from kumiai.errors import KumiaiError
from kumiai.objectstore.evidence import copy_evidence
from kumiai.ops import Operation

SCHEMA = "kumiai_drill"
# Debian's layout of PostgreSQL's server programs, by major version (the version is read from the backup).
PG_BIN = "/usr/lib/postgresql/{version}/bin"
CONNECT_TIMEOUT_S = 3

COMPARISON = (
    "Every permanent table of the town's database (kumiai's own schema aside): row count and an order-independent "
    "checksum (the sum of PostgreSQL's 64-bit hash of each row, hash_record_extended; md5 of the row's text for a "
    "table with a column type that has no such hash), taken at the primary in the marker's own "
    "REPEATABLE READ transaction, against the same figures in the copy recovered up to that transaction's commit "
    "(recovery_target_xid, inclusive)."
)
CAVEAT = (
    "Exact when no other transaction commits a write while the marker's transaction runs: a write committed "
    "between its snapshot and its commit is in the copy but not in the primary's figures, and shows as a "
    "difference. Unlogged tables are not restored by design and are not compared."
)


@dataclass
class Drill:
    """One town's drill: what it works on, and what each step has established so far."""

    target: Target
    town: TownLayout
    town_name: str
    rpo_target_s: int
    rto_target_s: int
    repo: RepoLayout
    scratch: ScratchLayout
    secrets: TownSecrets
    run_as: list[str]
    drill_id: str
    t0: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    leader: MemberLayout | None = None
    backup_label: str | None = None
    restored_bytes: int | None = None
    pg_bin: Path | None = None
    marker_xid: str | None = None
    marker_at: datetime | None = None
    marker_segment: str | None = None
    archive_id: str = ""
    primary_tables: dict[str, tuple[int, str]] = field(default_factory=dict)
    cutoff_at: datetime | None = None
    restore_s: float | None = None
    writable_after_s: float | None = None
    newest_marker_at: datetime | None = None
    marker_recovered: bool = False
    recovered_tables: dict[str, tuple[int, str] | None] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    scratch_made: bool = False


def _drill(ctx: RunContext) -> Drill:
    drill = ctx.values["drill"]
    assert isinstance(drill, Drill)
    return drill


def _connect(address: str, port: int, secrets: TownSecrets, database: str, tls: ControllerTLS | None) -> Any:
    """`tls`: the production members' (verify-full, the controller's certificate); None for the scratch instance,
    which only the drill reaches, by password from this machine (SCRATCH_HBA)."""
    try:
        return connect(
            address, port, secrets, tls=tls, database=database, timeout=CONNECT_TIMEOUT_S, app="kumiai-drill"
        )
    except psycopg2.Error as exc:
        raise KumiaiError(f"cannot connect to {database} at {address}:{port}: {str(exc).strip()}") from None


def _as_town(
    drill: Drill, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*drill.run_as, *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


# --- table fingerprints (the same query at the primary and in the copy)

TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', %s) AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY 1, 2
"""


def checksum_hex(total: str) -> str:
    """The sum of 64-bit row hashes (a numeric of any size) as 16 hex digits."""
    return format(int(total) % 2**64, "016x")


# Per row, PostgreSQL's own 64-bit hash of the record; a table with a column type that has no such hash (point,
# json, ...) falls back to md5 of the row's text, about three times slower. Summed as numeric: order-independent.
ROW_HASH = "hash_record_extended(t, 0)::numeric"
ROW_MD5 = "('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric"


def _table_figures(cur: Any, schema: str, table: str) -> tuple[int, str]:
    query = "SELECT count(*), coalesce(sum({}), 0)::text FROM {}.{} t"
    name = (sql.Identifier(schema), sql.Identifier(table))
    cur.execute("SAVEPOINT kumiai_drill_figures")
    try:
        cur.execute(sql.SQL(query).format(sql.SQL(ROW_HASH), *name))
    except psycopg2.Error:
        cur.execute("ROLLBACK TO SAVEPOINT kumiai_drill_figures")
        cur.execute(sql.SQL(query).format(sql.SQL(ROW_MD5), *name))
    rows, total = cur.fetchone()
    return int(rows), checksum_hex(total)


def fingerprint(cur: Any, tables: Sequence[str]) -> dict[str, tuple[int, str] | None]:
    """Row count and checksum of each 'schema.table' (None: the table does not exist here)."""
    cur.execute("SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace")
    present = {row[0] for row in cur.fetchall()}
    return {name: _table_figures(cur, *name.split(".", 1)) if name in present else None for name in tables}


# --- the steps of dr-runbooks/drill.yaml


@action("drill-preflight")
def preflight(ctx: RunContext) -> str:
    """The primary has a leader, the repo a backup; an earlier drill's scratch instance is gone."""
    drill = _drill(ctx)
    town = drill.town
    view = parse_cluster(town.primary_site, "primary", cluster_view(town.at(town.primary_site)))
    drill.leader = next((m for m in town.members if m.name == view.leader), None)
    if drill.leader is None:
        raise KumiaiError(f"{town.id} has no leader at {town.primary_site}: a drill needs a primary to mark")
    info = pgbackrest.info(drill.run_as, drill.leader)
    stanza = info[0] if info else {}
    backups = [b for b in stanza.get("backup", []) if b.get("database", {}).get("repo-key") == drill.repo.number]
    if not backups:
        raise KumiaiError(f"repo{drill.repo.number} ({drill.repo.site}) holds no backup of {town.id}")
    newest = max(backups, key=lambda b: b.get("timestamp", {}).get("stop", 0))
    db = newest.get("database", {})
    drill.backup_label = str(newest.get("label"))
    drill.restored_bytes = newest.get("info", {}).get("size")
    drill.archive_id = next(
        (a["id"] for a in stanza.get("archive", []) if a.get("database") == db and "id" in a), drill.archive_id
    )
    version = next((d.get("version") for d in stanza.get("db", []) if d.get("id") == db.get("id")), None)
    drill.pg_bin = Path(PG_BIN.format(version=version or "15"))
    drill.tools["pgbackrest"] = pgbackrest.run(drill.run_as, drill.leader, "version", timeout=30).stdout.strip()
    remove_scratch(drill)
    if _answers(drill.scratch.address, drill.scratch.port):
        where = f"{drill.scratch.address}:{drill.scratch.port}"
        raise KumiaiError(f"something else listens on the drill address {where}: the copy would not be alone there")
    made = _as_town(drill, "mkdir", "-m", "0700", str(drill.scratch.dir))
    if made.returncode != 0:
        raise KumiaiError(f"cannot create the scratch directory {drill.scratch.dir}: {_tail(made.stderr)}")
    drill.scratch_made = True
    return f"leader {drill.leader.name}; repo{drill.repo.number} backup {drill.backup_label}"


@action("drill-write-marker")
def write_marker(ctx: RunContext) -> str:
    drill = _drill(ctx)
    assert drill.leader is not None
    conn = _connect(drill.leader.address, PG_PORT, drill.secrets, drill.town.database, drill.leader.tls)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.marker (id bigserial PRIMARY KEY, drill_id text NOT NULL,"
                    " written_at timestamptz NOT NULL, xid xid8 NOT NULL, tables jsonb NOT NULL)"
                ).format(sql.Identifier(SCHEMA))
            )
            cur.execute("SELECT version()")
            drill.tools["postgresql (primary)"] = cur.fetchone()[0].split(" on ")[0]
        conn.autocommit = False
        conn.set_session(isolation_level="REPEATABLE READ")
        with conn.cursor() as cur:
            cur.execute(TABLES_SQL, (SCHEMA,))
            names = [f"{schema}.{table}" for schema, table in cur.fetchall()]
            figures = fingerprint(cur, names)
            drill.primary_tables = {name: value for name, value in figures.items() if value is not None}
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.marker (drill_id, written_at, xid, tables)"
                    " VALUES (%s, clock_timestamp(), pg_current_xact_id(), %s) RETURNING xid::text, written_at"
                ).format(sql.Identifier(SCHEMA)),
                (drill.drill_id, psycopg2.extras.Json(drill.primary_tables)),
            )
            xid, written_at = cur.fetchone()
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            # The segment holding the commit just made; switching makes it complete, so it is archived now.
            cur.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")
            drill.marker_segment = cur.fetchone()[0]
            cur.execute("SELECT pg_switch_wal()")
    except psycopg2.Error as exc:
        raise KumiaiError(f"cannot write the drill marker at {drill.leader.name}: {str(exc).strip()}") from None
    finally:
        conn.close()
    # recovery_target_xid takes the 32-bit transaction id; xid8 carries the epoch above it.
    drill.marker_xid = str(int(xid) % 2**32)
    drill.marker_at = written_at
    return f"marker xid {drill.marker_xid} at {written_at.isoformat()}; {len(drill.primary_tables)} tables measured"


@action("drill-archive-marker")
def archive_marker(ctx: RunContext) -> str:
    drill = _drill(ctx)
    return f"segment {drill.marker_segment} into repo{drill.repo.number}"


@check("drill-marker-archived")
def marker_archived(ctx: RunContext) -> bool:
    """The WAL segment holding the marker's commit is in the chosen repo (read from the repo itself); its
    arrival is the drill's cut-off, taken from the primary's clock like the marker's time."""
    drill = _drill(ctx)
    assert drill.leader is not None and drill.marker_segment is not None
    listed = pgbackrest.run(
        drill.run_as,
        drill.leader,
        f"--repo={drill.repo.number}",
        "--output=json",
        f"--filter=^{drill.marker_segment}-",
        "repo-ls",
        f"archive/{drill.town.id}/{drill.archive_id}/{drill.marker_segment[:16]}",
        timeout=60,
    )
    if listed.returncode != 0:
        raise KumiaiError(f"cannot list repo{drill.repo.number}: {_tail(listed.stderr + listed.stdout)}")
    if not json.loads(listed.stdout or "{}"):
        return False
    conn = _connect(drill.leader.address, PG_PORT, drill.secrets, drill.town.database, drill.leader.tls)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT clock_timestamp()")
            drill.cutoff_at = cur.fetchone()[0]
    finally:
        conn.close()
    return True


@action("drill-restore")
def restore(ctx: RunContext) -> str:
    drill = _drill(ctx)
    assert drill.leader is not None and drill.marker_xid is not None
    # A member of the repo's site: its configuration names the repo (every member's names every repo).
    member = drill.town.at(drill.repo.site)[0]
    t0 = time.perf_counter()
    out = pgbackrest.run(
        drill.run_as,
        member,
        f"--repo={drill.repo.number}",
        f"--set={drill.backup_label}",
        f"--pg1-path={drill.scratch.data_dir}",
        f"--log-path={drill.scratch.dir}",
        f"--lock-path={drill.scratch.dir}",
        "--archive-mode=off",
        "--type=xid",
        f"--target={drill.marker_xid}",
        "--target-action=promote",
        "restore",
        timeout=max(ctx.remaining(), 1.0),
    )
    if out.returncode != 0:
        raise KumiaiError(f"pgbackrest restore from repo{drill.repo.number} failed: {_tail(out.stderr + out.stdout)}")
    drill.restore_s = time.perf_counter() - t0
    return f"{(drill.restored_bytes or 0) / 1e6:.1f} MB in {drill.restore_s:.2f} s"


def start_options(drill: Drill) -> str:
    """postgres options for the scratch instance: its own address, port, socket, access rules; no replication,
    no archiving, nothing synchronous (the restored configuration is the production member's)."""
    s = drill.scratch
    settings = {
        "listen_addresses": s.address,
        "port": str(s.port),
        "unix_socket_directories": str(s.dir),
        "hba_file": str(s.dir / "pg_hba.conf"),
        "ident_file": str(s.dir / "pg_ident.conf"),
        "archive_mode": "off",
        "archive_command": "",
        "synchronous_standby_names": "",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "cluster_name": f"kumiai-drill-{drill.town.id}",
    }
    return " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())


# Only the town's superuser, by password, from this machine's loopback (where the drill address lives).
SCRATCH_HBA = "local all all reject\nhost all {user} 127.0.0.0/8 scram-sha-256\n"


@action("drill-start")
def start(ctx: RunContext) -> str:
    drill = _drill(ctx)
    assert drill.pg_bin is not None
    s = drill.scratch
    for name, text in (("pg_hba.conf", SCRATCH_HBA.format(user=SUPERUSER)), ("pg_ident.conf", "")):
        wrote = _as_town(drill, "/usr/bin/tee", str(s.dir / name), stdin=text)
        if wrote.returncode != 0:
            raise KumiaiError(f"cannot write {s.dir / name}: {_tail(wrote.stderr)}")
    out = _as_town(
        drill,
        str(drill.pg_bin / "pg_ctl"),
        "start",
        # Waits until it accepts connections (read-only while it replays), or fails when it stops.
        "--wait",
        f"--timeout={max(int(ctx.remaining()), 1)}",
        "-D",
        str(s.data_dir),
        "-l",
        str(s.dir / "postgresql.log"),
        "-o",
        start_options(drill),
        timeout=max(ctx.remaining(), 1.0) + 10,
    )
    if out.returncode != 0:
        raise KumiaiError(f"the scratch instance did not start: {_tail(out.stderr + out.stdout)}")
    return f"{s.address}:{s.port}"


def _postmaster_running(drill: Drill) -> bool:
    assert drill.pg_bin is not None
    return _as_town(drill, str(drill.pg_bin / "pg_ctl"), "status", "-D", str(drill.scratch.data_dir)).returncode == 0


@check("drill-writable")
def writable(ctx: RunContext) -> bool:
    """The copy has reached the marker, promoted itself, and commits a write."""
    drill = _drill(ctx)
    try:
        conn = _connect(drill.scratch.address, drill.scratch.port, drill.secrets, drill.town.database, None)
    except KumiaiError:
        if not _postmaster_running(drill):
            log = _as_town(drill, "/usr/bin/tail", "-n", "5", str(drill.scratch.dir / "postgresql.log")).stdout
            raise KumiaiError(f"the scratch instance stopped during recovery: {_tail(log, 5)}") from None
        return False
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            if cur.fetchone()[0]:
                return False
            cur.execute("CREATE TEMP TABLE kumiai_drill_probe (x int); INSERT INTO kumiai_drill_probe VALUES (1)")
        drill.writable_after_s = time.monotonic() - drill.t0
        return True
    except psycopg2.Error:
        return False
    finally:
        conn.close()


@action("drill-verify")
def verify(ctx: RunContext) -> str:
    drill = _drill(ctx)
    conn = _connect(drill.scratch.address, drill.scratch.port, drill.secrets, drill.town.database, None)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT version()")
            drill.tools["postgresql (copy)"] = cur.fetchone()[0].split(" on ")[0]
            cur.execute(
                sql.SQL("SELECT max(written_at), coalesce(bool_or(drill_id = %s), false) FROM {}.marker").format(
                    sql.Identifier(SCHEMA)
                ),
                (drill.drill_id,),
            )
            drill.newest_marker_at, drill.marker_recovered = cur.fetchone()
            drill.recovered_tables = fingerprint(cur, sorted(drill.primary_tables))
    except psycopg2.Error as exc:
        raise KumiaiError(f"cannot read the recovered copy: {str(exc).strip()}") from None
    finally:
        conn.close()
    comparison = comparison_of(drill)
    if not drill.marker_recovered:
        raise KumiaiError("the drill's marker is not in the recovered copy")
    if comparison.mismatched:
        raise KumiaiError(f"tables differ from the primary: {', '.join(comparison.mismatched)}")
    return f"marker present; {len(comparison.tables)} tables match"


@action("drill-remove-scratch")
def remove_scratch_step(ctx: RunContext) -> str:
    remove_scratch(_drill(ctx))
    return "stopped and removed"


def remove_scratch(drill: Drill) -> None:
    """Stop the scratch instance (immediately: it is thrown away) and remove its directory; idempotent."""
    s = drill.scratch
    if drill.pg_bin is not None and (s.data_dir / "postmaster.pid").exists():
        _as_town(drill, str(drill.pg_bin / "pg_ctl"), "stop", "-m", "immediate", "-D", str(s.data_dir), timeout=120)
    gone = _as_town(drill, "/bin/rm", "-rf", "--one-file-system", str(s.dir), timeout=300)
    if gone.returncode != 0:
        raise KumiaiError(f"cannot remove the scratch instance {s.dir}: {_tail(gone.stderr)}")
    drill.scratch_made = False


# --- one town, start to evidence


def comparison_of(drill: Drill) -> Comparison:
    tables = [
        TableCheck(
            table=name,
            rows_primary=rows,
            checksum_primary=checksum,
            rows_recovered=(drill.recovered_tables.get(name) or (None, None))[0],
            checksum_recovered=(drill.recovered_tables.get(name) or (None, None))[1],
        )
        for name, (rows, checksum) in sorted(drill.primary_tables.items())
    ]
    return Comparison(method=COMPARISON, caveat=CAVEAT, tables=tables if drill.recovered_tables else [])


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds") if moment else None


def build_evidence(drill: Drill, steps: Sequence[StepRecord], target_name: str) -> DrillEvidence:
    rpo = None
    if drill.cutoff_at is not None and drill.newest_marker_at is not None:
        rpo = max((drill.cutoff_at - drill.newest_marker_at).total_seconds(), 0.0)
    ev = DrillEvidence(
        drill_id=drill.drill_id,
        town=drill.town.id,
        town_name=drill.town_name,
        target=target_name,
        started_at=_iso(drill.started_at) or "",
        finished_at=_iso(datetime.now(UTC)) or "",
        repo=drill.repo.number,
        repo_site=drill.repo.site,
        scratch=f"{drill.scratch.address}:{drill.scratch.port} {drill.scratch.dir}",
        backup_label=drill.backup_label,
        rpo_target_s=drill.rpo_target_s,
        rto_target_s=drill.rto_target_s,
        marker_written_at=_iso(drill.marker_at),
        marker_xid=drill.marker_xid,
        cutoff_at=_iso(drill.cutoff_at),
        newest_recovered_marker_at=_iso(drill.newest_marker_at),
        marker_recovered=drill.marker_recovered,
        rpo_s=rpo,
        rto_s=drill.writable_after_s,
        restore_s=drill.restore_s,
        restored_bytes=drill.restored_bytes,
        comparison=comparison_of(drill),
        steps=list(steps),
        tools={"kumiai": __version__, **drill.tools},
        verdict="fail",
    )
    # A failed step is the reason; what it left unmeasured follows from it and is not listed again.
    failed = [f"step failed: {s.name}: {s.detail}" for s in steps if s.status == "failed"]
    reasons = failed or evidence.verdict_reasons(ev)
    return ev.model_copy(update={"reasons": reasons, "verdict": "fail" if reasons else "pass"})


def drill_runbook_path() -> Path:
    return runbooks_dir() / "drill.yaml"


def drill_town(
    target: Target,
    topology: Topology,
    town_id: str,
    repo_number: int | None,
    op: Operation,
    *,
    t0: float | None = None,
) -> DrillEvidence:
    """Run dr-runbooks/drill.yaml for one town (as steps of `op`); the evidence, whether it passed or not.

    t0 (time.monotonic()) is where its RTO starts: the command's start for the first town, else its own start."""
    town = topology.towns[town_id]
    model = target.inventory.town(town_id)
    number = repo_number if repo_number is not None else town.repo(town.dr_site).number
    repo = next(r for r in town.repos if r.number == number)
    started = datetime.now(UTC)
    drill = Drill(
        target=target,
        town=town,
        town_name=model.name,
        rpo_target_s=model.protection.rpo_seconds,
        rto_target_s=model.protection.rto_seconds,
        repo=repo,
        scratch=target.scratch(town_id, repo.site),
        secrets=load_town_secrets(topology.secrets_file(town_id)),
        run_as=target.run_as(town_id),
        drill_id=f"{started.strftime('%Y%m%dT%H%M%SZ')}-{town_id}-{uuid.uuid4().hex[:6]}",
        started_at=started,
        t0=t0 if t0 is not None else time.monotonic(),
    )
    book = load_runbook(drill_runbook_path())
    prefix = f"{town_id}: "
    first = len(op.steps)
    try:
        run(book, RunContext(params={"town": town_id, "repo": number}, values={"drill": drill}), op, prefix=prefix)
    except (KumiaiError, psycopg2.Error, subprocess.TimeoutExpired) as exc:
        # A failed step ends this town's drill with a failing verdict, not the command: the evidence says why.
        message = exc.message if isinstance(exc, KumiaiError) else f"{type(exc).__name__}: {str(exc).strip()}"
        if op.steps[first:] and op.steps[-1].status == "failed":
            op.steps[-1].detail = message[:500]
    finally:
        if drill.scratch_made:
            with op.step(f"{prefix}drill: remove-scratch (after a failure)"):
                remove_scratch(drill)
    steps = [StepRecord(**s.as_dict()) for s in op.steps[first:]]
    return build_evidence(drill, steps, target.name)


# --- evidence on disk


def drills_dir() -> Path:
    return paths.evidence_dir() / "drills"


def write_evidence(ev: DrillEvidence) -> Path:
    """drill.json, drill.md and drill.html in the drill's own directory; returns that directory."""
    where = drills_dir() / ev.drill_id
    where.mkdir(parents=True, exist_ok=True)
    (where / "drill.json").write_text(evidence.to_json(ev), encoding="utf-8")
    (where / "drill.md").write_text(evidence.to_markdown(ev), encoding="utf-8")
    (where / "drill.html").write_text(evidence.to_html(ev), encoding="utf-8")
    copy_evidence(where / "drill.json", where / "drill.md", where / "drill.html")
    return where


def write_summary(consortium: str) -> Path:
    """evidence/drills/index.html from every drill.json on record (a file that does not parse is skipped)."""
    records = []
    links = {}
    for path in sorted(drills_dir().glob("*/drill.json")):
        try:
            ev = evidence.from_json(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        records.append(ev)
        links[ev.drill_id] = f"{path.parent.name}/drill.html"
    index = drills_dir() / "index.html"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_text(evidence.summary_html(records, links, consortium), encoding="utf-8")
    copy_evidence(index)
    return index

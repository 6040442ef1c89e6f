"""A continuous writer against a town, for the failure tests: what did clients see acknowledged, and what survived.

The writer inserts increasing sequence numbers into a table of its own, one transaction each, through libpq's
multi-host connection (`target_session_attrs=read-write`), so it follows the town's primary wherever it moves among
the hosts it was given. Every attempt ends in exactly one of three outcomes:
- acknowledged: COMMIT returned. The client was told the row is durable; losing it is data loss.
- ambiguous: COMMIT was sent but no answer came (the connection broke). The row may or may not exist; failure
  tests must not count it either way.
- failed: an error before COMMIT (no server, read-only server, broken connection). The row certainly does not exist.

Typical use:
    with Writer(town_endpoint(town, secrets), "killtest") as w:
        ...  # break something
    result = w.result
    assert result.lost(held_seqs(town_endpoint(town, secrets), "killtest")) == []
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg2

from kumiai.datalayer.secrets import TownSecrets, load_town_secrets
from kumiai.datalayer.topology import PG_PORT, SUPERUSER, ControllerTLS, TownLayout
from kumiai.inventory import load_inventory
from kumiai.lab.target import LabTarget

# Short timeouts: a writer must notice a dead or cut-off server in about a second, not after TCP's minutes.
CONNECT_TIMEOUT_S = 2
TCP_USER_TIMEOUT_MS = 3000


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom a writer connects: libpq tries `hosts` in order."""

    hosts: tuple[str, ...]
    dbname: str
    user: str
    password: str = field(repr=False)
    port: int = PG_PORT
    tls: ControllerTLS | None = None  # verify the server against the consortium CA (sslmode=verify-full)
    client_cert: bool = False  # and present the controller's certificate (the superuser must)

    def connect(self, *, read_write: bool = True, application_name: str = "kumiai-test-writer") -> Any:
        ssl: dict[str, str] = {}
        if self.tls is not None:
            ssl = {"sslmode": "verify-full", "sslrootcert": str(self.tls.ca_file)}
            if self.client_cert:
                ssl |= {"sslcert": str(self.tls.cert), "sslkey": str(self.tls.key)}
        return psycopg2.connect(
            host=",".join(self.hosts),
            port=",".join([str(self.port)] * len(self.hosts)),
            dbname=self.dbname,
            user=self.user,
            password=self.password,
            target_session_attrs="read-write" if read_write else "any",
            connect_timeout=CONNECT_TIMEOUT_S,
            tcp_user_timeout=TCP_USER_TIMEOUT_MS,
            keepalives=1,
            keepalives_idle=1,
            keepalives_interval=1,
            keepalives_count=2,
            application_name=application_name,
            **ssl,
        )

    def only(self, *hosts: str) -> Endpoint:
        """The same database and credentials at other hosts (e.g. one member, to read what it holds)."""
        return dataclasses.replace(self, hosts=tuple(hosts))


def town_endpoint(town: TownLayout, secrets: TownSecrets, sites: Sequence[str] | None = None) -> Endpoint:
    """The town's database as its application user, over its members at these sites (default: both, primary first)."""
    order = sites or (town.primary_site, town.dr_site)
    hosts = tuple(m.address for site in order for m in town.at(site))
    return Endpoint(
        hosts=hosts, dbname=town.database, user=town.app_user, password=secrets.app_password, tls=town.members[0].tls
    )


def superuser_endpoint(town: TownLayout, secrets: TownSecrets, sites: Sequence[str] | None = None) -> Endpoint:
    """As town_endpoint, as the superuser (for checks that read server state, never for the writer's rows)."""
    app = town_endpoint(town, secrets, sites)
    return dataclasses.replace(app, user=SUPERUSER, password=secrets.superuser_password, client_cert=True)


def lab_town(inventory: Path, lab_dir: Path, vault_keys: Path, town_id: str) -> tuple[TownLayout, TownSecrets]:
    """A lab town's layout (for its current placement) and credentials, read the way kumiai reads them."""
    topology = LabTarget(load_inventory(inventory), lab_dir).topology()
    return topology.towns[town_id], load_town_secrets(topology.secrets_file(town_id), vault_keys)


@dataclass(frozen=True)
class Commit:
    seq: int
    at: float  # time.time() when COMMIT returned (acknowledged) or broke (ambiguous)
    host: str  # the server the transaction ran on


@dataclass(frozen=True)
class Outage:
    """The longest time clients could not get a commit acknowledged."""

    seconds: float
    after: float  # the last acknowledged commit before the gap (or the writer's start)
    before: float  # the first acknowledged commit after it (or the writer's stop)


@dataclass
class WriterResult:
    table: str
    started: float
    stopped: float
    acknowledged: list[Commit]
    ambiguous: list[Commit]
    failures: Counter[str]  # attempts that certainly did not commit, by the first line of their error

    @property
    def acknowledged_seqs(self) -> set[int]:
        return {c.seq for c in self.acknowledged}

    def lost(self, held: Collection[int]) -> list[Commit]:
        """Acknowledged commits that a server does not hold."""
        return lost_commits(self.acknowledged, held)

    def outage(self) -> Outage:
        return longest_outage(self.acknowledged, self.started, self.stopped)

    def by_host(self) -> dict[str, list[Commit]]:
        hosts: dict[str, list[Commit]] = {}
        for c in self.acknowledged:
            hosts.setdefault(c.host, []).append(c)
        return hosts

    def summary(self) -> dict[str, Any]:
        outage = self.outage()
        return {
            "table": self.table,
            "seconds": round(self.stopped - self.started, 3),
            "acknowledged": len(self.acknowledged),
            "ambiguous": len(self.ambiguous),
            "failed": sum(self.failures.values()),
            "longest_outage_s": round(outage.seconds, 3),
            "hosts": {h: len(cs) for h, cs in sorted(self.by_host().items())},
        }


def lost_commits(acknowledged: Iterable[Commit], held: Collection[int]) -> list[Commit]:
    return [c for c in acknowledged if c.seq not in held]


def longest_outage(acknowledged: Sequence[Commit], started: float, stopped: float) -> Outage:
    """The widest gap between consecutive acknowledged commits, counting the writer's start and stop as edges."""
    times = [started, *sorted(c.at for c in acknowledged), stopped]
    widest = max(itertools.pairwise(times), key=lambda gap: gap[1] - gap[0])
    return Outage(seconds=widest[1] - widest[0], after=widest[0], before=widest[1])


_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,40}")


def table_name(name: str) -> str:
    table = f"kumiai_writer_{name}"
    if not _TABLE.fullmatch(table):
        raise ValueError(f"writer name {name!r}: lower-case letters, digits and '_' only")
    return table


def held_seqs(endpoint: Endpoint, name: str, *, read_write: bool = False) -> set[int]:
    """The sequence numbers a server holds: the first of `endpoint.hosts` that answers (a standby reads too), or,
    with `read_write`, the primary among them."""
    conn = endpoint.connect(read_write=read_write, application_name="kumiai-test-reader")
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT seq FROM {table_name(name)}")
            return {int(row[0]) for row in cur.fetchall()}
    finally:
        conn.close()


def create_table(endpoint: Endpoint, name: str) -> None:
    """(Re)create a writer's table at the endpoint's primary."""
    conn = endpoint.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table_name(name)}")
            cur.execute(
                f"CREATE TABLE {table_name(name)} (seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
            )
    finally:
        conn.close()


def accepts_write(endpoint: Endpoint, name: str, seq: int) -> bool:
    """Whether the first server of `endpoint` that answers commits a row (`seq`, outside the writer's numbers)."""
    try:
        conn = endpoint.connect(read_write=False, application_name="kumiai-test-probe")
    except psycopg2.Error:
        return False
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table_name(name)} (seq) VALUES (%s)", (seq,))
        return True
    except psycopg2.Error:
        return False
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class Writer:
    """Inserts one row per transaction, as fast as `interval_s` allows, until stopped; a thread of its own."""

    def __init__(self, endpoint: Endpoint, name: str, *, interval_s: float = 0.01, retry_s: float = 0.05) -> None:
        self.endpoint = endpoint
        self.name = name
        self.table = table_name(name)
        self.interval_s = interval_s
        self.retry_s = retry_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"writer-{name}", daemon=True)
        self._acknowledged: list[Commit] = []
        self._ambiguous: list[Commit] = []
        self._failures: Counter[str] = Counter()
        self._started = 0.0
        self.result: WriterResult | None = None

    def start(self, *, create: bool = True) -> Writer:
        """Start writing; first create (afresh) the writer's table at the current primary, unless told not to (a
        writer waiting for a standby to be promoted finds its table there, created earlier by `create_table`)."""
        if create:
            create_table(self.endpoint, self.name)
        self._started = time.time()
        self._thread.start()
        return self

    def acknowledged_count(self) -> int:
        return len(self._acknowledged)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until `count` more commits are acknowledged (the writer is really writing)."""
        goal = len(self._acknowledged) + count
        deadline = time.monotonic() + timeout_s
        while len(self._acknowledged) < goal:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"writer {self.name}: {count} commits not acknowledged in {timeout_s} s: {self._failures}"
                )
            time.sleep(0.05)

    def stop(self) -> WriterResult:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise AssertionError(f"writer {self.name} did not stop within 30 s")
        self.result = WriterResult(
            table=self.table,
            started=self._started,
            stopped=time.time(),
            acknowledged=list(self._acknowledged),
            ambiguous=list(self._ambiguous),
            failures=Counter(self._failures),
        )
        return self.result

    def __enter__(self) -> Writer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _loop(self) -> None:
        seq = 0
        conn: Any = None
        while not self._stop.is_set():
            seq += 1  # never reused: an ambiguous number may exist on some server
            if conn is None:
                try:
                    conn = self.endpoint.connect()
                except psycopg2.Error as exc:
                    self._failures[_first_line(exc)] += 1
                    self._stop.wait(self.retry_s)
                    continue
            host = conn.info.host
            try:
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {self.table} (seq) VALUES (%s)", (seq,))
            except psycopg2.Error as exc:
                self._failures[_first_line(exc)] += 1
                conn = self._discard(conn)
                self._stop.wait(self.retry_s)
                continue
            try:
                conn.commit()
            except psycopg2.Error:
                self._ambiguous.append(Commit(seq=seq, at=time.time(), host=host))
                conn = self._discard(conn)
                continue
            self._acknowledged.append(Commit(seq=seq, at=time.time(), host=host))
            if self.interval_s:
                self._stop.wait(self.interval_s)
        self._discard(conn)

    @staticmethod
    def _discard(conn: Any) -> None:
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        return None

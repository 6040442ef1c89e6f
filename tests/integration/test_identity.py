"""Given the shared lab: each town runs as its own OS user, which alone owns the town's files and repos.

A town's superuser can make its server read files (pg_read_file, pg_ls_dir): the server runs as the town's user, so
what it reaches is what that user reaches. For every ordered pair of lab towns, X's superuser is refused every file
of Y (Patroni's configuration with Y's superuser password, pgBackRest's with Y's cipher key, Y's data directory, Y's
repo) for lack of permission, while it reads its own.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from conftest import Lab

from kumiai.datalayer.secrets import TownSecrets
from kumiai.datalayer.sql import connect
from kumiai.datalayer.topology import PG_PORT, MemberLayout, TownLayout
from support import faults
from support.writer import lab_town

pytestmark = pytest.mark.integration

LAB_TOWNS = ["kiyokawa", "manazuru", "nakai"]


def towns(lab: Lab) -> dict[str, tuple[TownLayout, TownSecrets]]:
    return {t: lab_town(lab.inventory, lab.lab_dir, lab.vault_keys, t) for t in LAB_TOWNS}


def postmaster(member: MemberLayout) -> int | None:
    return faults.pidfile(member.data_dir / "postmaster.pid")


def leader_of(town: TownLayout, secrets: TownSecrets) -> MemberLayout:
    for member in town.at(town.primary_site):
        try:
            conn = connect(member.address, PG_PORT, secrets, tls=member.tls, app="kumiai-test-identity")
        except psycopg2.Error:
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("select pg_is_in_recovery()")
                row = cur.fetchone()
        finally:
            conn.close()
        if row is not None and row[0] is False:
            return member
    raise AssertionError(f"{town.id} has no leader at {town.primary_site}")


def private_files(town: TownLayout, member: MemberLayout) -> dict[str, tuple[str, str]]:
    """What of the town a superuser of another town must not read: name -> (function, path)."""
    files = {
        "Patroni configuration": ("pg_read_file", str(member.patroni_config)),
        "pgBackRest configuration": ("pg_read_file", str(member.pgbackrest_config)),
        "data directory file": ("pg_read_file", str(member.data_dir / "PG_VERSION")),
        "data directory": ("pg_ls_dir", str(member.data_dir)),
        "member directory": ("pg_ls_dir", str(member.dir)),
    }
    for repo in town.repos:
        if repo.bucket is None:  # a posix repo: the town's own directory
            files[f"repo{repo.number} directory"] = ("pg_ls_dir", str(repo.path))
            files[f"repo{repo.number} backup.info"] = (
                "pg_read_binary_file",
                str(repo.path / "backup" / town.id / "backup.info"),
            )
    return files


@contextlib.contextmanager
def superuser(member: MemberLayout, secrets: TownSecrets) -> Iterator[Any]:
    """A cursor at the member as its town's superuser (autocommit: a refused read leaves nothing to roll back)."""
    conn = connect(member.address, PG_PORT, secrets, tls=member.tls, app="kumiai-test-identity")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


SQL = {
    "pg_read_file": "select pg_read_file(%s)",
    "pg_read_binary_file": "select length(pg_read_binary_file(%s))::text",  # backup.info is encrypted
    "pg_ls_dir": "select string_agg(f, ' ') from pg_ls_dir(%s) f",
}


def read_as(cur: Any, function: str, path: str) -> tuple[str | None, str | None]:
    """(what the server read, None) or (None, the error) when a superuser has its server read `path`."""
    sql = SQL[function]
    try:
        cur.execute(sql, (path,))
    except psycopg2.Error as exc:
        return None, f"{exc.pgcode} {exc.pgerror}"
    row = cur.fetchone()
    return (str(row[0]) if row else "", None)


def test_a_towns_superuser_reads_none_of_another_towns_files(lab: Lab) -> None:
    lab_towns = towns(lab)
    leaders = {t: leader_of(layout, secrets) for t, (layout, secrets) in lab_towns.items()}
    refused = 0
    for x, y in itertools.permutations(LAB_TOWNS, 2):
        y_town, _ = lab_towns[y]
        with superuser(leaders[x], lab_towns[x][1]) as cur:
            for y_member in y_town.members:
                for what, (function, path) in private_files(y_town, y_member).items():
                    got, error = read_as(cur, function, path)
                    assert got is None, f"{x}'s superuser read {y}'s {what} ({path})"
                    assert error is not None and "Permission denied" in error, f"{x} -> {y} {what}: {error}"
                    assert error.startswith("42501 "), error  # insufficient_privilege, from EACCES
                    refused += 1
    # Ordered pairs, members of Y, files of a member: five, and two more per posix repo (the lab's are in S3, where
    # tests/integration/test_object_store.py shows another town's keys reach nothing).
    posix_repos = sum(r.bucket is None for r in lab_towns[LAB_TOWNS[0]][0].repos)
    assert refused == 6 * 4 * (5 + 2 * posix_repos)
    # Positive control: each town's superuser reads the same files of its own, at every member of the town.
    for t, (town, secrets) in lab_towns.items():
        with superuser(leaders[t], secrets) as cur:
            for member in town.members:
                files = private_files(town, member)
                for what, (function, path) in files.items():
                    got, error = read_as(cur, function, path)
                    assert error is None and got, f"{t} cannot read its own {what} ({path}): {error}"
                assert f'scope: "{t}"' in (read_as(cur, *files["Patroni configuration"])[0] or "")
                assert f"[{t}]" in (read_as(cur, *files["pgBackRest configuration"])[0] or "")


def test_local_superuser_access_is_mapped_from_the_towns_user_only(lab: Lab) -> None:
    for t, (town, secrets) in towns(lab).items():
        with superuser(leader_of(town, secrets), secrets) as cur:
            cur.execute("select map_name, sys_name, pg_username from pg_ident_file_mappings where error is null")
            assert cur.fetchall() == [("kumiai", town.os_user, "postgres")], t
            cur.execute(
                "select user_name, auth_method, options from pg_hba_file_rules where type = 'local' and error is null"
            )
            assert cur.fetchall() == [(["postgres"], "peer", ["map=kumiai"])], t


def owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def test_each_towns_files_belong_to_its_user_with_private_modes(lab: Lab) -> None:
    for t, (town, _) in towns(lab).items():
        user = town.os_user
        assert user == f"kumiai-{t}"
        logs: list[Path] = []
        for member in town.members:
            assert owner(member.dir) == (user, user, 0o700), member.dir
            assert owner(member.data_dir) == (user, user, 0o700), member.data_dir
            for config in (member.patroni_config, member.pgbackrest_config):
                assert owner(config) == (user, user, 0o600), config
            socket = member.socket_dir / f".s.PGSQL.{PG_PORT}"
            assert stat.S_ISSOCK(socket.stat().st_mode) and owner(socket)[:2] == (user, user), socket
            logs += list(member.dir.glob("*.log"))  # pgBackRest's (archive-push where the member leads)
            foreign = [f for f in _walk(member.data_dir) if _uid(f) not in (pwd.getpwnam(user).pw_uid, None)]
            assert foreign == [], member.data_dir
        assert logs and all(owner(log)[:2] == (user, user) for log in logs), logs
        for repo in town.repos:
            if repo.bucket is None:
                assert owner(repo.path) == (user, user, 0o700), repo.path
                assert owner(repo.path.parent) == ("root", "root", 0o711), repo.path.parent


def _uid(path: Path) -> int | None:
    try:
        return path.lstat().st_uid
    except FileNotFoundError:  # PostgreSQL removed it meanwhile (a WAL segment, a temporary file)
        return None


def _walk(top: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            yield Path(root) / name


def _uids(pid: int) -> tuple[set[int], set[int]] | None:
    """The real, effective, saved and filesystem uids and gids of a process; None once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].split() for line in lines if ":" in line}
    return {int(u) for u in fields["Uid"]}, {int(g) for g in fields["Gid"]}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_no_member_process_of_a_town_runs_as_another_user(lab: Lab) -> None:
    supervisors = {faults.pidfile(p) for p in lab.lab_dir.glob("*/supervisor/supervisord.pid")} - {None}
    under_supervisors = faults.descendants(supervisors)  # type: ignore[arg-type]
    seen: dict[int, str] = {}
    for t, (town, _) in towns(lab).items():
        account = pwd.getpwnam(town.os_user)
        for member in town.members:
            patroni = {p for p in under_supervisors if str(member.patroni_config) in _cmdline(p)}
            pm = postmaster(member)
            assert patroni and pm is not None, f"{member.name}: Patroni {patroni}, postmaster {pm}"
            processes = faults.descendants(patroni | {pm})
            assert len(processes) >= 4, f"{member.name}: {processes}"  # Patroni, postmaster and its workers
            for pid in processes:
                ids = _uids(pid)
                if ids is None:  # a backend that ended meanwhile
                    continue
                assert ids == ({account.pw_uid}, {account.pw_gid}), f"{member.name}: {pid} {_cmdline(pid)} {ids}"
                assert seen.setdefault(pid, t) == t
    assert len({t for t in seen.values()}) == len(LAB_TOWNS)

"""Faults injected into a lab: SIGKILL of a member's PostgreSQL, of a member's whole process tree, of a whole site.

Only what the lab started is touched, found through the lab's own files: a site's supervisord from its pid file,
a member's Patroni from supervisord (XML-RPC), its postmaster from `postmaster.pid` in the member's data directory.
Patroni starts PostgreSQL detached (the postmaster's parent is PID 1, not Patroni), so a member's tree is Patroni,
the postmaster and all their descendants, plus any process whose arguments name the member's directory (an
archive-push, a pg_rewind). Never by process name: other labs run the same programs as the same user.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import xmlrpc.client
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from kumiai.datalayer.topology import MemberLayout, SiteLayout


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after the last ')' are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _args(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(roots: Iterable[int]) -> set[int]:
    """The roots that still exist and every process below them (by /proc parentage)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        parent = _ppid(pid)
        if parent is not None:
            children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [r for r in roots if Path(f"/proc/{r}").exists()]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def naming(directory: Path) -> set[int]:
    """Processes with an argument in `directory` (the directory itself or a path below it)."""
    d = str(directory)
    hits = set()
    for pid in _all_pids():
        for arg in _args(pid):
            # An option such as --pg1-path=DIR names it after '='.
            value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
            if value == d or value.startswith(d + "/"):
                hits.add(pid)
                break
    return hits - _own_line()


def _own_line() -> set[int]:
    """This process and its ancestors: never a victim, whatever their arguments say."""
    line = set()
    pid: int | None = os.getpid()
    while pid:
        line.add(pid)
        pid = _ppid(pid)
    return line


def pidfile(path: Path) -> int | None:
    """The PID on the first line of a pid file (supervisord.pid, postmaster.pid); None when absent."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def program_pid(site: SiteLayout, program: str) -> int | None:
    pid = int(_supervisord(site).supervisor.getProcessInfo(program)["pid"])
    return pid or None


def postmaster_pid(member: MemberLayout) -> int | None:
    return pidfile(member.data_dir / "postmaster.pid")


def member_tree(site: SiteLayout, member: MemberLayout) -> set[int]:
    roots = {p for p in (program_pid(site, member.program), postmaster_pid(member)) if p}
    return descendants(roots | naming(member.dir)) - _own_line()


def site_tree(site: SiteLayout) -> set[int]:
    supervisord = pidfile(site.supervisor_dir / "supervisord.pid")
    return descendants(({supervisord} if supervisord else set()) | naming(site.dir)) - _own_line()


def kill(pids: Iterable[int], timeout_s: float = 10.0) -> None:
    """SIGKILL these processes and wait until they are gone (or are zombies nobody reaped yet)."""
    pids = set(pids)
    _signal(pids, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while (alive := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive:
        raise AssertionError(f"still alive after SIGKILL: {sorted(alive)}")


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # gone already: the fault happened anyway
            os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class Killed:
    pids: tuple[int, ...]
    at: float  # time.time() when the processes stopped serving


def kill_postmaster(member: MemberLayout) -> Killed:
    """SIGKILL of the member's PostgreSQL (the postmaster, and its backends with it); Patroni stays."""
    pid = postmaster_pid(member)
    if pid is None:
        raise AssertionError(f"{member.name} has no postmaster.pid")
    victims = descendants([pid])
    kill(victims)
    return Killed(tuple(sorted(victims)), time.time())


def kill_member_held_down(site: SiteLayout, member: MemberLayout) -> Killed:
    """SIGKILL of the member's whole process tree, kept down (as when its host is lost).

    supervisord would restart a killed Patroni within a second, which is not a lost member. So the tree is first
    frozen (SIGSTOP: from then on the member is as good as gone), supervisord is told to stop the program (its
    SIGTERM stays pending on the frozen process), and then everything gets SIGKILL: supervisord sees its program
    exit while stopping it and leaves it stopped. Start it again with the site's service manager.
    """
    victims = member_tree(site, member)
    _signal(victims, signal.SIGSTOP)
    at = time.time()
    _supervisord(site).supervisor.stopProcess(member.program, False)
    # Nothing of the frozen tree can have started anything since; look again all the same before the kill.
    victims |= member_tree(site, member)
    kill(victims)
    return Killed(tuple(sorted(victims)), at)


def _supervisord(site: SiteLayout) -> xmlrpc.client.ServerProxy:
    sock = site.supervisor_dir / "supervisord.sock"
    return xmlrpc.client.ServerProxy("http://localhost", transport=SupervisorTransport(None, None, f"unix://{sock}"))


def kill_site(site: SiteLayout) -> Killed:
    """SIGKILL of everything a lab site runs: its supervisord, etcd, every member's Patroni and PostgreSQL."""
    victims = site_tree(site)
    kill(victims)
    return Killed(tuple(sorted(victims)), time.time())

"""Control of each site's supervisord in the lab: is it up, what runs under it, shut it down."""

from __future__ import annotations

import subprocess
import time
import xmlrpc.client
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, cast

from supervisor.xmlrpc import SupervisorTransport

from kumiai.datalayer.runner import tool
from kumiai.datalayer.topology import SiteLayout
from kumiai.errors import KumiaiError


def supervisorctl(site: SiteLayout, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("supervisorctl")), "--configuration", str(site.supervisor_config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parse_status(output: str) -> dict[str, str]:
    """`supervisorctl status` lines ("name   RUNNING   pid 1, uptime 0:01:02") -> {name: state}."""
    states = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isupper():
            states[parts[0]] = parts[1]
    return states


def is_running(site: SiteLayout) -> bool:
    if not site.supervisor_config.exists():
        return False
    return supervisorctl(site, "pid", timeout=10).stdout.strip().isdigit()


def program_states(site: SiteLayout) -> dict[str, str]:
    if not is_running(site):
        return {}
    return parse_status(supervisorctl(site, "status").stdout)


def _pid(site: SiteLayout) -> int | None:
    pidfile = site.supervisor_dir / "supervisord.pid"
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _rpc(site: SiteLayout) -> xmlrpc.client.ServerProxy:
    socket = site.supervisor_dir / "supervisord.sock"
    return xmlrpc.client.ServerProxy("http://localhost", transport=SupervisorTransport(None, None, f"unix://{socket}"))


ACTIVE = ("STARTING", "RUNNING", "BACKOFF", "STOPPING")


def _process_infos(proxy: xmlrpc.client.ServerProxy) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], proxy.supervisor.getAllProcessInfo())


def stop_programs(
    sites: list[SiteLayout], prefix: str, timeout: float = 120, *, only: Collection[str] | None = None
) -> None:
    """Stop the programs named with `prefix` (and, given `only`, in it) of all these sites at once; wait until down.

    supervisord's own shutdown stops programs one after the other: a Patroni replica then sees its leader go,
    takes over and is stopped in the middle of that. Stopping every member of a cluster together avoids it.
    """

    def matches(info: dict[str, Any]) -> bool:
        return (
            info["name"].startswith(prefix) and (only is None or info["name"] in only) and info["statename"] in ACTIVE
        )

    running = [s for s in sites if is_running(s)]
    for site in running:
        proxy = _rpc(site)
        for info in _process_infos(proxy):
            if matches(info):
                proxy.supervisor.stopProcess(f"{info['group']}:{info['name']}", False)
    deadline = time.monotonic() + timeout
    for site in running:
        proxy = _rpc(site)
        while any(matches(i) for i in _process_infos(proxy)):
            if time.monotonic() > deadline:
                raise KumiaiError(f"programs {prefix}* of {site.id} did not stop within {timeout:.0f} s")
            time.sleep(0.2)


def shutdown(site: SiteLayout, timeout: float = 120) -> bool:
    """Stop every remaining program of the site and supervisord itself; False if it was not up."""
    if not is_running(site):
        return False
    pid = _pid(site)
    supervisorctl(site, "shutdown", timeout=timeout)
    deadline = time.monotonic() + timeout
    while pid is not None and Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise KumiaiError(f"supervisord of {site.id} (pid {pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.2)
    return True


def start_programs(site: SiteLayout, programs: Sequence[str], timeout: float = 60) -> None:
    """Start programs supervisord already knows (their files are written by the process_supervisor role)."""
    if not programs:
        return
    proxy = _rpc(site)
    for name in programs:
        try:
            proxy.supervisor.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise KumiaiError(f"{site.id}: cannot start {name}: {fault.faultString}") from None
    deadline = time.monotonic() + timeout
    while any(i["name"] in programs and i["statename"] != "RUNNING" for i in _process_infos(proxy)):
        if time.monotonic() > deadline:
            raise KumiaiError(f"{site.id}: {', '.join(programs)} did not start within {timeout:.0f} s")
        time.sleep(0.2)


def remove_programs(site: SiteLayout, programs: Sequence[str], timeout: float = 120) -> None:
    """Stop programs, make supervisord forget them, then delete their files (written by the process_supervisor
    role), so neither a restart nor a reread brings them back. In this order a run interrupted anywhere leaves
    either a known program or a file, and the next run removes what is left."""
    files = [site.supervisor_dir / "programs" / f"{name}.conf" for name in programs]
    if is_running(site):
        stop_programs([site], "", timeout, only=set(programs))
        proxy = _rpc(site)
        known = {i["group"] for i in _process_infos(proxy)}
        for name in programs:
            if name in known:
                proxy.supervisor.removeProcessGroup(name)
    elif any(f.exists() for f in files):
        # Its files would start the programs again with supervisord: remove them only while it can be asked.
        raise KumiaiError(f"supervisord of {site.id} is not running: cannot stop {', '.join(programs)} there")
    for path in files:
        path.unlink(missing_ok=True)


class SupervisorServices:
    """The lab's service manager: one supervisord per site (kumiai.datalayer.target.ServiceManager)."""

    def __init__(self, sites: Sequence[SiteLayout]) -> None:
        self._sites = {s.id: s for s in sites}

    def start(self, site: str, programs: Sequence[str]) -> None:
        start_programs(self._sites[site], programs)

    def stop(self, site: str, programs: Sequence[str]) -> None:
        wanted = set(programs)
        stop_programs([self._sites[site]], "", only=wanted)

    def states(self, site: str) -> dict[str, str]:
        return program_states(self._sites[site])

    def remove(self, site: str, programs: Sequence[str]) -> None:
        remove_programs(self._sites[site], programs)

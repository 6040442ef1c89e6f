"""Control of each site's supervisord in the lab: is it up, what runs under it, shut it down."""

from __future__ import annotations

import subprocess
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, cast

from supervisor.xmlrpc import SupervisorTransport

from kumiai.errors import KumiaiError
from kumiai.lab.layout import SiteLayout
from kumiai.datalayer.runner import tool


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


def stop_programs(sites: list[SiteLayout], prefix: str, timeout: float = 120) -> None:
    """Stop the matching programs of all these sites at once and wait until they are down.

    supervisord's own shutdown stops programs one after the other: a Patroni replica then sees its leader go,
    takes over and is stopped in the middle of that. Stopping every member of a cluster together avoids it.
    """
    running = [s for s in sites if is_running(s)]
    for site in running:
        proxy = _rpc(site)
        for info in _process_infos(proxy):
            if info["name"].startswith(prefix) and info["statename"] in ACTIVE:
                proxy.supervisor.stopProcess(f"{info['group']}:{info['name']}", False)
    deadline = time.monotonic() + timeout
    for site in running:
        proxy = _rpc(site)
        while any(i["name"].startswith(prefix) and i["statename"] in ACTIVE for i in _process_infos(proxy)):
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

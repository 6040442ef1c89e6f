"""A network partition between the two sites of a lab, while the controller (this process) still reaches both.

On loopback every connection leaves from 127.0.0.1 and every lab process runs as the same user, so neither source
addresses nor `meta skuid` can tell the sites apart. The sending process's cgroup can: each site's processes (its
supervisord, everything below it, and every process naming the site's directory: postmasters are detached from
Patroni) are moved into a cgroup v2 group of this run's own, whose children inherit it, and an nftables table of
this run's own drops what a socket of one site's group sends to the other site's network. The controller stays in
its own cgroup, so kumiai and the test's writers reach both sites.

A socket keeps the cgroup it was created in, so connections opened before the move (the DR standby's WAL stream)
would survive the partition: the caller cuts them (e.g. terminating the walsenders) so they reconnect from inside
the groups and are dropped.

Everything is removed on exit, also after a failure: the table, and the groups once their processes are moved back
where they were.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kumiai.datalayer.topology import SiteLayout
from support.faults import site_tree

CGROUP_FS = Path("/sys/fs/cgroup")  # where nft resolves `socket cgroupv2` paths


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup/unified on a hybrid host, else /sys/fs/cgroup)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    raise AssertionError("no cgroup v2 hierarchy is mounted: a partition cannot be simulated here")


def cgroup_of(pid: int) -> str | None:
    """The pid's cgroup v2 path (the `0::` line of /proc/PID/cgroup), None when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in lines if line.startswith("0::")), None)


def nft(*commands: str) -> None:
    """Run nftables commands as one transaction (all or nothing)."""
    proc = subprocess.run(["nft", "-f", "-"], input="\n".join(commands) + "\n", capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"nft failed ({proc.returncode}): {proc.stderr.strip()}\n" + "\n".join(commands))


def drop_rules(table: str, groups: dict[str, tuple[str, int]], networks: dict[str, str]) -> list[str]:
    """nft commands: a table whose output chain drops what each site's group sends to every other site. Pure.

    `groups`: site -> (path nft resolves below /sys/fs/cgroup, the group's level in the v2 hierarchy).
    """
    commands = [
        f"add table inet {table}",
        f"add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}",
    ]
    for site, (path, level) in groups.items():
        for other, network in networks.items():
            if other != site:
                commands.append(
                    f'add rule inet {table} out ip daddr {network} socket cgroupv2 level {level} "{path}" drop'
                )
    return commands


@dataclass
class Partition:
    """Sites cut from each other; see the module's docstring. Use `partitioned(...)`."""

    name: str
    sites: Sequence[SiteLayout]
    root: Path = field(init=False)
    moved: dict[int, str] = field(default_factory=dict)  # pid -> its cgroup before the move

    def __post_init__(self) -> None:
        self.root = cgroup2_mount() / self.name

    @property
    def table(self) -> str:
        return self.name.replace("-", "_")

    def group(self, site: SiteLayout) -> Path:
        return self.root / site.id

    def cut(self) -> None:
        self.root.mkdir()
        for site in self.sites:
            self.group(site).mkdir()
        self.adopt()
        mount = cgroup2_mount()
        groups = {
            s.id: (str(self.group(s).relative_to(CGROUP_FS)), len(self.group(s).relative_to(mount).parts))
            for s in self.sites
        }
        nft(*drop_rules(self.table, groups, {s.id: str(s.network) for s in self.sites}))

    def adopt(self) -> int:
        """Move every process of each site into its group, until none is left out; how many were moved."""
        before = len(self.moved)
        for _ in range(20):
            missing = {
                pid: site
                for site in self.sites
                for pid in site_tree(site)
                if pid not in self.moved and cgroup_of(pid) is not None
            }
            if not missing:
                return len(self.moved) - before
            for pid, site in missing.items():
                origin = cgroup_of(pid)
                with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                    (self.group(site) / "cgroup.procs").write_text(f"{pid}\n")
                    self.moved[pid] = origin or "/"
        raise AssertionError("processes kept appearing outside the partition's groups")

    def blocks(self, site: SiteLayout, address: str, port: int) -> bool:
        """Whether a connection from inside `site`'s group to address:port fails while the controller's works."""
        probe = (
            "import socket,sys\n"
            "try:\n"
            f"    socket.create_connection(({address!r}, {port}), timeout=2).close()\n"
            "except OSError:\n"
            "    sys.exit(3)\n"
        )
        script = f'echo $$ > {self.group(site) / "cgroup.procs"} && exec {sys.executable} -c "$0"'
        inside = subprocess.run(["sh", "-c", script, probe], capture_output=True, timeout=30)
        with socket.create_connection((address, port), timeout=2):
            pass
        return inside.returncode == 3

    def heal(self) -> None:
        """Remove the table, move every process back where it was, remove the groups. Safe to call twice."""
        with contextlib.suppress(AssertionError):
            nft(f"delete table inet {self.table}")
        for site in self.sites:
            group = self.group(site)
            procs = group / "cgroup.procs"
            for _ in range(50):
                if not procs.exists():
                    break
                pids = [int(p) for p in procs.read_text().split()]
                if not pids:
                    group.rmdir()
                    break
                for pid in pids:
                    home = cgroup2_mount() / self.moved.get(pid, "/").lstrip("/")
                    with contextlib.suppress(ProcessLookupError, FileNotFoundError, OSError):
                        (home / "cgroup.procs").write_text(f"{pid}\n")
                time.sleep(0.05)
        if self.root.exists():
            self.root.rmdir()


def table_exists(table: str) -> bool:
    return subprocess.run(["nft", "list", "table", "inet", table], capture_output=True).returncode == 0


@contextlib.contextmanager
def partitioned(sites: Sequence[SiteLayout], run: str | None = None) -> Iterator[Partition]:
    """Cut `sites` from each other for the duration of the block; always healed afterwards."""
    part = Partition(f"kumiai-partition-{run or os.getpid()}", sites)
    try:
        part.cut()
        yield part
    finally:
        part.heal()

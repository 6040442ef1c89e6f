"""The seam between the data layer and where it runs.

Everything that onboards, inspects, backs up, drills or fails over a town works through a Target: where the
pieces are (`topology`), whether a site is up, how to run a playbook, how to run a command as the town's OS
identity, how to start and stop a member's processes. The lab (kumiai.lab.target) is one implementation; real
hosts are another. As Patroni hides each DCS behind one abstract class, nothing above this module knows which
target it drives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kumiai.datalayer.runner import PlaybookResult
from kumiai.datalayer.topology import Topology
from kumiai.inventory import Inventory
from kumiai.objectstore.store import StoreAdmin


def as_user(user: str) -> list[str]:
    """Command prefix running a program as `user` and its own group, from root (setpriv execs the program itself:
    no wrapper process between a supervisor and it)."""
    return ["/usr/bin/setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


@dataclass(frozen=True)
class ScratchLayout:
    """Where a restore drill brings up a copy of a town: an address and port no production member uses, and a
    directory the town's OS identity creates, owns and removes (its parent exists and is writable by it)."""

    address: str
    port: int
    dir: Path

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"


class ServiceManager(Protocol):
    """Runs the long-lived processes of a site (supervisord in the lab, systemd on real hosts)."""

    def start(self, site: str, programs: Sequence[str]) -> None:
        """Start these programs of a site (already defined by the roles) and return once started."""

    def stop(self, site: str, programs: Sequence[str]) -> None:
        """Stop these programs of a site and wait until they are down."""

    def states(self, site: str) -> dict[str, str]:
        """Program name -> state (RUNNING, STOPPED, ...) at a site; empty when its manager is down."""

    def remove(self, site: str, programs: Sequence[str]) -> None:
        """Stop these programs of a site and remove their definitions, so nothing starts them again; programs
        already gone are skipped."""


class Target(Protocol):
    """Where a consortium's data layer runs."""

    name: str
    inventory: Inventory

    @property
    def services(self) -> ServiceManager:
        """How this target starts and stops a site's programs."""

    def topology(self) -> Topology:
        """Sites and the towns onboarded so far, with every address and path."""

    def prepare(self, town_ids: Sequence[str]) -> Topology:
        """Give towns about to be onboarded their addresses (refusing when they do not fit); the new topology."""

    def check_capacity(self, town_ids: Sequence[str]) -> None:
        """Raise InputError when these towns cannot be placed; changes nothing."""

    def sites_down(self) -> list[str]:
        """Ids of sites whose services (DCS, process manager) are not running for this target."""

    def run_playbook(
        self, name: str, *, limit: str | None = None, check: bool = False, towns: Sequence[str] = ()
    ) -> PlaybookResult:
        """Run playbooks/<name> against this target's derived Ansible inventory, with the vault keys of `towns`."""

    def run_as(self, town_id: str) -> list[str]:
        """Command prefix that runs a program as the OS identity owning the town's data and configs."""

    def release(self, town_id: str) -> None:
        """Give up the addresses kept for a town that is gone (the lab's slot); nothing when it holds none."""

    def scratch(self, town_id: str, site_id: str) -> ScratchLayout:
        """Where a drill of the town restores at a site. A production target answers with its site's drill host (a
        machine that reaches the site's backup repo and nothing of production) and a port kept for the town."""

    def object_store(self, site_id: str) -> StoreAdmin | None:
        """The owner account and the users of the site's object store; None when the site's repos are posix. A
        production target answers with its S3 store's admin API and the owner credentials kept for it."""

    @property
    def state_dir(self) -> Path:
        """Where this target keeps its runtime files (logs, secrets of the towns it holds)."""

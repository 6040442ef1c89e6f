"""The lab as a target of the data layer: both sites on this machine, under one lab directory."""

from __future__ import annotations

import shutil
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from kumiai import paths
from kumiai.datalayer.etcd import etcd_pki
from kumiai.datalayer.runner import PlaybookResult, run_playbook
from kumiai.datalayer.target import ScratchLayout, as_user
from kumiai.datalayer.topology import ETCD_CLIENT_PORT, Topology, os_user
from kumiai.errors import InputError, Problem
from kumiai.inventory import Inventory
from kumiai.lab.layout import build_layout, lowest_free_slot, max_slots
from kumiai.lab.slots import assign_slots, read_slots, release_slot
from kumiai.lab.supervisor import SupervisorServices, is_running
from kumiai.objectstore.lab import RadosgwAdmin


def etcd_silent(topology: Topology) -> list[str]:
    """Ids of sites whose etcd does not report itself healthy to kumiai (over TLS, as root: etcd refuses a client
    without a certificate from the lab's CA)."""
    pki = etcd_pki(topology)
    context: ssl.SSLContext | None = None
    if pki.ca_file.exists() and pki.root.key.exists():
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        context.load_cert_chain(str(pki.root.cert), str(pki.root.key))
    down = []
    for site in topology.sites:
        if context is None:  # no certificates yet: no etcd of this lab can be running
            down.append(site.id)
            continue
        try:
            with urllib.request.urlopen(f"https://{site.etcd_endpoint}/health", timeout=2, context=context) as resp:
                if b"true" not in resp.read():
                    down.append(site.id)
        except (OSError, urllib.error.URLError):
            down.append(site.id)
    return down


def etcd_listening(topology: Topology) -> list[str]:
    """Ids of sites where something accepts connections at the etcd client address (whichever lab runs it)."""
    busy = []
    for site in topology.sites:
        try:
            with socket.create_connection((site.etcd_address, ETCD_CLIENT_PORT), timeout=1):
                busy.append(site.id)
        except OSError:
            pass
    return busy


# Drills restore on a site service address (hosts 2-10 are kept for those), each town on a port of its own.
DRILL_HOST = 2
DRILL_PORT_BASE = 25432


class LabTarget:
    """kumiai.datalayer.target.Target for the embedded lab."""

    name = "lab"

    def __init__(self, inventory: Inventory, lab_dir: Path | None = None) -> None:
        self.inventory = inventory
        self.lab_dir = lab_dir or paths.lab_dir()
        self.services = SupervisorServices(self.topology().sites)

    @property
    def state_dir(self) -> Path:
        return self.lab_dir

    def topology(self) -> Topology:
        return build_layout(self.lab_dir, self.inventory, read_slots(self.lab_dir))

    def check_capacity(self, town_ids: Sequence[str]) -> None:
        slots = read_slots(self.lab_dir)
        used = set(slots.values())
        for tid in town_ids:
            if tid not in slots:
                used.add(lowest_free_slot(used))
        room = min(max_slots(s.db_network) for s in self.inventory.consortium.sites)
        if used and max(used) >= room:
            raise InputError(
                Problem(
                    str(self.inventory.root / "consortium.yaml"),
                    "sites[].db_network",
                    f"room for {room} towns, {len(used)} would be onboarded; use larger networks",
                )
            )

    def prepare(self, town_ids: Sequence[str]) -> Topology:
        self.check_capacity(town_ids)
        return build_layout(self.lab_dir, self.inventory, assign_slots(self.lab_dir, list(town_ids)))

    def release(self, town_id: str) -> None:
        release_slot(self.lab_dir, town_id)

    def sites_down(self) -> list[str]:
        """Sites not running from this lab directory (its supervisord, and etcd answering)."""
        topology = self.topology()
        silent = set(etcd_silent(topology))
        return [s.id for s in topology.sites if s.id in silent or not is_running(s)]

    def run_playbook(
        self, name: str, *, limit: str | None = None, check: bool = False, towns: Sequence[str] = ()
    ) -> PlaybookResult:
        return run_playbook(
            name,
            target_env={
                "KUMIAI_TARGET": self.name,
                "KUMIAI_INVENTORY": str(self.inventory.root.absolute()),
                "KUMIAI_LAB_DIR": str(self.lab_dir),
            },
            logs=self.lab_dir / "logs",
            limit=limit,
            check=check,
            towns=towns,
        )

    def run_as(self, town_id: str) -> list[str]:
        return as_user(os_user(town_id))

    def object_store(self, site_id: str) -> RadosgwAdmin | None:
        store = self.topology().site(site_id).object_store
        return RadosgwAdmin(store) if store else None

    def scratch(self, town_id: str, site_id: str) -> ScratchLayout:
        """Host DRILL_HOST of the site's network, a port per town slot, a directory under the site's lab directory:
        drills/<town>/ belongs to the town's OS user (0700), which creates and removes the scratch directory in it."""
        topology = self.topology()
        site = topology.site(site_id)
        town = topology.towns[town_id]
        drills = site.dir / "drills"
        drills.mkdir(parents=True, exist_ok=True)
        drills.chmod(0o755)
        parent = drills / town_id
        parent.mkdir(exist_ok=True)
        shutil.chown(parent, town.os_user, town.os_user)
        parent.chmod(0o700)
        return ScratchLayout(
            address=str(site.network.network_address + DRILL_HOST),
            port=DRILL_PORT_BASE + town.slot,
            dir=parent / "scratch",
        )

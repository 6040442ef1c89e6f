"""What `kumiai lab up/down` and `kumiai onboard` do, step by step (the CLI and the benchmark call these)."""

from __future__ import annotations

import pwd
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory
from kumiai.lab.layout import LabLayout, build_layout, lowest_free_slot, max_slots
from kumiai.datalayer.runner import PlaybookResult, run_playbook
from kumiai.datalayer.secrets import ensure_town_secrets, load_town_secrets
from kumiai.lab.slots import assign_slots, read_slots
from kumiai.datalayer.status import TownStatus, gather_town_status
from kumiai.lab.supervisor import is_running, shutdown, stop_programs
from kumiai.ops import Operation

Say = Callable[[str], None]
# Bound on waiting for a freshly onboarded town to report healthy after its playbook finished.
HEALTHY_TIMEOUT_S = 60.0


def check_lab_dir(lab_dir: Path) -> None:
    """Patroni and etcd run as their own users, from kumiai's environment, on data in the lab directory: every
    directory above both must let them through."""
    postgres = pwd.getpwnam("postgres")
    for target, what, hint in (
        (lab_dir, "the lab directory", "Set KUMIAI_LAB_DIR to a directory such as /var/tmp/kumiai-lab."),
        (Path(sys.executable).parent, "kumiai's environment", "Install kumiai in a checkout other users can enter."),
    ):
        path = target
        while not path.exists():
            path = path.parent
        for directory in [path, *path.parents]:
            mode = directory.stat().st_mode
            if not mode & 0o001:
                raise KumiaiError(
                    f"{what} {target} is below {directory}, which other users cannot enter (mode "
                    f"{mode & 0o777:o}); the postgres user (uid {postgres.pw_uid}) must reach it. {hint}"
                )


def check_towns(inv: Inventory, town_ids: list[str]) -> None:
    """Every id names a town of the inventory and fits in the sites' networks; raises InputError (exit 2)."""
    problems = []
    for tid in town_ids:
        try:
            inv.town(tid)
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)


def check_capacity(inv: Inventory, lab_dir: Path, town_ids: list[str]) -> None:
    slots = read_slots(lab_dir)
    used = set(slots.values())
    for tid in town_ids:
        if tid not in slots:
            used.add(lowest_free_slot(used))
    room = min(max_slots(s.db_network) for s in inv.consortium.sites)
    if used and max(used) >= room:
        raise InputError(
            Problem(
                str(inv.root / "consortium.yaml"),
                "sites[].db_network",
                f"room for {room} towns, {len(used)} would be onboarded; use larger networks",
            )
        )


def etcd_silent(layout: LabLayout) -> list[str]:
    """Ids of sites whose etcd does not answer."""
    down = []
    for site in layout.sites:
        try:
            with urllib.request.urlopen(f"http://{site.etcd_endpoint}/health", timeout=2) as resp:
                if b"true" not in resp.read():
                    down.append(site.id)
        except (OSError, urllib.error.URLError):
            down.append(site.id)
    return down


def sites_down(layout: LabLayout) -> list[str]:
    """Ids of sites not running from this lab directory (its supervisord, and etcd answering)."""
    silent = set(etcd_silent(layout))
    return [s.id for s in layout.sites if s.id in silent or not is_running(s)]


def town_status(layout: LabLayout, town_id: str) -> TownStatus:
    secrets_file = layout.secrets_file(town_id)
    secrets = load_town_secrets(secrets_file) if secrets_file.exists() else None
    return gather_town_status(layout.towns[town_id], secrets)


def wait_healthy(layout: LabLayout, town_ids: list[str], timeout: float = HEALTHY_TIMEOUT_S) -> list[TownStatus]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = [town_status(layout, tid) for tid in town_ids]
        if all(s.healthy for s in statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


def check_addresses_free(layout: LabLayout) -> None:
    """Only one lab per machine: its addresses are fixed by the inventory."""
    answering = {s.id for s in layout.sites} - set(etcd_silent(layout))
    foreign = [s.id for s in layout.sites if s.id in answering and not is_running(s)]
    if foreign:
        raise KumiaiError(
            f"etcd of {', '.join(foreign)} already answers at its lab address, but not from {layout.dir}: another "
            "lab is running on this machine; stop it (kumiai lab down with its KUMIAI_LAB_DIR) first"
        )


def start_sites(inv: Inventory, lab_dir: Path, op: Operation) -> PlaybookResult:
    check_lab_dir(lab_dir)
    check_addresses_free(build_layout(lab_dir, inv, read_slots(lab_dir)))
    lab_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.chmod(0o755)
    with op.step("both sites: site.yml") as step:
        result = run_playbook("site.yml", inventory_path=inv.root, lab_dir=lab_dir)
        step.detail = f"changed={result.changed}"
    return result


def onboard_towns(inv: Inventory, lab_dir: Path, town_ids: list[str], op: Operation) -> list[TownStatus]:
    """Credentials, slots, onboard_town.yml for both sites, then check: DR streaming, backups in both repos."""
    check_towns(inv, town_ids)
    check_capacity(inv, lab_dir, town_ids)
    layout = build_layout(lab_dir, inv, read_slots(lab_dir))
    down = sites_down(layout)
    if down:
        raise KumiaiError(f"site services of {lab_dir} are not running at {', '.join(down)}: run `kumiai lab up` first")
    with op.step("credentials and addresses"):
        # Credentials first: a run interrupted after this point finds them and reuses them.
        for tid in town_ids:
            ensure_town_secrets(layout.secrets_file(tid))
        slots = assign_slots(lab_dir, town_ids)
        layout = build_layout(lab_dir, inv, slots)
    with op.step("both sites: onboard_town.yml") as step:
        limit = ":".join(f"town_{tid.replace('-', '_')}" for tid in town_ids)
        result = run_playbook("onboard_town.yml", inventory_path=inv.root, lab_dir=lab_dir, limit=limit)
        step.detail = f"changed={result.changed}"
    with op.step("DR standby streaming, full backups in both repos") as step:
        statuses = wait_healthy(layout, town_ids)
        bad = [s.town for s in statuses if not s.healthy]
        if bad:
            raise KumiaiError(f"onboarded but not healthy after {HEALTHY_TIMEOUT_S:.0f} s: {', '.join(bad)}")
        step.detail = f"{len(statuses)} towns healthy"
    op.target["changed"] = result.changed
    return statuses


def stop_sites(inv: Inventory, lab_dir: Path, op: Operation, *, purge: bool) -> list[str]:
    layout = build_layout(lab_dir, inv, read_slots(lab_dir))
    stopped = []
    with op.step("stop every town's members at both sites"):
        stop_programs(list(layout.sites), "patroni-")
    for site in layout.sites:
        with op.step(f"{site.id}: stop etcd and supervisord"):
            if shutdown(site):
                stopped.append(site.id)
    if purge and lab_dir.exists():
        with op.step("purge the lab directory"):
            shutil.rmtree(lab_dir)
    return stopped

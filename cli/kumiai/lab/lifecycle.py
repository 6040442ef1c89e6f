"""What `kumiai lab up/down` do to the lab's sites (the CLI and the benchmark call these)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from kumiai import paths
from kumiai.datalayer.etcd import ensure_etcd_certificates
from kumiai.datalayer.runner import PlaybookResult
from kumiai.errors import KumiaiError
from kumiai.lab.supervisor import is_running, shutdown, stop_programs
from kumiai.lab.target import LabTarget, etcd_listening
from kumiai.objectstore.evidence import save_store
from kumiai.objectstore.lab import ensure_lab_certificates
from kumiai.ops import Operation


def check_lab_dir(lab_dir: Path) -> None:
    """Patroni and etcd run as their own users (each town's OS user, etcd's), from kumiai's environment, on data
    in the lab directory: every directory above both must let them through."""
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
                    f"{mode & 0o777:o}); every town's OS user must reach it. {hint}"
                )


def check_addresses_free(target: LabTarget) -> None:
    """Only one lab per set of addresses: they are fixed by the inventory."""
    topology = target.topology()
    answering = set(etcd_listening(topology))
    foreign = [s.id for s in topology.sites if s.id in answering and not is_running(s)]
    if foreign:
        raise KumiaiError(
            f"etcd of {', '.join(foreign)} already answers at its lab address, but not from {target.lab_dir}: "
            "another lab is running on this machine; stop it (kumiai lab down with its KUMIAI_LAB_DIR) first"
        )


def start_sites(target: LabTarget, op: Operation) -> PlaybookResult:
    check_lab_dir(target.lab_dir)
    check_addresses_free(target)
    target.lab_dir.mkdir(parents=True, exist_ok=True)
    target.lab_dir.chmod(0o755)
    with op.step("certificates of the sites' object stores"):
        ensure_lab_certificates(target.topology())
    with op.step("certificates of the sites' etcd members and etcd's root"):
        ensure_etcd_certificates(target.topology())
    with op.step("both sites: site.yml") as step:
        result = target.run_playbook("site.yml")
        step.detail = f"changed={result.changed}"
    return result


def stop_sites(target: LabTarget, op: Operation, *, purge: bool) -> list[str]:
    topology = target.topology()
    stopped = []
    with op.step("stop every town's members at both sites"):
        stop_programs(list(topology.sites), "patroni-")
    for site in topology.sites:
        with op.step(f"{site.id}: stop etcd and supervisord"):
            if shutdown(site):
                stopped.append(site.id)
    if purge and target.lab_dir.exists():
        with op.step("purge the lab directory"):
            shutil.rmtree(target.lab_dir)
            # The evidence bucket went with the lab's object stores: copies stay on this machine from now on.
            save_store(paths.state_dir(), None)
    return stopped

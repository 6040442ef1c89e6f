"""The integration tests start a whole lab themselves (both sites, the lab towns) and remove it at the end.

Everything lives in one temporary directory below /var/tmp (every town's OS user and etcd's must be able to
reach it), with its own inventory copy, lab directory and state directory (the towns' vault keys, audit log).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kumiai.datalayer.secrets import load_town_secrets
from kumiai.datalayer.topology import Topology
from kumiai.inventory import load_inventory
from kumiai.lab.target import LabTarget
from kumiai.objectstore.s3 import client
from kumiai.objectstore.store import Credentials
from support import faults
from support.lab_inventory import posix_lab_inventory

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
# A busy machine (other labs, 2 cores) can need more: KUMIAI_TEST_LAB_UP_TIMEOUT.
LAB_UP_TIMEOUT_S = int(os.environ.get("KUMIAI_TEST_LAB_UP_TIMEOUT", "600"))
ONBOARD_TIMEOUT_S = 300


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        """Output for an assertion message, with the end of any playbook log the command points at (the lab
        directory is removed at the end of the session, so the log must be read now)."""
        text = f"exit {self.code}\n{self.stdout}\n{self.stderr}"
        for log in re.findall(r"see (/\S+\.log)", self.stderr):
            lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines()
            text += f"\n--- last lines of {log} ---\n" + "\n".join(lines[-80:])
        return text


@dataclass
class Lab:
    base: Path
    inventory: Path
    lab_dir: Path
    state_dir: Path
    env: dict[str, str]

    def kumiai(self, *args: str, timeout: float = ONBOARD_TIMEOUT_S, inventory: Path | None = None) -> Run:
        env = {**self.env, "KUMIAI_INVENTORY": str(inventory or self.inventory)}
        proc = subprocess.run(
            [str(BIN / "kumiai"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def status(self) -> dict[str, Any]:
        run = self.kumiai("status", "--json", timeout=60)
        assert run.code == 0, run.stderr
        return {t["town"]: t for t in json.loads(run.stdout)["towns"]}

    def lab_status(self) -> dict[str, Any]:
        run = self.kumiai("lab", "status", "--json", timeout=60)
        assert run.code == 0, run.stderr
        return json.loads(run.stdout)

    @property
    def vault_keys(self) -> Path:
        """The towns' vault keys (<town>.key), as kumiai keeps them under the state directory."""
        return self.state_dir / "secrets" / "towns"

    def topology(self) -> Topology:
        return LabTarget(load_inventory(self.inventory), self.lab_dir).topology()

    def town_s3(self, town: str, site: str) -> Any:
        """A boto3 client of the site's object store with the town's own credentials (from its vault)."""
        topology = self.topology()
        secrets = load_town_secrets(topology.secrets_file(town), self.vault_keys)
        store = topology.site(site).object_store
        assert store is not None, f"{site} keeps no object store"
        return client(store, Credentials(secrets.s3_access_key, secrets.s3_secret_key))


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


# The tests' lab runs on its own loopback networks, so a lab left running by `make demo` (127.0.1.0/24 and
# 127.0.2.0/24) is neither disturbed nor in the way. KUMIAI_TEST_NETWORKS="127.0.21.0/24,127.0.22.0/24" moves it,
# so two test runs can share a machine.
LAB_NETWORKS = ("127.0.1.0/24", "127.0.2.0/24")


def networks(variable: str, default: str) -> dict[str, str]:
    """The lab inventory's site networks -> the ones a test lab uses instead (from `variable`, else `default`)."""
    return dict(zip(LAB_NETWORKS, os.environ.get(variable, default).split(","), strict=True))


@contextlib.contextmanager
def build_lab(
    test_networks: dict[str, str],
    towns: list[str] | None = None,
    source: Path = ROOT / "inventories" / "lab",
    posix: bool = False,
) -> Iterator[Lab]:
    """A lab built from nothing by `kumiai lab up` on these networks, in a directory of its own; removed after.
    `source` is an inventory on the lab's networks (addresses in it, e.g. object store endpoints, move too);
    `posix` keeps the lab inventory's backups in posix directories instead of each site's object store."""
    etcd_hosts = [net.replace(".0/24", ".1") for net in test_networks.values()]
    if any(_answers(host, 2379) for host in etcd_hosts):
        pytest.fail(f"another test lab is running on {', '.join(etcd_hosts)}: stop it first (kumiai lab down)")
    base = Path(tempfile.mkdtemp(prefix="kumiai-it-", dir="/var/tmp"))
    base.chmod(0o755)
    inventory = base / "inventory"
    if posix:
        posix_lab_inventory(inventory)
    else:
        shutil.copytree(source, inventory)
    consortium = inventory / "consortium.yaml"
    text = consortium.read_text(encoding="utf-8")
    for lab_net, test_net in test_networks.items():
        assert lab_net in text
        text = text.replace(lab_net.removesuffix("0/24"), test_net.removesuffix("0/24"))
    consortium.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUMIAI_")}
    env.update(
        {
            "KUMIAI_LAB_DIR": str(base / "lab"),
            "KUMIAI_STATE_DIR": str(base / "state"),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    lab = Lab(base=base, inventory=inventory, lab_dir=base / "lab", state_dir=base / "state", env=env)
    try:
        up = lab.kumiai("lab", "up", *(["--towns", ",".join(towns)] if towns else []), timeout=LAB_UP_TIMEOUT_S)
        assert up.code == 0, f"kumiai lab up failed: {up}"
        yield lab
    finally:
        down = lab.kumiai("lab", "down", "--purge", timeout=300)
        if down.code != 0:
            # Whatever `lab down` could not stop, found by its supervisord pid files and by the processes naming this
            # lab's directory: never another lab's, never by name.
            pids = {faults.pidfile(p) for p in lab.lab_dir.glob("*/supervisor/supervisord.pid")} - {None}
            faults.kill(faults.descendants(pids) | faults.naming(base))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The lab most integration tests share (built once per session); tests leave it as they found it."""
    with build_lab(networks("KUMIAI_TEST_NETWORKS", "127.0.11.0/24,127.0.12.0/24")) as built:
        yield built


def run_playbook(lab: Lab, playbook: str, *args: str) -> subprocess.CompletedProcess[str]:
    """ansible-playbook as an operator would run it, with the project's derived inventory."""
    env = {**lab.env, "KUMIAI_INVENTORY": str(lab.inventory), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    # Every town's key, one --vault-id each (the vault id is the town).
    vault_ids = [a for key in sorted(lab.vault_keys.glob("*.key")) for a in ("--vault-id", f"{key.stem}@{key}")]
    cmd = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(BIN / "kumiai-ansible-inventory"),
        f"playbooks/{playbook}",
        *vault_ids,
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

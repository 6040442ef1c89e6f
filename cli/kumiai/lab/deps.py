"""Installs what the lab needs and is missing: Debian packages (scripts/install-lab-deps.sh) and Python ones."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable

from kumiai import paths
from kumiai.errors import KumiaiError

DEBIAN_PACKAGES = ("postgresql-15", "pgbackrest", "etcd-server", "etcd-client", "radosgw", "ceph-mon", "ceph-osd")
# Importable module -> the requirement that provides it.
PYTHON_PACKAGES = {
    "patroni": "patroni[etcd3]",
    "etcd": "patroni[etcd3]",  # python-etcd
    "psycopg2": "psycopg2-binary",
    "supervisor": "supervisor",
    "ansible_collections.community.general": "ansible",
}


def missing_debian_packages() -> list[str]:
    missing = []
    for pkg in DEBIAN_PACKAGES:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
        ).stdout
        if "install ok installed" not in out:
            missing.append(pkg)
    return missing


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def missing_python_packages() -> list[str]:
    return sorted({req for module, req in PYTHON_PACKAGES.items() if not _importable(module)})


def ensure_lab_deps(say: Callable[[str], None]) -> None:
    """Install missing packages, saying what in one plain line each; nothing happens when all are there."""
    if missing_debian_packages():
        script = paths.project_root() / "scripts" / "install-lab-deps.sh"
        # The script prints the one line naming what it installs.
        if subprocess.run(["bash", str(script)], check=False).returncode != 0:
            raise KumiaiError(f"installing Debian packages failed; run {script} as root and retry")
    python = missing_python_packages()
    if python:
        say(f"Installing missing Python packages: {', '.join(python)}")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "-c", str(paths.project_root() / "constraints.txt")]
        if subprocess.run([*cmd, *python], check=False).returncode != 0:
            raise KumiaiError("installing Python packages failed; run `make setup` and retry")

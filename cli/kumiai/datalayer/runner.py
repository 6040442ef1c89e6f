"""Runs the project's playbooks with the derived inventory and reads their recap."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kumiai import paths
from kumiai.datalayer.secrets import vault_id_args
from kumiai.errors import KumiaiError

RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counts>(?:\w+=\d+\s*)+)$")


@dataclass
class HostStats:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class PlaybookResult:
    playbook: str
    returncode: int
    seconds: float
    log: Path
    hosts: dict[str, HostStats] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    @property
    def failed(self) -> int:
        return sum(h.failed + h.unreachable for h in self.hosts.values())


def parse_recap(output: str) -> dict[str, HostStats]:
    """Per-host counts from the PLAY RECAP of ansible-playbook's default output."""
    hosts: dict[str, HostStats] = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if not in_recap:
            continue
        m = RECAP_LINE.match(line.strip())
        if m:
            counts = dict(item.split("=") for item in m.group("counts").split())
            known = HostStats.__dataclass_fields__
            hosts[m.group("host")] = HostStats(**{k: int(v) for k, v in counts.items() if k in known})
    return hosts


def tool(name: str) -> Path:
    """An executable of the environment kumiai runs in (ansible-playbook, patroni, supervisorctl, ...)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found is None:
        raise KumiaiError(f"{name} is not installed in this environment (run `make setup`)")
    return Path(found)


def playbook_env(target_env: Mapping[str, str]) -> dict[str, str]:
    """ansible-playbook's environment: the project's configuration and what the target's inventory script needs to
    find the inventory and the target (`target_env`). The towns' vault keys are arguments (run_playbook)."""
    root = paths.project_root()
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(root / "roles"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PYTHONUNBUFFERED": "1",
        **target_env,
    }


def run_playbook(
    name: str,
    *,
    target_env: Mapping[str, str],
    logs: Path,
    limit: str | None = None,
    check: bool = False,
    extra_args: list[str] | None = None,
    echo: bool = False,
    towns: Sequence[str] = (),
) -> PlaybookResult:
    """Run playbooks/<name> with the derived inventory and return its recap. Output goes to a log in `logs`.
    ansible-playbook gets the vault keys of `towns` (the towns it runs) and no other.

    Secrets never appear there: every task that handles them has no_log.
    """
    root = paths.project_root()
    # Logs name hosts, paths and what changed: only their owner reads them.
    logs.mkdir(parents=True, exist_ok=True)
    logs.chmod(0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
    log = logs / f"{stamp}-{Path(name).stem}{'-check' if check else ''}.log"
    cmd = [
        str(tool("ansible-playbook")),
        "-i",
        str(tool("kumiai-ansible-inventory")),
        str(root / "playbooks" / name),
    ]
    if limit:
        cmd += ["--limit", limit]
    if check:
        cmd += ["--check"]
    cmd += vault_id_args(tuple(towns))
    cmd += extra_args or []
    t0 = time.perf_counter()
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=playbook_env(target_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=False,
        )
        assert proc.stdout is not None
        output = []
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            output.append(line)
            if echo:
                sys.stderr.write(line)
        returncode = proc.wait()
    result = PlaybookResult(
        playbook=name,
        returncode=returncode,
        seconds=time.perf_counter() - t0,
        log=log,
        hosts=parse_recap("".join(output)),
    )
    if returncode != 0:
        raise KumiaiError(f"{name} failed (exit {returncode}); see {log}")
    return result

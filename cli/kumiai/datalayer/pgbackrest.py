"""pgBackRest commands for a town, run as the OS identity owning its data, with a member's configuration.

Every member's configuration names the town's stanza, that member's data directory and every repo of the town
(numbered by site), so any member serves for info, verify and check; a backup runs where the leader is.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from kumiai.datalayer.topology import MemberLayout

PGBACKREST = "/usr/bin/pgbackrest"


def command(run_as: Sequence[str], member: MemberLayout, *args: str) -> list[str]:
    return [*run_as, PGBACKREST, f"--config={member.pgbackrest_config}", f"--stanza={member.town}", *args]


def run(
    run_as: Sequence[str], member: MemberLayout, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run one pgBackRest command; never raises on its exit code (callers read it, and its output)."""
    return subprocess.run(command(run_as, member, *args), capture_output=True, text=True, timeout=timeout, check=False)


def info(run_as: Sequence[str], member: MemberLayout) -> list[dict[str, Any]]:
    """`pgbackrest info --output=json` for the town's stanza; [] when it cannot be read."""
    out = run(run_as, member, "--output=json", "info", timeout=60)
    if out.returncode != 0:
        return []
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return []
    return data if isinstance(data, list) else []

"""Operations interrupted the hard way: a real process killed with SIGKILL inside a step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_INSIDE = """
import sys, time
from pathlib import Path
from kumiai.ops import Operation
with Operation(sys.argv[3], target={"town": sys.argv[4]}, log_path=Path(sys.argv[1])) as op, op.step("long"):
    Path(sys.argv[2]).write_text("inside")
    time.sleep(60)
"""


def kill_inside_an_operation(log: Path, tmp_path: Path, operation: str, town: str) -> None:
    """Start `operation` for `town` in another process, wait until it is inside its step, then SIGKILL it."""
    inside = tmp_path / "inside"
    proc = subprocess.Popen([sys.executable, "-c", _INSIDE, str(log), str(inside), operation, town])
    deadline = time.monotonic() + 180  # a loaded machine starts interpreters slowly
    while not inside.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert inside.exists(), "the operation never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

"""docs/cli.md is generated from --help; this fails when someone changes the CLI without regenerating it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current() -> None:
    result = subprocess.run([sys.executable, "scripts/gen_cli_reference.py", "--check"], cwd=ROOT, check=False)
    assert result.returncode == 0, "docs/cli.md is stale: run `make docs`"

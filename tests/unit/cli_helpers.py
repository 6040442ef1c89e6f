"""Running the real `kumiai` command in tests, and copying inventories to mutate them."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "inventories" / "lab"
KANAGAWA = ROOT / "inventories" / "kanagawa"
KUMIAI = ROOT / ".venv" / "bin" / "kumiai"


def lab_storage(site: str) -> str:
    """A lab site's `object_storage` block as consortium.yaml spells it, for tests that replace it."""
    net = {"site-a": 1, "site-b": 2}[site]
    fields = ("type: s3", f"endpoint: https://127.0.{net}.3:7443", "region: default", f"bucket_prefix: lab-{site}")
    return "\n      ".join(fields)


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any KUMIAI_* setting of the person running the tests, and no colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUMIAI_")}
    env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    env.update(extra)
    return env


def kumiai(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Result:
    """Run the installed console script, as a user would."""
    exe = [str(KUMIAI)] if KUMIAI.exists() else [sys.executable, "-m", "kumiai.main"]
    proc = subprocess.run(
        [*exe, *map(str, args)],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def kumiai_in_process(*args: str | Path) -> Result:
    """Call the console entry point `run()` in this process: fast enough for fuzzing, same code path."""
    from kumiai.main import run

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["kumiai", *map(str, args)]
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    return Result(code if isinstance(code, int) else (0 if code is None else 1), out.getvalue(), err.getvalue())


def copy_inventory(dest: Path, source: Path = LAB) -> Path:
    shutil.copytree(source, dest)
    return dest


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for directories): to prove nothing was written."""
    if root.is_file():
        return {".": root.read_bytes()}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}

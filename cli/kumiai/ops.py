"""The one place state-changing commands pass through.

An Operation is a named sequence of timed steps. When it ends (done, failed or interrupted) it appends one record
to the hash-chained audit log: who, what, when, the git commit, tool versions, every step with its duration and
outcome. Dry runs are not recorded because they change nothing. Records never hold secrets: callers pass only
names, ids and counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from kumiai import __version__, paths
from kumiai.errors import KumiaiError

GENESIS = "0" * 64


@dataclass
class Step:
    name: str
    status: str = "running"  # running | ok | failed | skipped
    seconds: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass
class Operation:
    """with Operation("onboard", target={"town": "nakai"}) as op: with op.step("..."): ..."""

    name: str
    target: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    log_path: Path | None = None
    steps: list[Step] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)
    result: str = "running"
    started: float = 0.0
    record: dict[str, Any] | None = None

    def __enter__(self) -> Operation:
        self.started = time.time()
        self._t0 = time.perf_counter()
        return self

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Time one step; an exception marks it failed and propagates."""
        step = Step(name)
        self.steps.append(step)
        t0 = time.perf_counter()
        try:
            yield step
        except BaseException as exc:
            step.status = "failed"
            step.detail = step.detail or type(exc).__name__
            raise
        else:
            if step.status == "running":
                step.status = "ok"
        finally:
            step.seconds = time.perf_counter() - t0

    def skip(self, name: str, reason: str) -> None:
        self.steps.append(Step(name, status="skipped", detail=reason))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.result = "ok"
        elif issubclass(exc_type, KeyboardInterrupt):
            self.result = "interrupted"
        else:
            self.result = "failed"
        if self.dry_run:
            return
        self.record = {
            "operation": self.name,
            "target": self.target,
            "actor": actor(),
            "approved_by": os.environ.get("KUMIAI_APPROVED_BY") or None,
            "started": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self._t0, 3),
            "result": self.result,
            "error": str(exc)[:500] if exc is not None and self.result == "failed" else None,
            "git_commit": git_commit(),
            "tools": {"kumiai": __version__, "python": platform.python_version(), **self.tools},
            "steps": [s.as_dict() for s in self.steps],
        }
        append_record(self.log_path or paths.audit_log(), self.record)


def actor() -> str:
    """Who runs the command: KUMIAI_ACTOR (e.g. set by a CI system to the approver's login) or the OS user."""
    env = os.environ.get("KUMIAI_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _hash_of(line: str, path: Path) -> str:
    """The hash of the last record, which the next one chains to; a damaged log is not silently restarted."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
        raise KumiaiError(
            f"audit log {path} ends with a damaged record, so a new one cannot be chained to it; "
            "keep the file as evidence, move it aside and investigate"
        )
    return record["hash"]


def append_record(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append a record chained to the previous one (prev = its hash). Safe for concurrent writers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        last = None
        for line in fh:
            if line.strip():
                last = line
        prev = _hash_of(last, path) if last else GENESIS
        chained = {**record, "prev": prev}
        chained["hash"] = _digest(chained)
        fh.seek(0, os.SEEK_END)
        fh.write(json.dumps(chained, ensure_ascii=False, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return chained


def verify_chain(path: Path) -> list[str]:
    """Problems with the audit log: a record edited, removed or reordered breaks the chain."""
    problems: list[str] = []
    prev = GENESIS
    if not path.exists():
        return problems
    # Undecodable bytes become U+FFFD, so the damaged record fails its hash instead of stopping the check.
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            problems.append(f"{path}:{number}: not a JSON record")
            prev = "?"
            continue
        if record.get("prev") != prev:
            problems.append(f"{path}:{number}: does not follow the record before it")
        if record.get("hash") != _digest(record):
            problems.append(f"{path}:{number}: record was changed after it was written")
        prev = record.get("hash", "?")
    return problems

"""The one place state-changing commands pass through.

An Operation is a named sequence of timed steps. It appends a "begin" record to the keyed, anchored audit log
(kumiai.audit.trail) before anything changes, and an "end" record when it ends (done, failed or interrupted), so
a run killed outright is still visible: begun, never ended. The begin record says who (the OS account; git
identity and KUMIAI_ACTOR only as claims), the command line with secrets masked, the inventory's git tree, the
plan and its verified approval where there is one, the git commit and tool versions; the end record the result
and every step with its duration. Dry runs are not recorded because they change nothing. Records never hold
secrets: callers pass only names, ids, counts and hashes.
"""

from __future__ import annotations

import contextlib
import copy
import platform
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from typer._click.globals import get_current_context

from kumiai import __version__, paths
from kumiai.audit import context
from kumiai.audit.trail import Trail, append


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
    """with Operation("onboard", target={"town": "nakai"}) as op: with op.step("..."): ...

    plan_hash: the content hash of the plan being applied; approval: what kumiai verified about its approval
    (approver, key fingerprint, break-glass reason), never a name taken on trust; inventory: the inventory
    directory (default: the one the command line chose with --inventory).
    """

    name: str
    target: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    log_path: Path | None = None
    steps: list[Step] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)
    plan_hash: str | None = None
    approval: dict[str, Any] | None = None
    inventory: Path | None = None
    result: str = "running"
    started: float = 0.0
    run_id: str = ""
    begin_record: dict[str, Any] | None = None
    record: dict[str, Any] | None = None

    @property
    def trail(self) -> Trail:
        return Trail.for_log(self.log_path or paths.audit_log())

    def __enter__(self) -> Operation:
        self.started = time.time()
        self._t0 = time.perf_counter()
        self.run_id = uuid.uuid4().hex
        if not self.dry_run:
            self.begin_record = append(self.trail, self._begin())
        return self

    def _begin(self) -> dict[str, Any]:
        inventory = self.inventory or _command_line_inventory()
        return {
            "event": "begin",
            "run": self.run_id,
            "time": _iso(self.started),
            "operation": self.name,
            "target": copy.deepcopy(self.target),  # as it began; steps go on adding to op.target
            "who": context.who(),
            "command": context.mask_argv(sys.argv),
            "git_commit": context.git_commit(paths.project_root()),
            "inventory": context.inventory_state(inventory) if inventory else None,
            "plan_hash": self.plan_hash,
            "approval": self.approval,
            "tools": {"kumiai": __version__, "python": platform.python_version(), **self.tools},
        }

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
        end = {
            "event": "end",
            "run": self.run_id,
            "time": _iso(time.time()),
            "operation": self.name,
            "target": copy.deepcopy(self.target),
            "result": self.result,
            # A message may quote a command or a URL; its secrets are masked like the command line's.
            "error": context.mask_argument(str(exc))[:500] if exc is not None and self.result == "failed" else None,
            "seconds": round(time.perf_counter() - self._t0, 3),
            "steps": [s.as_dict() for s in self.steps],
            # Often known only once the run has read and checked the plan: set op.plan_hash / op.approval then.
            "plan_hash": self.plan_hash,
            "approval": copy.deepcopy(self.approval),
        }
        self.record = append(self.trail, end)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _command_line_inventory() -> Path | None:
    """The inventory the running command was given (every command gets it from the global --inventory), so
    callers need not pass it. typer ships its own click, hence its context stack is asked, not click's."""
    ctx = get_current_context(silent=True)
    root = ctx.find_root().obj if ctx is not None else None
    inventory = getattr(root, "inventory_path", None)
    return Path(inventory) if inventory is not None else None

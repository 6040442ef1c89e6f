"""Executable runbooks: a DR procedure is read and changed in one place, `dr-runbooks/<id>.yaml`.

A runbook is ordered steps; each names an *action* (a Python function registered with `@action`), an optional
*check* run after it until it holds or the step's timeout passes, a timeout, whether the step is safe to retry,
and an optional *when* (a registered check: the step runs only when it holds, else it is recorded as skipped).
The commands (`kumiai drill`, `failover`, `failback`, `backup verify`) run these runbooks through `run`, so every
step is a step of the command's audit record; `kumiai runbook render` writes the Markdown a person reads next to
each YAML, generated from the same file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kumiai import paths
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import problems_of, read_yaml
from kumiai.ops import Operation

STEP_ID = r"^[a-z][a-z0-9-]{1,40}$"


@dataclass
class RunContext:
    """What one run of a runbook works on; actions read and add `values` for the steps after them."""

    params: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0  # of the step running now (time.monotonic()); long actions stop waiting by then

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)


Action = Callable[[RunContext], str | None]
Check = Callable[[RunContext], bool]

ACTIONS: dict[str, Action] = {}
CHECKS: dict[str, Check] = {}


def action(name: str) -> Callable[[Action], Action]:
    """Register a step action under the name runbooks use. It returns a short detail for the record, or None."""

    def register(fn: Action) -> Action:
        ACTIONS[name] = fn
        return fn

    return register


def check(name: str) -> Callable[[Check], Check]:
    """Register a check (a step's `check` or `when`): True when it holds."""

    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=STEP_ID)]
    title: Annotated[str, Field(min_length=1, max_length=120)]
    title_ja: Annotated[str | None, Field(min_length=1, max_length=60)] = None
    action: Annotated[str, Field(min_length=1)]
    check: str | None = None
    when: str | None = None
    timeout_s: Annotated[int, Field(strict=True, ge=1, le=3600)]
    retry_safe: bool
    why: str | None = None


class Runbook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=STEP_ID)]
    title: Annotated[str, Field(min_length=1, max_length=120)]
    title_ja: Annotated[str | None, Field(min_length=1, max_length=60)] = None
    description: str
    steps: Annotated[list[Step], Field(min_length=1)]


def runbooks_dir() -> Path:
    return paths.project_root() / "dr-runbooks"


def load_runbook(path: Path) -> Runbook:
    """One runbook, validated: its fields, unique step ids, and every action and check known to this kumiai."""
    data, problems = read_yaml(path, str(path))
    if data is None:
        raise InputError(problems)
    try:
        book = Runbook.model_validate(data)
    except ValidationError as exc:
        raise InputError(problems_of(str(path), exc, Runbook)) from None
    problems = []
    if book.id != path.stem:
        problems.append(Problem(str(path), "id", f"must equal the file name {path.stem!r}"))
    seen: set[str] = set()
    for i, step in enumerate(book.steps):
        where = f"steps[{i}]"
        if step.id in seen:
            problems.append(Problem(str(path), f"{where}.id", f"step id {step.id!r} is used twice"))
        seen.add(step.id)
        if step.action not in ACTIONS:
            known = ", ".join(sorted(ACTIONS))
            problems.append(Problem(str(path), f"{where}.action", f"unknown action {step.action!r}; known: {known}"))
        for name in ("check", "when"):
            ref = getattr(step, name)
            if ref is not None and ref not in CHECKS:
                known = ", ".join(sorted(CHECKS))
                problems.append(Problem(str(path), f"{where}.{name}", f"unknown check {ref!r}; known: {known}"))
    if problems:
        raise InputError(problems)
    return book


def runbook_files() -> list[Path]:
    return sorted(runbooks_dir().glob("*.yaml"))


def load_all() -> dict[str, Runbook]:
    """Every runbook of dr-runbooks/ (registering the actions first: they live in the DR modules)."""
    register_actions()
    problems: list[Problem] = []
    books: dict[str, Runbook] = {}
    for path in runbook_files():
        try:
            books[path.stem] = load_runbook(path)
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    return books


def register_actions() -> None:
    """Import the modules whose actions and checks runbooks name (importing registers them)."""
    import importlib

    for module in ACTION_MODULES:
        importlib.import_module(module)


# The modules holding the actions and checks of the runbooks in dr-runbooks/.
ACTION_MODULES: tuple[str, ...] = ("kumiai.dr.drill", "kumiai.dr.failover", "kumiai.dr.backup", "kumiai.dr.bucketlock")


class StepFailed(KumiaiError):
    """A runbook step failed; the message names the runbook, the step and why."""


def run(book: Runbook, ctx: RunContext, op: Operation, *, prefix: str = "") -> None:
    """Run every step in order as a step of `op`; stops at the first failure (raising StepFailed)."""
    for step in book.steps:
        name = f"{prefix}{book.id}: {step.id}"
        if step.when is not None and not CHECKS[step.when](ctx):
            op.skip(name, f"{step.when} does not hold")
            continue
        with op.step(name) as record:
            ctx.deadline = time.monotonic() + step.timeout_s
            try:
                detail = ACTIONS[step.action](ctx)
            except KumiaiError as exc:
                raise StepFailed(f"{book.id}, step {step.id} ({step.title}): {exc.message}") from exc
            if step.check is not None:
                while not CHECKS[step.check](ctx):
                    if time.monotonic() > ctx.deadline:
                        raise StepFailed(
                            f"{book.id}, step {step.id} ({step.title}): {step.check} did not hold within "
                            f"{step.timeout_s} s"
                        )
                    time.sleep(0.25)
            record.detail = detail or ""


def render_markdown(book: Runbook, source: str) -> str:
    """The page a person reads, generated from the runbook (never edited by hand)."""
    title = f"{book.title}（{book.title_ja}）" if book.title_ja else book.title
    lines = [
        f"# {title}",
        "",
        f"<!-- generated from {source} by `kumiai runbook render`: edit the YAML, not this file -->",
        "",
        book.description.strip(),
        "",
        "| # | step | action | check | timeout | safe to retry |",
        "|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(book.steps, start=1):
        step = f"**{s.title}**" + (f"<br>{s.title_ja}" if s.title_ja else "")
        if s.when:
            step += f"<br>only when `{s.when}`"
        lines.append(
            f"| {i} | {step} | `{s.action}` | {f'`{s.check}`' if s.check else '—'} | {s.timeout_s} s "
            f"| {'yes' if s.retry_safe else 'no'} |"
        )
    whys = [(i, s) for i, s in enumerate(book.steps, start=1) if s.why]
    if whys:
        lines += ["", "## Why these steps", ""]
        lines += [f"{i}. **{s.title}**: {s.why.strip()}" for i, s in whys if s.why]
    return "\n".join(lines) + "\n"

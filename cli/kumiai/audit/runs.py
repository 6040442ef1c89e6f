"""Runs: a command's begin record and its end record read as one. Pure.

A begin without an end is a run that was interrupted beyond recovery (killed, machine lost) or is still going;
either way an auditor must see it, so it is kept and marked, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kumiai.errors import InputError, Problem

NOT_ENDED = "not ended"


@dataclass(frozen=True)
class Run:
    begin: dict[str, Any]
    end: dict[str, Any] | None

    @property
    def id(self) -> str:
        return str(self.begin.get("run", ""))

    @property
    def operation(self) -> str:
        return str(self.begin.get("operation", ""))

    @property
    def ended(self) -> bool:
        return self.end is not None

    @property
    def result(self) -> str:
        return str(self.end.get("result")) if self.end else NOT_ENDED

    @property
    def target(self) -> dict[str, Any]:
        """As the run left it: steps add facts (what changed, a drill's verdict) to the target they began with."""
        target = (self.end or self.begin).get("target")
        return target if isinstance(target, dict) else {}

    def latest(self, name: str) -> Any:
        """A field as last recorded: the end's value, else the begin's (a plan is often read after the start)."""
        value = (self.end or {}).get(name)
        return value if value is not None else self.begin.get(name)

    @property
    def started(self) -> datetime | None:
        return parse_time(self.begin.get("time"))

    @property
    def verdict(self) -> Any:
        return self.target.get("verdict")

    def towns(self) -> list[str]:
        target = self.target
        towns = target.get("towns")
        found = [str(t) for t in towns] if isinstance(towns, list) else []
        if isinstance(target.get("town"), str):
            found.append(target["town"])
        return found

    def as_dict(self) -> dict[str, Any]:
        """What `audit log --json` prints: the run as the begin record says it started and the end says it ended."""
        b, e = self.begin, self.end or {}
        return {
            "run": self.id,
            "operation": self.operation,
            "target": self.target,
            "started": b.get("time"),
            "ended": e.get("time"),
            "result": self.result,
            "error": e.get("error"),
            "seconds": e.get("seconds"),
            "who": b.get("who"),
            "command": b.get("command"),
            "git_commit": b.get("git_commit"),
            "inventory": b.get("inventory"),
            "plan_hash": self.latest("plan_hash"),
            "approval": self.latest("approval"),
            "tools": b.get("tools"),
            "steps": e.get("steps", []),
            "seq": [b.get("seq"), e.get("seq")],
        }


def runs_of(records: list[dict[str, Any]]) -> list[Run]:
    """Pair each begin with the end of the same run, in the order the runs began."""
    ends = {r.get("run"): r for r in records if r.get("event") == "end"}
    return [Run(r, ends.get(r.get("run"))) for r in records if r.get("event") == "begin"]


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_AGO = re.compile(r"^(\d+)([dhm])$")


def parse_since(value: str, now: datetime, option: str = "--since") -> datetime:
    """An ISO date or time (UTC unless it says otherwise), or an age such as 90d, 12h, 30m."""
    ago = _AGO.match(value.strip())
    if ago:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[ago.group(2)]
        return now - timedelta(**{unit: int(ago.group(1))})
    when = parse_time(value.strip())
    if when is None:
        raise InputError(
            Problem(
                "command line",
                option,
                f"{value!r} is not a time: give an ISO date or time "
                "(2026-10-01, 2026-10-01T09:00+09:00) or an age (90d, 12h, 30m)",
            )
        )
    return when


def select(
    runs: list[Run], *, town: str | None = None, since: datetime | None = None, operation: str | None = None
) -> list[Run]:
    return [
        run
        for run in runs
        if (town is None or town in run.towns())
        and (operation is None or run.operation == operation)
        and (since is None or (run.started is not None and run.started >= since))
    ]

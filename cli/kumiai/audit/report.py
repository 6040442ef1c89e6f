"""The auditor's period report: every change with its approval, every drill and failover with its verdict, the
runs that began and never ended, and whether the log itself verifies. Pure: runs in, Markdown or HTML out.

Drills, failovers and failbacks are not special-cased: any run whose target carries a `verdict` is listed with it.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kumiai.audit.runs import NOT_ENDED, Run


@dataclass(frozen=True)
class Period:
    since: datetime | None
    until: datetime


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def who_text(run: Run) -> str:
    who = run.begin.get("who") or {}
    parts = [f"{who.get('os_user', '?')}@{who.get('host', '?')}"]
    if who.get("git_identity"):
        parts.append(f"git: {who['git_identity']}")
    if who.get("claimed_actor"):
        parts.append(f"claims to be {who['claimed_actor']} (unverified)")
    return "; ".join(parts)


def approval_text(run: Run) -> str:
    approval = run.latest("approval")
    claimed = (run.begin.get("who") or {}).get("claimed_approver")
    text = _text(approval) if isinstance(approval, dict) and approval else "none (no signed plan)"
    if claimed:
        text += f"; claimed approver {claimed} (unverified)"
    return text


def _inventory_text(run: Run) -> str:
    inv = run.begin.get("inventory") or {}
    tree = inv.get("tree")
    if not tree:
        return "not in git"
    return f"tree {tree[:12]}" + (" (working copy differed)" if inv.get("dirty") else "")


def _change_row(run: Run) -> dict[str, str]:
    seconds = (run.end or {}).get("seconds")
    return {
        "started": str(run.begin.get("time", "")),
        "operation": run.operation,
        "target": _text(run.target),
        "who": who_text(run),
        "approval": approval_text(run),
        "plan": str(run.latest("plan_hash") or "—"),
        "inventory": _inventory_text(run),
        "result": f"{run.result}: {error}" if (error := (run.end or {}).get("error")) else run.result,
        "seconds": f"{seconds:.1f}" if isinstance(seconds, int | float) else "—",
    }


CHANGE_COLUMNS = ("started", "operation", "target", "who", "approval", "plan", "inventory", "result", "seconds")
VERDICT_COLUMNS = ("started", "operation", "towns", "verdict", "result")


def _verdict_row(run: Run) -> dict[str, str]:
    return {
        "started": str(run.begin.get("time", "")),
        "operation": run.operation,
        "towns": ", ".join(run.towns()),
        "verdict": _text(run.verdict),
        "result": run.result,
    }


@dataclass(frozen=True)
class Report:
    title: str
    period: Period
    integrity: dict[str, Any]
    runs: list[Run]

    @property
    def verdicts(self) -> list[Run]:
        return [r for r in self.runs if r.verdict is not None]

    @property
    def not_ended(self) -> list[Run]:
        return [r for r in self.runs if not r.ended]

    @property
    def approved(self) -> list[Run]:
        return [r for r in self.runs if isinstance(r.latest("approval"), dict) and r.latest("approval")]

    def summary(self) -> list[tuple[str, str]]:
        results = Counter(r.result for r in self.runs)
        return [
            ("changes (runs)", str(len(self.runs))),
            ("results", ", ".join(f"{k} {v}" for k, v in sorted(results.items())) or "—"),
            ("with a verified approval", str(len(self.approved))),
            ("drills and failovers (with a verdict)", str(len(self.verdicts))),
            ("begun, not ended", str(len(self.not_ended))),
        ]

    def as_dict(self) -> dict[str, Any]:
        """The report for machines: the same runs, the integrity check, and which runs each section lists."""
        return {
            "title": self.title,
            "since": self.period.since.isoformat() if self.period.since else None,
            "until": self.period.until.isoformat(),
            "integrity": self.integrity,
            "runs": [r.as_dict() for r in self.runs],
            "approved": [r.id for r in self.approved],
            "verdicts": [r.id for r in self.verdicts],
            "not_ended": [r.id for r in self.not_ended],
        }

    def integrity_lines(self) -> list[str]:
        i = self.integrity
        if i.get("ok") and not i.get("records"):
            return ["No records: nothing has been recorded in this trail (no log and no anchor)."]
        if i.get("ok"):
            head = i.get("head") or {}
            where = f"; head seq {head.get('seq')} at {head.get('time')}" if head else ""
            return [f"The log verifies: {i.get('records')} records{where}, anchored at {i.get('anchor')}."]
        first = i.get("first_bad") or {}
        lines = [f"THE LOG DOES NOT VERIFY. First bad: {_problem_text(first)}"]
        lines += [_problem_text(p) for p in i.get("problems", [])[1:]]
        return lines

    def period_text(self) -> str:
        since = self.period.since.isoformat(timespec="seconds") if self.period.since else "the first record"
        return f"{since} to {self.period.until.isoformat(timespec='seconds')}"


def _problem_text(p: dict[str, Any]) -> str:
    where = ", ".join(f"{k} {p[k]}" for k in ("line", "seq") if p.get(k))
    return f"{where}: {p.get('problem')}" if where else str(p.get("problem"))


# --- Markdown


def _md_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(columns: tuple[str, ...], rows: list[dict[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(row[c]) for c in columns) + " |" for row in rows]
    return lines


def markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", f"Period: {report.period_text()}", "", "## Integrity", ""]
    lines += [f"- {line}" for line in report.integrity_lines()]
    lines += ["", "## Summary", ""]
    lines += [f"- {label}: {value}" for label, value in report.summary()]
    if report.not_ended:
        lines += ["", f"## ⚠ Begun, not ended ({len(report.not_ended)})", ""]
        lines += ["Killed, lost with their machine, or still running: each needs an explanation.", ""]
        lines += _md_table(CHANGE_COLUMNS, [_change_row(r) for r in report.not_ended])
    lines += ["", "## Drills and failovers", ""]
    if report.verdicts:
        lines += _md_table(VERDICT_COLUMNS, [_verdict_row(r) for r in report.verdicts])
    else:
        lines.append("None in this period.")
    lines += ["", "## Changes", ""]
    if report.runs:
        lines += _md_table(CHANGE_COLUMNS, [_change_row(r) for r in report.runs])
        lines += ["", "### Steps", ""]
        for run in report.runs:
            lines.append(f"- {run.begin.get('time')} {run.operation} ({run.result})")
            lines += [f"  - {_step_text(s)}" for s in _steps(run)]
    else:
        lines.append("None in this period.")
    return "\n".join(lines) + "\n"


def _steps(run: Run) -> list[dict[str, Any]]:
    steps = (run.end or {}).get("steps")
    return [s for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []


def _step_text(step: dict[str, Any]) -> str:
    detail = f": {step['detail']}" if step.get("detail") else ""
    return f"{step.get('name')}: {step.get('status')} in {step.get('seconds')} s{detail}"


# --- HTML

CSS = """
body { font-family: "Noto Sans CJK JP", "Noto Sans JP", sans-serif; margin: 2em; color: #1d1d1f; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; width: 100%; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f2f2f2; }
.ok { color: #1b6e2a; } .bad { color: #b00020; font-weight: bold; }
.flag { background: #fff3cd; border: 2px solid #b38600; padding: 0.5em 1em; }
.broken { background: #fde2e4; border: 2px solid #b00020; padding: 0.5em 1em; }
tr.not-ended td { background: #fff3cd; } tr.failed td { background: #fde2e4; }
details { margin: 0.2em 0; } code { font-size: 0.9em; }
"""


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(columns: tuple[str, ...], rows: list[tuple[dict[str, str], str]]) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in columns)
    body = "".join(
        f'<tr class="{css}">' + "".join(f"<td>{_h(row[c])}</td>" for c in columns) + "</tr>" for row, css in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _row_class(run: Run) -> str:
    return {NOT_ENDED: "not-ended", "failed": "failed", "interrupted": "failed"}.get(run.result, "")


def render_html(report: Report) -> str:
    ok = bool(report.integrity.get("ok"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="ja"><head><meta charset="utf-8">',
        f"<title>{_h(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_h(report.title)}</h1>",
        f"<p>Period: {_h(report.period_text())}</p>",
        "<h2>Integrity</h2>",
        f'<div class="{"ok" if ok else "broken"}">'
        + "".join(f"<p>{_h(line)}</p>" for line in report.integrity_lines())
        + "</div>",
        "<h2>Summary</h2><table><tbody>",
        "".join(f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in report.summary()),
        "</tbody></table>",
    ]
    if report.not_ended:
        parts += [
            f"<h2>⚠ Begun, not ended ({len(report.not_ended)})</h2>",
            '<p class="flag">Killed, lost with their machine, or still running: each needs an explanation.</p>',
            _html_table(CHANGE_COLUMNS, [(_change_row(r), "not-ended") for r in report.not_ended]),
        ]
    parts.append("<h2>Drills and failovers</h2>")
    if report.verdicts:
        parts.append(_html_table(VERDICT_COLUMNS, [(_verdict_row(r), _row_class(r)) for r in report.verdicts]))
    else:
        parts.append("<p>None in this period.</p>")
    parts.append("<h2>Changes</h2>")
    if report.runs:
        parts.append(_html_table(CHANGE_COLUMNS, [(_change_row(r), _row_class(r)) for r in report.runs]))
        parts.append("<h3>Steps</h3>")
        for run in report.runs:
            items = "".join(f"<li>{_h(_step_text(s))}</li>" for s in _steps(run)) or "<li>no steps recorded</li>"
            summary = f"{run.begin.get('time')} {run.operation} ({run.result})"
            parts.append(f"<details><summary>{_h(summary)}</summary><ul>{items}</ul></details>")
    else:
        parts.append("<p>None in this period.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

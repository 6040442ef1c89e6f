"""Evidence of restore drills, as an auditor reads it. Pure: a record in, JSON, Markdown or HTML text out.

One drill of one town is a `DrillEvidence` (kumiai.dr.drill builds it; it is written as drill.json and read back
with the same model for the consortium summary). Each HTML page is self-contained (inline CSS and SVG, no
script, nothing fetched), so it can be archived or mailed as one file.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kumiai.audit.report import CSS

SCHEMA = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TableCheck(_Record):
    """One table of the town: what the primary held in the marker's transaction and what the copy holds."""

    table: str
    rows_primary: int
    rows_recovered: int | None
    checksum_primary: str
    checksum_recovered: str | None

    @property
    def match(self) -> bool:
        return self.rows_primary == self.rows_recovered and self.checksum_primary == self.checksum_recovered


class Comparison(_Record):
    method: str
    caveat: str
    tables: list[TableCheck] = []

    @property
    def mismatched(self) -> list[str]:
        return [t.table for t in self.tables if not t.match]


class StepRecord(_Record):
    name: str
    status: str
    seconds: float
    detail: str = ""


class DrillEvidence(_Record):
    """Everything one drill of one town established (None: the drill failed before measuring it)."""

    schema_version: int = SCHEMA
    drill_id: str
    town: str
    town_name: str
    target: str
    started_at: str
    finished_at: str
    repo: int
    repo_site: str
    scratch: str
    backup_label: str | None = None
    rpo_target_s: int
    rto_target_s: int
    marker_written_at: str | None = None
    marker_xid: str | None = None
    cutoff_at: str | None = None
    newest_recovered_marker_at: str | None = None
    marker_recovered: bool = False
    rpo_s: float | None = None
    rto_s: float | None = None
    restore_s: float | None = None
    restored_bytes: int | None = None
    comparison: Comparison
    steps: list[StepRecord] = []
    tools: dict[str, str] = {}
    verdict: Literal["pass", "fail"]
    reasons: list[str] = []

    @property
    def restore_mb_s(self) -> float | None:
        if not self.restore_s or self.restored_bytes is None:
            return None
        return self.restored_bytes / 1e6 / self.restore_s


def verdict_reasons(ev: DrillEvidence) -> list[str]:
    """Why a drill fails against the town's targets and its checks; [] when it passes."""
    reasons = []
    if not ev.marker_recovered:
        reasons.append("the drill's marker is not in the recovered copy")
    if ev.comparison.mismatched:
        reasons.append(f"tables differ from the primary: {', '.join(ev.comparison.mismatched)}")
    if ev.rpo_s is None:
        reasons.append("RPO not measured")
    elif ev.rpo_s > ev.rpo_target_s:
        reasons.append(f"RPO {ev.rpo_s:.1f} s exceeds the target {ev.rpo_target_s} s")
    if ev.rto_s is None:
        reasons.append("RTO not measured: no writable copy")
    elif ev.rto_s > ev.rto_target_s:
        reasons.append(f"RTO {ev.rto_s:.1f} s exceeds the target {ev.rto_target_s} s")
    return reasons


def as_dict(ev: DrillEvidence) -> dict[str, Any]:
    """The record with its derived figures, for readers of the JSON."""
    return {**ev.model_dump(), "restore_mb_s": ev.restore_mb_s}


def to_json(ev: DrillEvidence) -> str:
    return json.dumps(as_dict(ev), ensure_ascii=False, indent=2) + "\n"


def from_json(text: str) -> DrillEvidence:
    data = json.loads(text)
    data.pop("restore_mb_s", None)  # derived, written for readers of the file
    return DrillEvidence.model_validate(data)


MEASURES = (
    "RPO runs from the cut-off (the moment the marker's WAL was read back from the repo, standing for the loss of "
    "the primary) back to the newest marker found in the recovered copy, both on the primary's clock: what a "
    "restore from this repo at that moment would have lost. RTO runs from the start of the drill (of the command, "
    "for the first town of a run) to the first write the recovered copy commits."
)


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _mb_s(ev: DrillEvidence) -> str:
    rate = ev.restore_mb_s
    return "—" if rate is None else f"{rate:.1f} MB/s ({(ev.restored_bytes or 0) / 1e6:.1f} MB)"


def facts(ev: DrillEvidence) -> list[tuple[str, str]]:
    """The drill's headline facts, in the order every format shows them."""
    return [
        ("Town 団体", f"{ev.town_name} ({ev.town})"),
        ("Verdict 判定", ev.verdict.upper()),
        ("RPO measured / target", f"{_secs(ev.rpo_s)} / {ev.rpo_target_s} s"),
        ("RTO measured / target", f"{_secs(ev.rto_s)} / {ev.rto_target_s} s"),
        ("Restored from", f"repo{ev.repo} at {ev.repo_site}, backup {ev.backup_label or '—'}"),
        ("Restore", f"{_secs(ev.restore_s)}, {_mb_s(ev)}"),
        ("Scratch instance", ev.scratch),
        ("Marker written (xid)", f"{ev.marker_written_at or '—'} ({ev.marker_xid or '—'})"),
        ("Cut-off: marker's WAL in the repo", ev.cutoff_at or "—"),
        ("Newest marker recovered", ev.newest_recovered_marker_at or "—"),
        ("Drill", f"{ev.drill_id}, target {ev.target}, {ev.started_at} → {ev.finished_at}"),
    ]


def _table_cells(t: TableCheck) -> list[str]:
    return [
        t.table,
        str(t.rows_primary),
        "—" if t.rows_recovered is None else str(t.rows_recovered),
        t.checksum_primary,
        t.checksum_recovered or "—",
        "yes" if t.match else "NO",
    ]


TABLE_COLUMNS = ("table", "rows at primary", "rows recovered", "checksum at primary", "checksum recovered", "match")
STEP_COLUMNS = ("step", "status", "seconds", "detail")


def md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def to_markdown(ev: DrillEvidence) -> str:
    lines = [f"# Restore drill 復元訓練: {ev.town_name} ({ev.town}) — {ev.verdict.upper()}", ""]
    lines += [md_row(("", "")), md_row(("---", "---"))]
    lines += [md_row((k, v)) for k, v in facts(ev)]
    if ev.reasons:
        lines += ["", "## Why it failed", ""] + [f"- {r}" for r in ev.reasons]
    lines += ["", "## How RPO and RTO are measured", "", MEASURES]
    lines += ["", "## Tables compared", "", ev.comparison.method, "", f"Caveat: {ev.comparison.caveat}", ""]
    if ev.comparison.tables:
        lines += [md_row(TABLE_COLUMNS), md_row(["---"] * len(TABLE_COLUMNS))]
        lines += [md_row(_table_cells(t)) for t in ev.comparison.tables]
    else:
        lines.append("No table was compared.")
    lines += ["", "## Steps", "", md_row(STEP_COLUMNS), md_row(["---"] * len(STEP_COLUMNS))]
    lines += [md_row((s.name, s.status, f"{s.seconds:.3f}", s.detail)) for s in ev.steps]
    lines += ["", "## Tools", ""] + [f"- {k}: {v}" for k, v in sorted(ev.tools.items())]
    return "\n".join(lines) + "\n"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


PAGE_CSS = (
    CSS
    + """
.verdict-pass { color: #1b6e2a; } .verdict-fail { color: #b00020; }
tr.fail td { background: #fde2e4; }
svg text { font-family: "Noto Sans CJK JP", "Noto Sans JP", sans-serif; font-size: 12px; }
"""
)


def html_page(title: str, body: list[str]) -> str:
    head = f'<!DOCTYPE html>\n<html lang="ja"><head><meta charset="utf-8"><title>{esc(title)}</title>'
    return "\n".join([head, f"<style>{PAGE_CSS}</style></head><body>", *body, "</body></html>"]) + "\n"


def html_table(columns: Sequence[str], rows: Sequence[tuple[Sequence[str], str]]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        f'<tr class="{css}">' + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells, css in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(ev: DrillEvidence) -> str:
    body = [
        f'<h1>Restore drill 復元訓練: {esc(ev.town_name)} ({esc(ev.town)}) — <span id="verdict" '
        f'class="verdict-{ev.verdict}">{esc(ev.verdict.upper())}</span></h1>',
        "<table><tbody>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts(ev)) + "</tbody>"
        "</table>",
    ]
    if ev.reasons:
        body += [
            '<h2>Why it failed</h2><div class="broken">',
            *(f"<p>{esc(r)}</p>" for r in ev.reasons),
            "</div>",
        ]
    body += [
        "<h2>How RPO and RTO are measured</h2>",
        f"<p>{esc(MEASURES)}</p>",
        "<h2>Tables compared</h2>",
        f"<p>{esc(ev.comparison.method)}</p>",
        f"<p>Caveat: {esc(ev.comparison.caveat)}</p>",
    ]
    rows = [(_table_cells(t), "" if t.match else "fail") for t in ev.comparison.tables]
    body.append(html_table(TABLE_COLUMNS, rows) if rows else "<p>No table was compared.</p>")
    body.append("<h2>Steps</h2>")
    steps = [
        ((s.name, s.status, f"{s.seconds:.3f}", s.detail), "fail" if s.status == "failed" else "") for s in ev.steps
    ]
    body.append(html_table(STEP_COLUMNS, steps))
    body.append("<h2>Tools</h2><ul>" + "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in sorted(ev.tools.items())))
    body.append("</ul>")
    return html_page(f"Restore drill {ev.town} {ev.started_at}", body)


# --- the consortium summary

BAR_H = 16
ROW_H = 44
LABEL_W = 190
CHART_W = 460


def newest_per_town(records: Sequence[DrillEvidence]) -> list[DrillEvidence]:
    """The latest drill of each town, ordered by town id."""
    newest: dict[str, DrillEvidence] = {}
    for ev in records:
        if ev.town not in newest or ev.started_at > newest[ev.town].started_at:
            newest[ev.town] = ev
    return [newest[t] for t in sorted(newest)]


def log_scale(low: float, high: float) -> tuple[float, float]:
    """Decades spanning every value: seconds range from a fraction (RPO) to hours (RTO targets)."""
    bottom = 10 ** math.floor(math.log10(max(low, 0.01)))
    top = 10 ** math.ceil(math.log10(max(high, bottom * 10)))
    return bottom, top


def _panel(title: str, rows: Sequence[tuple[str, float | None, int, bool]], y0: int) -> tuple[list[str], int]:
    """Horizontal bars of measured seconds on a log scale, each town's target as a dashed mark."""
    values = [float(t) for _, _, t, _ in rows] + [m for _, m, _, _ in rows if m is not None and m > 0]
    bottom, top = log_scale(min(values), max(values))
    x0 = LABEL_W

    def x(value: float) -> float:
        clipped = min(max(value, bottom), top)
        return x0 + CHART_W * math.log10(clipped / bottom) / math.log10(top / bottom)

    parts = [f'<text x="0" y="{y0 + 14}" font-weight="bold">{esc(title)}</text>']
    y = y0 + 26
    height = ROW_H * len(rows)
    tick = bottom
    while tick <= top:
        tx = x(tick)
        parts.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{y - 6}" y2="{y + height - 10}" stroke="#ddd"/>')
        parts.append(f'<text x="{tx:.1f}" y="{y + height + 2}" text-anchor="middle" fill="#666">{tick:g} s</text>')
        tick *= 10
    for label, measured, target, failed in rows:
        colour = "#b00020" if failed else "#1b6e2a"
        parts.append(f'<text x="0" y="{y + BAR_H - 3}">{esc(label)}</text>')
        if measured is None:
            parts.append(f'<text x="{x0 + 4}" y="{y + BAR_H - 3}" fill="#b00020">not measured</text>')
        else:
            width = max(x(measured) - x0, 2.0)
            parts.append(
                f'<rect class="measured" x="{x0}" y="{y}" width="{width:.1f}" height="{BAR_H}" fill="{colour}">'
                f"<title>{esc(label)}: {measured:.2f} s</title></rect>"
            )
            parts.append(f'<text x="{x0 + width + 4:.1f}" y="{y + BAR_H - 3}">{measured:.2f} s</text>')
        tx = x(target)
        parts.append(
            f'<line class="target" x1="{tx:.1f}" x2="{tx:.1f}" y1="{y - 4}" y2="{y + BAR_H + 4}" stroke="#1d1d1f" '
            f'stroke-width="2" stroke-dasharray="3,2"><title>target {target} s</title></line>'
        )
        parts.append(f'<text x="{tx + 4:.1f}" y="{y + BAR_H + 13}">target {target} s</text>')
        y += ROW_H
    return parts, y + 24


def summary_svg(records: Sequence[DrillEvidence]) -> str:
    """RPO and RTO of each town's newest drill against its targets, as inline SVG."""
    towns = newest_per_town(records)
    rpo = [
        (f"{e.town_name} {e.town}", e.rpo_s, e.rpo_target_s, e.rpo_s is None or e.rpo_s > e.rpo_target_s) for e in towns
    ]
    rto = [
        (f"{e.town_name} {e.town}", e.rto_s, e.rto_target_s, e.rto_s is None or e.rto_s > e.rto_target_s) for e in towns
    ]
    top, y = _panel("RPO 目標復旧時点 (seconds, log scale)", rpo, 0)
    bottom, height = _panel("RTO 目標復旧時間 (seconds, log scale)", rto, y)
    width = LABEL_W + CHART_W + 90
    return (
        f'<svg id="drill-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="RPO and RTO per town against targets">'
        + "".join(top + bottom)
        + "</svg>"
    )


SUMMARY_COLUMNS = ("town", "verdict", "drill started", "RPO / target", "RTO / target", "restore", "repo", "evidence")


def summary_html(records: Sequence[DrillEvidence], links: dict[str, str], consortium: str) -> str:
    """The consortium's page: each town's newest drill, a chart of RPO and RTO against targets, links to each run.

    links: drill_id -> relative path of that drill's HTML page."""
    towns = newest_per_town(records)
    passed = sum(1 for e in towns if e.verdict == "pass")
    rows = [
        (
            (
                f"{e.town_name} ({e.town})",
                e.verdict.upper(),
                e.started_at,
                f"{_secs(e.rpo_s)} / {e.rpo_target_s} s",
                f"{_secs(e.rto_s)} / {e.rto_target_s} s",
                _mb_s(e),
                f"repo{e.repo} ({e.repo_site})",
                links.get(e.drill_id, ""),
            ),
            "" if e.verdict == "pass" else "fail",
        )
        for e in towns
    ]
    body = [
        f"<h1>Restore drills 復元訓練 — {esc(consortium)}</h1>",
        f'<p id="tally">{passed} of {len(towns)} towns passed their newest drill; {len(records)} drills on record.</p>',
        summary_svg(records) if towns else "<p>No drill on record yet.</p>",
        "<h2>Newest drill per town</h2>",
        html_table(SUMMARY_COLUMNS, rows),
        "<h2>Every drill</h2><ul>",
    ]
    for e in sorted(records, key=lambda r: r.started_at, reverse=True):
        href = links.get(e.drill_id)
        text = f"{e.started_at} {e.town} {e.verdict.upper()}"
        body.append(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' if href else f"<li>{esc(text)}</li>")
    body.append("</ul>")
    return html_page(f"Restore drills {consortium}", body)

"""An InventoryDiff as people and machines read it: text, Markdown, JSON, and one self-contained HTML file. Pure.

Every format has the same parts in the same order: the summary (towns added and removed, counts per town and
site, removals and replacements called out, isolation rules before and after, database moves), then each town
with its data-layer changes and, per site, each resource and its changed properties.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from kumiai.diff.model import ADD, CHANGE, MISSING, REMOVE, REPLACE, Change, InventoryDiff, ResourceDiff, StackDiff
from kumiai.render import PLATFORM

FORMATS = ("text", "md", "json", "html")
SIGN = {ADD: "+", CHANGE: "~", REPLACE: "!", REMOVE: "-"}
WORD = {ADD: "added", CHANGE: "changed", REPLACE: "REPLACED", REMOVE: "REMOVED"}
TOWN_WORD = {ADD: "added", CHANGE: "changed", REMOVE: "REMOVED"}


def value(v: Any) -> str:
    return "(absent)" if v is MISSING else json.dumps(v, ensure_ascii=False, sort_keys=True)


def _where(town: str) -> str:
    return "(platform)" if town == PLATFORM else town


def _isolation(violations: list[dict[str, str]]) -> str:
    return "ok" if not violations else f"{len(violations)} violations"


def _new_violations(stack: StackDiff) -> list[dict[str, str]]:
    return [v for v in stack.violations_after if v not in stack.violations_before]


def _counts(d: InventoryDiff) -> str:
    return ", ".join(f"{d.count(op)} {WORD[op].lower()}" for op in (ADD, CHANGE, REPLACE, REMOVE))


def _loud(d: InventoryDiff) -> list[str]:
    """The lines an auditor must not miss."""
    lines = []
    removed = d.count(REMOVE)
    replaced = d.count(REPLACE)
    gone = [t.town for t in d.towns if t.status == REMOVE]
    if gone:
        lines.append(f"TOWNS REMOVED: {', '.join(gone)}: every resource of theirs is deleted")
    if removed:
        lines.append(f"{removed} resources will be REMOVED")
    if replaced:
        lines.append(f"{replaced} resources will be REPLACED (deleted and created again)")
    for s in d.stacks():
        for v in _new_violations(s):
            lines.append(f"isolation rule broken at {_where(s.town)} @ {s.site}: {v['resource']}: [{v['rule']}]")
    return lines


def _moves(d: InventoryDiff) -> list[str]:
    return [
        f"{t.town} ({t.name}): database moves from {t.placement[0]} to {t.placement[1]}; the db Service at every "
        "site follows"
        for t in d.towns
        if t.placement
    ]


def _rows(d: InventoryDiff) -> list[tuple[str, str, str, int, int, int, int, str]]:
    """(town, name, site, added, changed, replaced, removed, isolation before -> after) per changed stack."""
    names = {t.town: t.name for t in d.towns}
    return [
        (
            _where(s.town),
            names.get(s.town, ""),
            s.site,
            s.count(ADD),
            s.count(CHANGE),
            s.count(REPLACE),
            s.count(REMOVE),
            f"{_isolation(s.violations_before) if s.present_before else '-'} -> "
            f"{_isolation(s.violations_after) if s.present_after else '-'}",
        )
        for s in d.stacks()
    ]


def _towns_line(d: InventoryDiff, status: str) -> str:
    return ", ".join(f"{t.town} ({t.name})" for t in d.towns if t.status == status) or "none"


# --- text ---------------------------------------------------------------------------------------------------


def _text_changes(changes: list[Change], indent: str) -> list[str]:
    return [f"{indent}{c.path or '(object)'}: {value(c.old)} -> {value(c.new)}" for c in changes]


def _text_resource(r: ResourceDiff) -> list[str]:
    head = f"    {SIGN[r.op]} {WORD[r.op]:<8} {r.kind} {r.object}"
    if r.replaced_by:
        head += f"  (because {', '.join(r.replaced_by)} cannot change in place)"
    return [head, *_text_changes(r.changes, "        ")]


def text(d: InventoryDiff) -> str:
    lines = [f"kumiai diff: {d.consortium}, {d.base} -> {d.head}", ""]
    if not d.changed:
        return "\n".join([*lines, "No changes."]) + "\n"
    lines += [
        "Summary",
        f"  towns added:    {_towns_line(d, ADD)}",
        f"  towns removed:  {_towns_line(d, REMOVE)}",
        f"  towns changed:  {_towns_line(d, CHANGE)}",
        f"  towns unchanged: {d.unchanged_towns}",
        f"  resources: {_counts(d)}",
    ]
    lines += [f"  !! {line}" for line in _loud(d)]
    lines += [f"  placement: {line}" for line in _moves(d)]
    lines += ["", f"  {'town':<14} {'site':<12} {'+add':>5} {'~chg':>5} {'!repl':>5} {'-rem':>5}  isolation"]
    for town, _name, site, a, c, r, rm, iso in _rows(d):
        lines.append(f"  {town:<14} {site:<12} {a:>5} {c:>5} {r:>5} {rm:>5}  {iso}")
    for s in d.platform:
        lines += ["", f"== platform @ {s.site} ==", *(x for r in s.resources for x in _text_resource(r))]
    for t in d.towns:
        lines += ["", f"== {t.name} ({t.town}): {TOWN_WORD[t.status]} =="]
        if t.placement:
            lines.append(f"  placement: database moves {t.placement[0]} -> {t.placement[1]}")
        if t.datalayer:
            lines += ["  data layer (Ansible host variables):", *_text_changes(t.datalayer, "    ")]
        for s in t.stacks:
            lines.append(f"  @ {s.site}:")
            lines += [x for r in s.resources for x in _text_resource(r)]
            lines += [f"    isolation: {v['resource']}: [{v['rule']}] {v['message']}" for v in _new_violations(s)]
    return "\n".join(lines) + "\n"


# --- Markdown -----------------------------------------------------------------------------------------------


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("`", "'")


def _md_changes(changes: list[Change], indent: str) -> list[str]:
    return [f"{indent}- `{_md(c.path or '(object)')}`: `{_md(value(c.old))}` → `{_md(value(c.new))}`" for c in changes]


def _md_resource(r: ResourceDiff) -> list[str]:
    head = f"- **{WORD[r.op]}** {r.kind} `{r.object}`"
    if r.replaced_by:
        head += f" (because `{', '.join(r.replaced_by)}` cannot change in place)"
    return [head, *_md_changes(r.changes, "  ")]


def markdown(d: InventoryDiff) -> str:
    lines = [f"# kumiai diff: {d.consortium}", "", f"`{d.base}` → `{d.head}`", ""]
    if not d.changed:
        return "\n".join([*lines, "No changes."]) + "\n"
    lines += [
        "## Summary",
        "",
        f"- towns added: {_towns_line(d, ADD)}",
        f"- towns removed: {_towns_line(d, REMOVE)}",
        f"- towns changed: {_towns_line(d, CHANGE)}",
        f"- towns unchanged: {d.unchanged_towns}",
        f"- resources: {_counts(d)}",
    ]
    lines += [f"- **⚠ {line}**" for line in _loud(d)]
    lines += [f"- **placement:** {line}" for line in _moves(d)]
    lines += [
        "",
        "| town | 団体名 | site | added | changed | replaced | removed | isolation |",
        "|---|---|---|--:|--:|--:|--:|---|",
    ]
    lines += [f"| {' | '.join(_md(str(x)) for x in row)} |" for row in _rows(d)]
    for s in d.platform:
        lines += ["", f"## platform @ {s.site}", "", *(x for r in s.resources for x in _md_resource(r))]
    for t in d.towns:
        lines += ["", f"## {t.name} ({t.town}): {TOWN_WORD[t.status]}", ""]
        if t.placement:
            lines += [f"**placement:** database moves {t.placement[0]} → {t.placement[1]}", ""]
        if t.datalayer:
            lines += ["### data layer (Ansible host variables)", "", *_md_changes(t.datalayer, ""), ""]
        for s in t.stacks:
            lines += [f"### @ {s.site}", "", *(x for r in s.resources for x in _md_resource(r))]
            lines += [
                f"- **isolation:** {v['resource']}: [{v['rule']}] {_md(v['message'])}" for v in _new_violations(s)
            ]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --- JSON ---------------------------------------------------------------------------------------------------


def as_json(d: InventoryDiff) -> str:
    return json.dumps(d.as_dict(), ensure_ascii=False, indent=2) + "\n"


# --- HTML ---------------------------------------------------------------------------------------------------

CSS = """
body{font-family:"Noto Sans CJK JP","Noto Sans JP",system-ui,sans-serif;margin:2rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}
.add{color:#0a6b2c}.change{color:#8a5a00}.replace,.remove{color:#b00020;font-weight:bold}
.loud{background:#fde7ea;border-left:6px solid #b00020;padding:.5rem 1rem;margin:.3rem 0}
.move{background:#e8f0fe;border-left:6px solid #1a56db;padding:.5rem 1rem;margin:.3rem 0}
details{margin:.2rem 0 .2rem 1rem}summary{cursor:pointer}
details.add summary{background:#e6f4ea}details.change summary{background:#fff4e0}
details.replace summary,details.remove summary{background:#fde7ea}
code{font-family:"Noto Sans Mono CJK JP",monospace;font-size:.9em}
ul.props{list-style:none;padding-left:1rem}.old{color:#b00020;text-decoration:line-through}.new{color:#0a6b2c}
"""


def _h(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _html_changes(changes: list[Change]) -> str:
    items = "".join(
        f"<li><code>{_h(c.path or '(object)')}</code>: <span class=old>{_h(value(c.old))}</span> → "
        f"<span class=new>{_h(value(c.new))}</span></li>"
        for c in changes
    )
    return f"<ul class=props>{items}</ul>"


def _html_resource(r: ResourceDiff) -> str:
    why = f" — because <code>{_h(', '.join(r.replaced_by))}</code> cannot change in place" if r.replaced_by else ""
    title = f"<span class={r.op}>{SIGN[r.op]} {WORD[r.op]}</span> {_h(r.kind)} <code>{_h(r.object)}</code>{why}"
    if not r.changes:
        return f"<div class={r.op}>{title}</div>"
    return f"<details class={r.op}><summary>{title} ({len(r.changes)})</summary>{_html_changes(r.changes)}</details>"


def _html_stack(s: StackDiff, title: str) -> str:
    parts = [f"<h3>{_h(title)}</h3>", *(_html_resource(r) for r in s.resources)]
    parts += [
        f"<div class=loud>isolation: {_h(v['resource'])}: [{_h(v['rule'])}] {_h(v['message'])}</div>"
        for v in _new_violations(s)
    ]
    return "".join(parts)


def html_page(d: InventoryDiff) -> str:
    title = f"kumiai diff: {d.consortium}, {d.base} → {d.head}"
    body = [f"<h1>{_h(title)}</h1>"]
    if not d.changed:
        body.append("<p>No changes.</p>")
    else:
        body += [
            "<h2>Summary</h2><ul>",
            f"<li>towns added: {_h(_towns_line(d, ADD))}</li>",
            f"<li>towns removed: <span class={REMOVE if any(t.status == REMOVE for t in d.towns) else 'none'}>"
            f"{_h(_towns_line(d, REMOVE))}</span></li>",
            f"<li>towns changed: {_h(_towns_line(d, CHANGE))}</li>",
            f"<li>towns unchanged: {d.unchanged_towns}</li>",
            f"<li>resources: {_h(_counts(d))}</li></ul>",
            *(f"<div class=loud>⚠ {_h(line)}</div>" for line in _loud(d)),
            *(f"<div class=move>placement: {_h(line)}</div>" for line in _moves(d)),
            "<table><tr><th>town</th><th>団体名</th><th>site</th><th>added</th><th>changed</th><th>replaced</th>"
            "<th>removed</th><th>isolation</th></tr>",
        ]
        for town, name, site, a, c, r, rm, iso in _rows(d):
            cells = [
                f"<td><a href='#town-{_h(town)}'>{_h(town)}</a></td><td>{_h(name)}</td><td>{_h(site)}</td>",
                f"<td class='n add'>{a}</td><td class='n change'>{c}</td>",
                f"<td class='n{' replace' if r else ''}'>{r}</td><td class='n{' remove' if rm else ''}'>{rm}</td>",
                f"<td>{_h(iso)}</td>",
            ]
            body.append(f"<tr>{''.join(cells)}</tr>")
        body.append("</table>")
        for s in d.platform:
            body.append(_html_stack(s, f"platform @ {s.site}"))
        for t in d.towns:
            body.append(
                f"<section id='town-{_h(t.town)}'><h2>{_h(t.name)} ({_h(t.town)}): "
                f"<span class={'remove' if t.status == REMOVE else t.status}>{TOWN_WORD[t.status]}</span></h2>"
            )
            if t.placement:
                body.append(f"<div class=move>database moves {_h(t.placement[0])} → {_h(t.placement[1])}</div>")
            if t.datalayer:
                body.append(
                    "<details open class=change><summary>data layer (Ansible host variables)</summary>"
                    f"{_html_changes(t.datalayer)}</details>"
                )
            body += [_html_stack(s, f"@ {s.site}") for s in t.stacks]
            body.append("</section>")
    return (
        '<!DOCTYPE html><html lang=ja><head><meta charset="utf-8">'
        f"<title>{_h(title)}</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


RENDERERS: dict[str, Callable[[InventoryDiff], str]] = {
    "text": text,
    "md": markdown,
    "json": as_json,
    "html": html_page,
}

"""`kumiai audit ...`: read, verify and report on the audit trail of state-changing commands."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kumiai.audit.chain import parse, split_lines
from kumiai.audit.report import Period, Report, markdown, render_html
from kumiai.audit.runs import NOT_ENDED, Run, parse_since, runs_of, select
from kumiai.audit.trail import Trail, Verification, read_log, verify
from kumiai.commands.common import current_target
from kumiai.console import emit_json, err, out
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.objectstore.evidence import evidence_site, store_of

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", metavar="TIME", help="ISO date or time (UTC by default), or an age: 90d, 12h."),
]

audit_app = typer.Typer(
    help="The audit trail: who changed what, when, with whose approval and which result.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def read_runs(trail: Trail) -> list[Run]:
    """Every run in the log; lines that are not records are left out here (`audit verify` names them)."""
    data, _, _ = read_log(trail)
    lines = split_lines(data)[0] if data else []
    return runs_of([r for r in map(parse, lines) if r is not None])


def _warn_unverified(check: Verification) -> None:
    err.print(
        f"[bold red]warning:[/] the audit log does not verify ({escape(str(check.problems[0]))}); "
        "run [bold]kumiai audit verify[/]"
    )


@audit_app.command("log")
def log(
    ctx: typer.Context,
    town: Annotated[str | None, typer.Option("--town", metavar="ID", help="Only runs on this town.")] = None,
    since: SinceOpt = None,
    operation: Annotated[
        str | None, typer.Option("--operation", metavar="NAME", help="Only this operation, e.g. 'onboard'.")
    ] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Only the newest N runs.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Runs of state-changing commands, each from its begin record to its end (exit 1 if the log does not verify)."""
    trail, check = verified(ctx)
    when = parse_since(since, datetime.now(UTC)) if since else None
    runs = select(read_runs(trail), town=town, since=when, operation=operation)
    runs = runs[-last:] if last else runs
    if json_:
        emit_json([r.as_dict() for r in runs])
    else:
        _print_runs(trail, runs)
    if not check.ok:
        _warn_unverified(check)
        raise typer.Exit(1)


def _print_runs(trail: Trail, runs: list[Run]) -> None:
    table = Table(title=f"audit log {trail.log}")
    for col in ("started", "who", "operation", "target", "result", "seconds", "steps"):
        table.add_column(col)
    for run in runs:
        d = run.as_dict()
        who = d["who"] or {}
        claimed = f" (claims {who['claimed_actor']})" if who.get("claimed_actor") else ""
        result = "[bold yellow]not ended[/]" if d["result"] == NOT_ENDED else escape(d["result"])
        if d["result"] in ("failed", "interrupted"):
            result = f"[red]{result}[/]"
        table.add_row(
            escape(str(d["started"])),
            escape(f"{who.get('os_user', '?')}{claimed}"),
            escape(run.operation),
            escape(", ".join(f"{k}={v}" for k, v in run.target.items())),
            result,
            f"{d['seconds']:.1f}" if isinstance(d["seconds"], int | float) else "—",
            str(len(d["steps"])),
        )
    out.print(table)
    not_ended = sum(1 for r in runs if not r.ended)
    if not_ended:
        out.print(f"[bold yellow]{not_ended} run(s) began and never ended[/] (killed, or still running)")


def expected_anchor(ctx: typer.Context) -> tuple[str | None, list[str]]:
    """Where the inventory says the remote anchor is (the first DR site's evidence bucket), and why that could not
    be told: verifying a copied state directory without its inventory still checks what is there. A lab site's
    store counts once the lab has built it (`lab down --purge` removes it with everything it held)."""
    try:
        other = evidence_site(current_target(ctx).topology().sites)
    except KumiaiError as exc:
        return None, [f"the inventory could not be read, so the remote anchor was not required: {exc.message}"]
    if other is None or other.object_store is None:
        return None, []
    run_dir = other.object_store.run_dir
    if run_dir is not None and not run_dir.exists():
        return None, []
    return store_of(other).where, []


def verified(ctx: typer.Context) -> tuple[Trail, Verification]:
    """This state directory's trail and its check against its key, its anchors and the inventory."""
    trail = Trail.default()
    expected, notes = expected_anchor(ctx)
    check = verify(trail, expected)
    check.warnings.extend(notes)
    return trail, check


@audit_app.command("verify")
def verify_cmd(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Check every record against the key, the chain and the anchor; name the first bad record (exit 1 if any).

    Where the inventory's DR site has an object store, the log is also checked against the anchor copied there,
    and this controller must know that store (a missing or redirected record of it is a failure)."""
    _, check = verified(ctx)
    data = check.as_dict()
    if json_:
        emit_json(data)
        if not check.ok:
            raise typer.Exit(1)
        return
    for warning in check.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if not check.ok:
        raise KumiaiError(
            f"the audit log {check.trail.log} does not verify:\n  " + "\n  ".join(str(p) for p in check.problems)
        )
    head = data["head"]
    if head is None:
        out.print(f"[green]ok[/]: no records yet: no log and no anchor ({escape(data['log'])})")
        return
    remote = f" and the anchor in {data['remote_anchor']}" if data["remote_anchor"] else ""
    out.print(
        f"[green]ok[/]: {data['records']} records, head seq {head['seq']} at {head['time']}; "
        f"chain, key and anchor{escape(remote)} agree ({escape(data['log'])})"
    )


@audit_app.command("report")
def report_cmd(
    ctx: typer.Context,
    since: SinceOpt = None,
    format_: Annotated[str, typer.Option("--format", help="md or html.")] = "md",
    out_file: Annotated[Path | None, typer.Option("--out", metavar="FILE", help="Write here, not stdout.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="The report as JSON (instead of --format).")] = False,
) -> None:
    """The auditor's period report: every change with its approval, every drill and failover with its verdict.

    Runs that began and never ended are flagged, and the report says whether the log verifies (exit 1 if it does
    not; the report is written anyway)."""
    if format_ not in ("md", "html"):
        raise InputError(Problem("command line", "--format", f"{format_!r} is not a format: md or html"))
    now = datetime.now(UTC)
    when = parse_since(since, now) if since else None
    trail, check = verified(ctx)
    runs = select(read_runs(trail), since=when)
    report = Report("kumiai 監査報告 (audit report)", Period(when, now), check.as_dict(), runs)
    if json_:
        text = json.dumps(report.as_dict(), ensure_ascii=False, indent=2, default=str) + "\n"
    else:
        text = render_html(report) if format_ == "html" else markdown(report)
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"wrote {escape(str(out_file))}: {len(runs)} runs, {len(report.verdicts)} with a verdict")
    if not check.ok:
        _warn_unverified(check)
        raise typer.Exit(1)

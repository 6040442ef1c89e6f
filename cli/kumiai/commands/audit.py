"""`kumiai audit ...`: read and verify the hash-chained audit log of state-changing commands."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from kumiai import paths
from kumiai.console import emit_json, out
from kumiai.errors import KumiaiError
from kumiai.ops import verify_chain

audit_app = typer.Typer(help="The audit log: who changed what, when, with which result.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def read_records() -> list[dict[str, Any]]:
    log = paths.audit_log()
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


@audit_app.command("show")
def show(
    last: Annotated[int, typer.Option("--last", min=1, help="Show only the newest N records.")] = 20,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
) -> None:
    """Show the newest records of the audit log."""
    problems = verify_chain(paths.audit_log())
    if problems:
        raise KumiaiError("the audit log does not verify:\n  " + "\n  ".join(problems))
    records = read_records()[-last:]
    if json_:
        emit_json(records)
        return
    table = Table(title=f"audit log {paths.audit_log()}")
    for col in ("started", "actor", "operation", "target", "result", "seconds", "steps"):
        table.add_column(col)
    for r in records:
        target = ", ".join(f"{k}={v}" for k, v in r.get("target", {}).items())
        table.add_row(
            r["started"],
            r["actor"],
            r["operation"],
            target,
            r["result"],
            f"{r['seconds']:.1f}",
            str(len(r.get("steps", []))),
        )
    out.print(table)


@audit_app.command("verify")
def verify(json_: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False) -> None:
    """Check that no record was changed, removed or reordered (exit 1 if the chain is broken)."""
    problems = verify_chain(paths.audit_log())
    count = len(read_records()) if not problems else None
    if json_:
        emit_json({"ok": not problems, "records": count, "problems": problems})
    elif not problems:
        out.print(f"[green]ok[/]: {count} records, chain intact ({paths.audit_log()})")
    if problems:
        if not json_:
            raise KumiaiError("the audit log does not verify:\n  " + "\n  ".join(problems))
        raise typer.Exit(1)

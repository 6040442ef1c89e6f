"""`kumiai failover` and `kumiai failback`: move towns' primaries between sites (runbooks in dr-runbooks/)."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, out
from kumiai.datalayer.target import Target
from kumiai.dr.failover import fail_back, fail_over
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.ops import Operation

TownOpt = Annotated[list[str] | None, typer.Option("--town", help="A town to move (repeat for several).")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every onboarded town, one at a time.")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")]


def register(app: typer.Typer) -> None:
    app.command("failover")(failover)
    app.command("failback")(failback)


def _towns(target: Target, towns: list[str] | None, all_: bool) -> list[str]:
    if bool(towns) == all_:
        raise InputError(Problem("--town/--all", "", "give --town ID (repeatable) or --all, not both and not neither"))
    if all_:
        return list(target.topology().towns)
    return list(dict.fromkeys(towns or []))


def _confirm(question: str, yes: bool) -> None:
    if not yes and not typer.confirm(question, err=True):
        raise typer.Exit(1)


def _report(records: list[dict[str, Any]], inventory_root: str, json_: bool) -> None:
    files = sorted({r["placement"]["file"] for r in records if r.get("placement", {}).get("file")})
    commit = (
        f"git -C {shlex.quote(inventory_root)} commit -m 'Placement after failover: "
        f"{', '.join(sorted(r['town'] for r in records if r.get('placement', {}).get('file')))}' -- "
        + " ".join(shlex.quote(f) for f in files)
        if files
        else None
    )
    if json_:
        emit_json({"towns": records, "placement_files": files, "commit_command": commit})
    else:
        for r in records:
            line = f"[bold]{r['town']}[/] {r['kind']} → {r['to']}: {r['result']}"
            for key, label in (("seconds_to_writable", "writable after"), ("writes_stopped_s", "writes stopped")):
                if r.get(key) is not None:
                    line += f", {label} {r[key]:.2f} s"
            out.print(line)
            window = r.get("loss_window")
            if window:
                size = "unknown" if window["bytes"] is None else f"{window['bytes']} B"
                secs = "unknown" if window["seconds"] is None else f"{window['seconds']:.3f} s"
                out.print(f"  data-loss window: {size}, {secs} ({window['basis']})")
            stuck = (r.get("archive_conflict") or {}).get("unresolved")
            if stuck:
                out.print(f"  [yellow]warning:[/] {stuck}")
            if r.get("fencing"):
                out.print(f"  fencing of {r['from']}: {'; '.join(r['fencing'])}")
            if r.get("error"):
                out.print(f"  [red]failed:[/] {r['error']}")
            if r.get("evidence"):
                out.print(f"  evidence: {r['evidence']}")
        if commit:
            out.print(f"placement changed in {', '.join(files)}; record the move in git:\n  {commit}")
    failed = [f"{r['town']}: {r['error']}" for r in records if r["result"] == "fail"]
    if failed:
        raise KumiaiError("failed for " + "; ".join(failed))


def failover(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The site that serves the towns afterwards.")],
    towns: TownOpt = None,
    all_: AllOpt = False,
    planned: Annotated[
        bool, typer.Option("--planned", help="Hand over from a healthy primary: demote, catch up, promote; no loss.")
    ] = False,
    yes: YesOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Fence and promote even though the old primary is reachable and healthy.")
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why --force is needed (recorded).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Serve towns from another site: planned (no loss) or emergency (the old site fenced first)."""
    if force and not (reason and reason.strip()):
        raise InputError(Problem("--reason", "", "--force needs --reason TEXT saying why (it is recorded)"))
    if planned and force:
        raise InputError(Problem("--force", "", "a planned failover never forces: it needs a healthy primary"))
    target = current_target(ctx)
    ids = _towns(target, towns, all_)
    sites = [s.id for s in target.inventory.consortium.sites]
    if to not in sites:
        raise InputError(Problem("--to", "", f"unknown site {to!r}; sites are: {', '.join(sites)}"))
    kind = "planned" if planned else "emergency"
    _confirm(f"{kind} failover of {', '.join(ids)} to {to}?", yes)
    with Operation("failover", target={"towns": ids, "to": to, "kind": kind, "reason": reason}) as op:
        records = fail_over(target, ids, to, op, planned=planned, force=force, reason=reason)
        op.target["results"] = {r["town"]: r["result"] for r in records}
        op.target["verdict"] = "fail" if any(r["result"] == "fail" for r in records) else "pass"
        _report(records, str(target.inventory.root), json_)


def failback(
    ctx: typer.Context,
    towns: TownOpt = None,
    all_: AllOpt = False,
    yes: YesOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Bring towns back to the consortium's primary site: rebuild it as a standby, catch up, planned switch back."""
    target = current_target(ctx)
    ids = _towns(target, towns, all_)
    home = target.inventory.primary_site.id
    _confirm(f"failback of {', '.join(ids)} to {home}?", yes)
    with Operation("failback", target={"towns": ids, "to": home}) as op:
        records = fail_back(target, ids, op)
        op.target["results"] = {r["town"]: r["result"] for r in records}
        op.target["verdict"] = "fail" if any(r["result"] == "fail" for r in records) else "pass"
        _report(records, str(target.inventory.root), json_)

"""`kumiai backup run|list|verify`: the towns' pgBackRest backups, in every repo, through the data-layer target."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, out
from kumiai.datalayer.onboard import onboarded
from kumiai.datalayer.topology import Topology
from kumiai.dr import backup
from kumiai.dr.objectives import DEFAULT_GRACE_S
from kumiai.dr.runbook import RunContext, load_runbook, register_actions, run, runbooks_dir
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.ops import Operation

backup_app = typer.Typer(help="Backups of the towns: run, list, verify.", no_args_is_help=True)

TownsOpt = Annotated[
    list[str] | None, typer.Option("--town", help="Only this town (repeatable; default: every onboarded town).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")


def _towns(topology: Topology, towns: list[str] | None) -> list[str]:
    return list(dict.fromkeys(towns)) if towns else list(topology.towns)


def _repo_choice(value: str, topology: Topology, town_ids: list[str]) -> int | None:
    """--repo: `all` (None) or a repo number every chosen town has."""
    if value == "all":
        return None
    common = set.intersection(*({r.number for r in topology.towns[t].repos} for t in town_ids)) if town_ids else set()
    if not value.isdigit() or int(value) not in common:
        allowed = ", ".join(["all", *(str(n) for n in sorted(common))])
        raise InputError(Problem("--repo", value, f"allowed: {allowed} (repos are numbered by site)"))
    return int(value)


@backup_app.command("run")
def backup_run(
    ctx: typer.Context,
    towns: TownsOpt = None,
    kind: Annotated[str, typer.Option("--type", help="Backup type: full, diff or incr.")] = "full",
    repo: Annotated[str, typer.Option("--repo", help="Repo number (numbered by site), or all.")] = "all",
    json_: JsonOpt = False,
) -> None:
    """Back up towns now, from each town's leader, into every repo (or one); old backups expire by retention."""
    if kind not in backup.BACKUP_TYPES:
        raise InputError(Problem("--type", kind, f"allowed: {', '.join(backup.BACKUP_TYPES)}"))
    target = current_target(ctx)
    topology = onboarded(target, towns or [])
    ids = _towns(topology, towns)
    number = _repo_choice(repo, topology, ids)
    results: list[backup.RepoBackup] = []
    with Operation("backup run", target={"towns": ids, "type": kind, "repo": repo}) as op:
        for tid in ids:
            with op.step(f"{tid}: {kind} backup") as step:
                done = backup.backup_towns(target, topology, [tid], kind, number)
                step.detail = ", ".join(f"repo{r.repo} {r.label if r.ok else 'failed'}" for r in done)
            results += done
            # Printed town by town: a full backup of a large town takes a while.
            for r in [] if json_ else done:
                what = f"{r.label} in {r.seconds:.1f} s" if r.ok else f"[red]FAILED[/]: {escape(r.error or '')}"
                out.print(f"{r.town:16} repo{r.repo}  {r.type:4}  {what}")
        if not ids and not json_:
            out.print("no town is onboarded here")
        failed = [f"{r.town} repo{r.repo} ({r.error})" for r in results if not r.ok]
        op.target["verdict"] = "fail" if failed else "pass"
        if json_:
            emit_json({"backups": [r.__dict__ for r in results]})
        if failed:
            raise KumiaiError(f"backup failed: {'; '.join(failed)}")


@backup_app.command("list")
def backup_list(ctx: typer.Context, towns: TownsOpt = None, json_: JsonOpt = False) -> None:
    """Every backup of each town in every repo, oldest first."""
    target = current_target(ctx)
    topology = onboarded(target, towns or [])
    listing = backup.list_backups(target, topology, _towns(topology, towns))
    if json_:
        emit_json({"towns": {tid: [b.__dict__ for b in items] for tid, items in listing.items()}})
        return
    if not listing:
        out.print("no town is onboarded here")
    for tid, items in listing.items():
        out.print(f"[bold]{tid}[/]" + ("" if items else "  [red]no backups[/]"))
        for b in items:
            size = f"{b.size_bytes / 1e6:.1f} MB" if b.size_bytes is not None else "?"
            stored = f"{b.repo_size_bytes / 1e6:.1f} MB" if b.repo_size_bytes is not None else "?"
            out.print(f"  repo{b.repo}  {b.label:34} {b.type:4}  {b.started} .. {b.stopped}  {size} ({stored} stored)")


@backup_app.command("verify")
def backup_verify(
    ctx: typer.Context,
    towns: TownsOpt = None,
    grace: Annotated[
        int, typer.Option("--grace", min=0, help="Seconds a scheduled backup may take before it counts as missing.")
    ] = DEFAULT_GRACE_S,
    json_: JsonOpt = False,
) -> None:
    """Per town and repo: pgBackRest's verify, the newest backup's age against the schedule, WAL archive
    continuity (runbook dr-runbooks/backup-verify.yaml). Exits 1 naming each stale or broken town and repo."""
    target = current_target(ctx)
    topology = onboarded(target, towns or [])
    ids = _towns(topology, towns)
    register_actions()
    book = load_runbook(runbooks_dir() / "backup-verify.yaml")
    params: dict[str, Any] = {
        "target": target,
        "topology": topology,
        "towns": ids,
        "now": datetime.now(UTC),
        "grace_s": grace,
    }
    with Operation("backup verify", target={"towns": ids, "grace_s": grace}) as op:
        run_ctx = RunContext(params=params)
        run(book, run_ctx, op)
        verdicts: list[backup.RepoVerdict] = list(run_ctx.values.get("verdicts", {}).values())
        failed: list[str] = run_ctx.values.get("failures", [])
        op.target["verdict"] = "fail" if failed else "pass"
        op.target["failures"] = failed
        evidence = backup.write_verify_evidence(
            verdicts, run_id=op.run_id, checked_at=params["now"], verdict=op.target["verdict"]
        )
        op.target["evidence"] = str(evidence)
        if json_:
            emit_json(
                {"verdict": op.target["verdict"], "evidence": str(evidence), "repos": [v.as_dict() for v in verdicts]}
            )
        else:
            _print_verdicts(verdicts)
            out.print(f"evidence: {evidence}")
        if failed:
            raise KumiaiError(f"backup verify failed: {'; '.join(failed)}")


def _print_verdicts(verdicts: list[backup.RepoVerdict]) -> None:
    if not verdicts:
        out.print("no town is onboarded here")
    for v in verdicts:
        mark = {"ok": "ok", "stale": "[yellow]STALE[/]", "broken": "[red]BROKEN[/]"}[v.status]
        newest = f"{v.newest.label} (finished {v.newest.stopped})" if v.newest else "none"
        out.print(f"{v.town:16} repo{v.repo} at {v.site}: {mark}  newest {newest}, WAL archived to {v.archive_max}")
        for reason in [*v.broken, *([v.stale] if v.stale else [])]:
            out.print(f"    {escape(reason)}")
    ok = sum(1 for v in verdicts if v.status == "ok")
    out.print(f"{ok} of {len(verdicts)} repos ok")

"""`kumiai drill`: restore drills of towns, with evidence (the work is kumiai.dr.drill)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, err, out
from kumiai.datalayer.onboard import onboarded
from kumiai.dr.drill import drill_town, write_evidence, write_summary
from kumiai.dr.evidence import DrillEvidence, as_dict
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.ops import Operation


def register(app: typer.Typer) -> None:
    app.command("drill")(drill)


def _line(ev: DrillEvidence) -> str:
    rpo = "—" if ev.rpo_s is None else f"{ev.rpo_s:.2f} s"
    rto = "—" if ev.rto_s is None else f"{ev.rto_s:.2f} s"
    rate = ev.restore_mb_s
    restore = "" if rate is None else f", restore {ev.restore_s:.2f} s ({rate:.1f} MB/s)"
    colour = "green" if ev.verdict == "pass" else "red"
    return (
        f"[bold]{ev.town}[/] [{colour}]{ev.verdict.upper()}[/]  RPO {rpo} (target {ev.rpo_target_s} s), "
        f"RTO {rto} (target {ev.rto_target_s} s){restore}, repo{ev.repo}"
    )


def drill(
    ctx: typer.Context,
    towns: Annotated[list[str] | None, typer.Option("--town", help="Town id; repeat for several.")] = None,
    all_towns: Annotated[bool, typer.Option("--all", help="Every onboarded town, one after another.")] = False,
    repo: Annotated[
        int | None, typer.Option("--repo", help="Repo number to restore from (default: the one at the DR site).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Restore each town's newest backup into a scratch instance, compare it with the primary, write evidence.

    Production members are not touched; the scratch instance is removed afterwards. Exit 1 when a town fails.
    """
    t0 = time.monotonic()
    if bool(towns) == all_towns:
        raise InputError(Problem("--town/--all", "", "give --town ID (repeatable) or --all, not both and not neither"))
    target = current_target(ctx)
    ids = list(dict.fromkeys(towns or []))
    topology = onboarded(target, ids)
    ids = ids or list(topology.towns)
    if not ids:
        raise KumiaiError("no town is onboarded here: nothing to drill")
    if repo is not None:
        for tid in ids:
            numbers = [r.number for r in topology.towns[tid].repos]
            if repo not in numbers:
                allowed = ", ".join(str(n) for n in numbers)
                raise InputError(Problem("--repo", "", f"{tid} has repos {allowed}; got {repo}"))
    results: list[tuple[DrillEvidence, str]] = []
    with Operation("drill", target={"towns": ids, "repo": repo}) as op:
        for i, tid in enumerate(ids):
            if not json_:
                err.print(f"drilling {tid} ({i + 1} of {len(ids)}) ...")
            ev = drill_town(target, topology, tid, repo, op, t0=t0 if i == 0 else None)
            results.append((ev, str(write_evidence(ev))))
            op.target.setdefault("verdicts", {})[tid] = ev.verdict
        index = write_summary(target.inventory.consortium.name)
        failed = [ev.town for ev, _ in results if ev.verdict != "pass"]
        op.target["verdict"] = "fail" if failed else "pass"
        if json_:
            emit_json(
                {
                    "verdict": op.target["verdict"],
                    "summary": str(index),
                    "towns": [{**as_dict(ev), "evidence": where} for ev, where in results],
                }
            )
        else:
            for ev, where in results:
                out.print(_line(ev))
                for reason in ev.reasons:
                    out.print(f"  [red]{reason}[/]")
                out.print(f"  evidence: {where}")
            out.print(f"summary: {index}")
        if failed:
            raise KumiaiError(f"drill failed for {', '.join(failed)} (see the evidence above)")

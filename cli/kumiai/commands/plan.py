"""`kumiai plan`: render the desired tenant state of every town at every site, check it, write it out."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kumiai import paths
from kumiai.audit.approval import provenance
from kumiai.console import emit_json, err, out
from kumiai.diff.gitref import locate
from kumiai.inventory import load_inventory
from kumiai.planner import Plan, make_plan, plan_document, resource_set, select_jobs
from kumiai.render import PLATFORM
from kumiai.rendercache import default_dir
from kumiai.towncache import TownCache
from kumiai.validate import CHECKOV_SKIPS


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def _validation(plan: Plan, ran: bool) -> dict[str, Any]:
    if not ran:
        return {"ran": False}
    schema = [{"site": s.site, "town": s.town, "message": m} for s in plan.stacks for m in s.schema or []]
    checkov = [{"site": s.site, "town": s.town, **f} for s in plan.stacks for f in s.checkov or []]
    return {
        "ran": True,
        "kubernetes_validate": {"strict": True, "version": "1.30", "errors": schema},
        "checkov": {"framework": "kubernetes", "failed": checkov, "skipped": CHECKOV_SKIPS},
    }


def plan(
    ctx: typer.Context,
    town: Annotated[list[str] | None, typer.Option("--town", help="Only this town (repeatable).")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", help="Only this site (repeatable).")] = None,
    manifests_dir: Annotated[
        Path | None,
        typer.Option("--manifests", help="Write Kubernetes manifests to DIR/<site>/<town>/ (default: state dir)."),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the plan to FILE (JSON, secrets masked): inventory git tree, author, tool versions, every "
            "resource and their hash; what `kumiai approve` signs and `kumiai apply` applies.",
        ),
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate/--no-validate",
            help="Run kubernetes-validate --strict and checkov on what was rendered (slow for many towns).",
        ),
    ] = True,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Render processes (default: one per core).")
    ] = None,
    use_cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse stacks rendered before with identical inputs.")
    ] = True,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable summary on stdout.")] = False,
) -> None:
    """Render every town's tenant stack at every site under Pulumi mocks, check the isolation rules, validate the
    manifests. Changes nothing. Exit 1 if a rule or a validation fails, 2 on bad input."""
    # Town files parsed in an earlier plan are not parsed again; every town is still validated (see kumiai.towncache).
    root: Path = ctx.obj.inventory_path
    towns_cache = TownCache(
        default_dir().parent / f"towns-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}.json"
    )
    inv = load_inventory(root, town_loader=towns_cache)
    towns_cache.save()
    jobs = select_jobs(inv, town or [], site or [])
    # Read before rendering, so the plan records the tree as it was when the render began.
    origin = provenance(locate(root), town or [], site or []) if out_file is not None else None
    target = manifests_dir or paths.state_dir() / "plan" / inv.consortium.name / "manifests"
    result = make_plan(
        inv,
        jobs,
        cache_dir=default_dir(),
        manifests_dir=target,
        workers=workers,
        use_cache=use_cache,
        validate=validate,
        prune=not town and not site,
    )
    validation = _validation(result, validate)
    invalid = bool(validation.get("kubernetes_validate", {}).get("errors")) or bool(
        validation.get("checkov", {}).get("failed")
    )
    plan_hash = None
    if out_file is not None and origin is not None:
        resources = resource_set(result.cache, (s.key for s in result.stacks))
        document = plan_document(result, resources, validation, origin)
        plan_hash = document["plan_hash"]
        out_file.parent.mkdir(parents=True, exist_ok=True)
        # Readable by its owner only, like every plan kumiai keeps (the approver is handed the file, not the world).
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
        if document["inventory"]["dirty"]:
            err.print(
                f"[yellow]warning:[/] {root} has uncommitted changes: this plan can be read but not approved or applied"
            )
    ok = not result.violations and not invalid
    if json_:
        emit_json(
            {
                "ok": ok,
                "consortium": result.consortium,
                "towns": result.towns,
                "sites": result.sites,
                "stacks": len(result.stacks),
                "rendered": result.rendered,
                "resources": result.resources,
                "manifests": str(target),
                "out": str(out_file) if out_file else None,
                "plan_hash": plan_hash,
                "policy": {"ok": not result.violations, "violations": result.violations},
                "validation": validation,
                "seconds": result.seconds,
            }
        )
    else:
        _print(result, validation, target, out_file, plan_hash)
    if not ok:
        raise typer.Exit(1)


def _print(plan: Plan, validation: dict[str, Any], target: Path, out_file: Path | None, plan_hash: str | None) -> None:
    for site_id in plan.sites:
        stacks = [s for s in plan.stacks if s.site == site_id]
        table = Table(title=f"{plan.consortium} @ {site_id}: {len(stacks)} stacks")
        for col in ("town", "namespaces (<town>-…)", "resources", "policy"):
            table.add_column(col, justify="right" if col == "resources" else "left")
        shown = stacks if len(stacks) <= 60 else stacks[:30]
        for s in shown:
            policy = "[green]ok[/]" if not s.violations else f"[red]{len(s.violations)} violations[/]"
            name = "(platform)" if s.town == PLATFORM else s.town
            segments = ", ".join(ns.removeprefix(f"{s.town}-") for ns in s.namespaces)
            table.add_row(name, segments, str(sum(s.counts.values())), policy)
        if len(shown) < len(stacks):
            table.add_row(f"… {len(stacks) - len(shown)} more", "", "", "")
        out.print(table)
    out.print(
        f"{len(plan.stacks)} stacks, {plan.resources:,} resources ({plan.rendered} stacks rendered, "
        f"{len(plan.stacks) - plan.rendered} from cache) in {plan.seconds['total']:.1f} s; manifests in {target}"
    )
    if out_file:
        out.print(f"plan written to {out_file} ({plan_hash})")
    if plan.violations:
        out.print(f"[red]policy: {len(plan.violations)} violations[/]")
        for v in plan.violations[:50]:
            out.print(f"  {v['town']} @ {v['site']}: {v['resource']}: [{v['rule']}] {v['message']}", markup=False)
    else:
        out.print("[green]policy: every isolation rule holds[/]")
    if not validation.get("ran"):
        err.print("validation skipped (--no-validate)")
        return
    schema = validation["kubernetes_validate"]["errors"]
    failed = validation["checkov"]["failed"]
    if schema:
        out.print(f"[red]kubernetes-validate --strict: {len(schema)} errors[/]")
        for e in schema[:50]:
            out.print(f"  {e['town']} @ {e['site']}: {e['message']}", markup=False)
    else:
        out.print("[green]kubernetes-validate --strict (1.30): every manifest valid[/]")
    if failed:
        out.print(f"[red]checkov: {len(failed)} failed checks[/]")
        for f in failed[:50]:
            out.print(f"  {f['town']} @ {f['site']}: {f['check_id']} {f['check_name']} ({f['resource']})", markup=False)
    else:
        skipped = f", {len(CHECKOV_SKIPS)} skipped by design" if CHECKOV_SKIPS else ", none skipped"
        out.print(f"[green]checkov (kubernetes): no failed checks{skipped}[/]")

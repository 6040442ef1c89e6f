"""`kumiai lab up/status/down`: the embedded lab, both sites on this machine."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from kumiai.commands.common import JsonOpt
from kumiai.commands.data import print_endpoints, print_statuses
from kumiai.console import emit_json, err, out
from kumiai.datalayer.onboard import check_towns, onboard_towns
from kumiai.errors import InputError, Problem
from kumiai.inventory import Inventory
from kumiai.lab import lifecycle
from kumiai.lab.deps import ensure_lab_deps
from kumiai.lab.supervisor import is_running, program_states
from kumiai.lab.target import LabTarget
from kumiai.ops import Operation

lab_app = typer.Typer(help="The embedded lab: both sites on this machine (loopback only).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")


def _say(message: str) -> None:
    err.print(message)


def _split_ids(value: str | None, inv: Inventory) -> list[str]:
    if value is None:
        return list(inv.towns)
    ids = [t.strip() for t in value.split(",") if t.strip()]
    if not ids:
        raise InputError(Problem("--towns", "", "give town ids separated by commas, e.g. --towns nakai,oi"))
    return ids


@lab_app.command("up")
def lab_up(
    ctx: typer.Context,
    towns: Annotated[
        str | None, typer.Option("--towns", help="Comma-separated town ids to onboard (default: all of the inventory).")
    ] = None,
) -> None:
    """Install what is missing, start both sites and onboard the lab towns."""
    target = LabTarget(ctx.obj.inventory())
    ids = _split_ids(towns, target.inventory)
    check_towns(target.inventory, ids)
    t0 = time.perf_counter()
    with Operation("lab up", target={"towns": ids, "lab_dir": str(target.lab_dir)}) as op:
        with op.step("packages"):
            ensure_lab_deps(_say)
        _say(f"starting both sites in {target.lab_dir} ...")
        lifecycle.start_sites(target, op)
        _say(f"onboarding {', '.join(ids)} ...")
        statuses = onboard_towns(target, ids, op)
    print_statuses(statuses)
    print_endpoints(statuses, target.topology())
    out.print(f"lab up: {len(ids)} towns healthy in {time.perf_counter() - t0:.1f} s")


@lab_app.command("status")
def lab_status(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Each site's supervisor and the processes it runs."""
    topology = LabTarget(ctx.obj.inventory()).topology()
    sites: list[dict[str, Any]] = [
        {
            "site": s.id,
            "role": s.role,
            "supervisor": "running" if is_running(s) else "stopped",
            "programs": program_states(s),
        }
        for s in topology.sites
    ]
    towns = {t: town.slot for t, town in topology.towns.items()}
    if json_:
        emit_json({"lab_dir": str(topology.dir), "sites": sites, "towns": towns})
        return
    out.print(f"lab directory: {topology.dir}")
    for site in sites:
        out.print(f"{site['site']} ({site['role']}): supervisord {site['supervisor']}")
        for name, state in sorted(site["programs"].items()):
            out.print(f"  {name:40} {state}")
    out.print(f"onboarded towns: {', '.join(towns) or 'none'}")


@lab_app.command("down")
def lab_down(
    ctx: typer.Context,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete all lab state: data, backups, credentials.")
    ] = False,
) -> None:
    """Stop both sites (every process of the lab); --purge also deletes the lab directory."""
    target = LabTarget(ctx.obj.inventory())
    existed = target.lab_dir.exists()
    with Operation("lab down", target={"lab_dir": str(target.lab_dir), "purge": purge}) as op:
        stopped = lifecycle.stop_sites(target, op, purge=purge)
    purged = f"; {target.lab_dir} deleted" if purge and existed else ""
    out.print(f"stopped: {', '.join(stopped) or 'nothing was running'}{purged}")

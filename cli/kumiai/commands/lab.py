"""`kumiai lab up/status/down`, `kumiai onboard`, `kumiai status` and `kumiai psql`: the data layer's commands."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Annotated, Any

import typer

from kumiai import paths
from kumiai.console import emit_json, err, out
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory
from kumiai.lab import lifecycle
from kumiai.lab.deps import ensure_lab_deps
from kumiai.lab.layout import MEMBERS_PER_SITE, PG_PORT, LabLayout, build_layout, lowest_free_slot, member_address
from kumiai.datalayer.secrets import load_town_secrets
from kumiai.lab.slots import read_slots
from kumiai.datalayer.status import TownStatus, fetch_cluster_view, parse_cluster
from kumiai.lab.supervisor import is_running, program_states
from kumiai.ops import Operation

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

lab_app = typer.Typer(help="The embedded lab: both sites on this machine (loopback only).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(lab_app, name="lab")
    app.command("onboard")(onboard)
    app.command("status")(status)
    app.command("psql", context_settings={"ignore_unknown_options": True})(psql)


def _say(message: str) -> None:
    err.print(message)


def _layout(inv: Inventory) -> LabLayout:
    lab_dir = paths.lab_dir()
    return build_layout(lab_dir, inv, read_slots(lab_dir))


def _split_ids(value: str | None, inv: Inventory) -> list[str]:
    if value is None:
        return list(inv.towns)
    ids = [t.strip() for t in value.split(",") if t.strip()]
    if not ids:
        raise InputError(Problem("--towns", "", "give town ids separated by commas, e.g. --towns nakai,oi"))
    return ids


def _print_statuses(statuses: list[TownStatus]) -> None:
    for st in statuses:
        out.print(f"[bold]{st.town}[/]  {'healthy' if st.healthy else '[red]NOT healthy[/]'}")
        for cluster in (st.primary, st.dr):
            if not cluster.reachable:
                out.print(f"  {cluster.site} {cluster.kind}: [red]unreachable[/]")
                continue
            health = "healthy" if cluster.healthy else "[red]NOT healthy[/]"
            out.print(f"  {cluster.site} {cluster.kind} cluster, {health}, leader {cluster.leader or '-'}")
            for m in cluster.members:
                lag = f"  lag {m.lag_bytes} B" if m.lag_bytes is not None else ""
                out.print(f"    {m.name:28} {m.host:12} {m.role:15} {m.state}{lag}")
        lag = f"{st.dr_lag.bytes} B, {st.dr_lag.seconds:.3f} s" if st.dr_lag else "unknown"
        out.print(f"  replication lag to {st.dr.site}: {lag}")
        for n, b in st.backups.items():
            text = f"{b.label} ({b.type}, finished {b.stopped})" if b else "[red]none[/]"
            out.print(f"  last backup repo{n}: {text}")


def _print_endpoints(statuses: list[TownStatus], layout: LabLayout) -> None:
    for st in statuses:
        town = layout.towns[st.town]
        for cluster, what in ((st.primary, "read-write"), (st.dr, "read-only standby")):
            leader = next((m for m in town.members if m.name == cluster.leader), None)
            where = f"{leader.address}:{PG_PORT}" if leader else "no leader"
            out.print(f"  {st.town} @ {cluster.site}: {where} ({what}), database {town.database}, user {town.app_user}")
    out.print("  connect with: kumiai psql TOWN [--site SITE]  (credentials stay in the vault)")


@lab_app.command("up")
def lab_up(
    ctx: typer.Context,
    towns: Annotated[
        str | None, typer.Option("--towns", help="Comma-separated town ids to onboard (default: all of the inventory).")
    ] = None,
) -> None:
    """Install what is missing, start both sites and onboard the lab towns."""
    inv = ctx.obj.inventory()
    ids = _split_ids(towns, inv)
    lifecycle.check_towns(inv, ids)
    lab_dir = paths.lab_dir()
    t0 = time.perf_counter()
    with Operation("lab up", target={"towns": ids, "lab_dir": str(lab_dir)}) as op:
        with op.step("packages"):
            ensure_lab_deps(_say)
        _say(f"starting both sites in {lab_dir} ...")
        lifecycle.start_sites(inv, lab_dir, op)
        _say(f"onboarding {', '.join(ids)} ...")
        statuses = lifecycle.onboard_towns(inv, lab_dir, ids, op)
    layout = _layout(inv)
    _print_statuses(statuses)
    _print_endpoints(statuses, layout)
    out.print(f"lab up: {len(ids)} towns healthy in {time.perf_counter() - t0:.1f} s")


@lab_app.command("status")
def lab_status(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Each site's supervisor and the processes it runs."""
    inv = ctx.obj.inventory()
    layout = _layout(inv)
    sites: list[dict[str, Any]] = [
        {
            "site": s.id,
            "role": s.role,
            "supervisor": "running" if is_running(s) else "stopped",
            "programs": program_states(s),
        }
        for s in layout.sites
    ]
    towns = {t: town.slot for t, town in layout.towns.items()}
    if json_:
        emit_json({"lab_dir": str(layout.dir), "sites": sites, "towns": towns})
        return
    out.print(f"lab directory: {layout.dir}")
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
    inv = ctx.obj.inventory()
    lab_dir = paths.lab_dir()
    existed = lab_dir.exists()
    with Operation("lab down", target={"lab_dir": str(lab_dir), "purge": purge}) as op:
        stopped = lifecycle.stop_sites(inv, lab_dir, op, purge=purge)
    purged = f"; {lab_dir} deleted" if purge and existed else ""
    out.print(f"stopped: {', '.join(stopped) or 'nothing was running'}{purged}")


def onboard(
    ctx: typer.Context,
    town_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Town id(s) (towns/<id>.yaml); several are onboarded together.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show the plan; change nothing.")] = False,
) -> None:
    """Onboard a town at both sites: cluster, DR standby, backups; then print its endpoints."""
    inv = ctx.obj.inventory()
    ids = list(dict.fromkeys(town_ids))
    lifecycle.check_towns(inv, ids)
    lab_dir = paths.lab_dir()
    if dry_run:
        lifecycle.check_capacity(inv, lab_dir, ids)
        slots = read_slots(lab_dir)
        for tid in ids:
            slots.setdefault(tid, lowest_free_slot(set(slots.values())))
            _print_plan(inv, tid, slots[tid])
        return
    t0 = time.perf_counter()
    with Operation("onboard", target={"towns": ids}) as op:
        statuses = lifecycle.onboard_towns(inv, lab_dir, ids, op)
    layout = _layout(inv)
    _print_statuses(statuses)
    _print_endpoints(statuses, layout)
    changed = op.target.get("changed")
    out.print(f"onboarded {', '.join(ids)} in {time.perf_counter() - t0:.1f} s (playbook changed={changed})")


def _print_plan(inv: Inventory, town_id: str, slot: int) -> None:
    primary, dr = inv.placement(inv.town(town_id))
    out.print(f"dry run: onboarding {town_id} would (nothing is changed now):")
    out.print(f"  - generate its credentials and backup key into the vault (if none yet); slot {slot}")
    for site, kind in ((primary, "cluster, synchronous mode"), (dr, "standby cluster streaming from " + primary.id)):
        addrs = ", ".join(str(member_address(site.db_network, slot, i)) for i in range(1, MEMBERS_PER_SITE + 1))
        out.print(f"  - {site.id}: {MEMBERS_PER_SITE}-member Patroni {kind} on {addrs} (port {PG_PORT})")
    out.print(
        f"  - pgBackRest stanza {town_id}: repo1 at {primary.id}, repo2 at {dr.id}, aes-256-cbc; full backup in each"
    )
    out.print("  - run playbooks/onboard_town.yml for both sites, then check DR streaming and both backups")


def status(
    ctx: typer.Context,
    town: Annotated[str | None, typer.Option("--town", help="Only this town.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Per town and site: leader, members, DR replication lag (bytes, seconds), last backup per repo."""
    inv = ctx.obj.inventory()
    if town is not None:
        lifecycle.check_towns(inv, [town])
    layout = _layout(inv)
    ids = [town] if town else list(layout.towns)
    missing = [t for t in ids if t not in layout.towns]
    if missing:
        raise KumiaiError(f"not onboarded in this lab: {', '.join(missing)} (kumiai onboard ID)")
    statuses = [lifecycle.town_status(layout, t) for t in ids]
    if json_:
        emit_json({"lab_dir": str(layout.dir), "towns": [s.as_dict() for s in statuses]})
        return
    if not statuses:
        out.print("no town is onboarded in this lab")
        return
    _print_statuses(statuses)


def psql(
    ctx: typer.Context,
    town_id: Annotated[str, typer.Argument(metavar="ID", help="Town id.")],
    psql_args: Annotated[list[str] | None, typer.Argument(metavar="[-- PSQL-ARGS...]", help="Passed to psql.")] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site (default: the town's primary site).")] = None,
) -> None:
    """psql to the town's current primary (or the leader at --site) as the town's application role."""
    inv = ctx.obj.inventory()
    lifecycle.check_towns(inv, [town_id])
    primary, _dr = inv.placement(inv.town(town_id))
    site_id = site or primary.id
    if site_id not in [s.id for s in inv.consortium.sites]:
        known = ", ".join(s.id for s in inv.consortium.sites)
        raise InputError(Problem("--site", "", f"unknown site {site_id!r}; sites are: {known}"))
    layout = _layout(inv)
    if town_id not in layout.towns:
        raise KumiaiError(f"{town_id} is not onboarded in this lab (kumiai onboard {town_id})")
    town = layout.towns[town_id]
    members = town.at(site_id)
    cluster = parse_cluster(site_id, "", fetch_cluster_view(members))
    leader = next((m for m in members if m.name == cluster.leader), None)
    if leader is None:
        raise KumiaiError(f"{town_id} has no leader at {site_id} right now (kumiai status --town {town_id})")
    secrets = load_town_secrets(layout.secrets_file(town_id))
    # The password reaches psql through its environment only: never argv, never the terminal.
    env: dict[str, Any] = {**os.environ, "PGPASSWORD": secrets.app_password, "PGCONNECT_TIMEOUT": "5"}
    cmd = ["psql", "-h", leader.address, "-p", str(PG_PORT), "-U", town.app_user, "-d", town.database]
    try:
        code = subprocess.run([*cmd, *(psql_args or [])], env=env, check=False).returncode
    except FileNotFoundError:
        raise KumiaiError("psql is not installed (apt-get install postgresql-client-15)") from None
    raise typer.Exit(code)

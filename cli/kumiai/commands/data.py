"""`kumiai onboard`, `kumiai status` and `kumiai psql`: the data layer's commands, for any target."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, out
from kumiai.datalayer.hostvars import repo_number
from kumiai.datalayer.onboard import check_towns, onboard_towns, onboarded, town_status
from kumiai.datalayer.patroni import cluster_view
from kumiai.datalayer.secrets import load_town_secrets
from kumiai.datalayer.status import TownStatus, parse_cluster
from kumiai.datalayer.topology import MEMBERS_PER_SITE, PG_PORT, Topology
from kumiai.dr.objectives import DEFAULT_GRACE_S, status_alerts
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.ops import Operation

# psql options that would send the town's password to another server, as another role, or into another database.
CONNECTION_OPTIONS = ("-h", "--host", "-p", "--port", "-U", "--username", "-d", "--dbname")


def _connection_option(arg: str) -> bool:
    """--host=x, -h, -hx (a short option with its value attached) and the like."""
    return arg.split("=", 1)[0] in CONNECTION_OPTIONS or (arg[:2] in CONNECTION_OPTIONS and not arg.startswith("--"))


def register(app: typer.Typer) -> None:
    app.command("onboard")(onboard)
    app.command("status")(status)
    app.command("psql", context_settings={"ignore_unknown_options": True})(psql)


def print_statuses(statuses: list[TownStatus]) -> None:
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
        if st.dr_slot is not None:
            slot = st.dr_slot
            use = ", active" if slot.active else ", inactive"
            state = f"{slot.wal_status or '-'}{use}" if slot.exists else "missing"
            out.print(f"  DR slot {slot.name}: {state}")
        if st.dr_reclone:
            out.print(f"  [red]DR standby needs a re-clone:[/] {escape(st.dr_reclone)} (kumiai onboard {st.town})")
        for n, b in st.backups.items():
            text = f"{b.label} ({b.type}, finished {b.stopped})" if b else "[red]none[/]"
            out.print(f"  last backup repo{n}: {text}")
        for alert in st.alerts:
            out.print(f"  [red]target missed:[/] {escape(alert)}")


def print_endpoints(statuses: list[TownStatus], topology: Topology) -> None:
    for st in statuses:
        town = topology.towns[st.town]
        for cluster, what in ((st.primary, "read-write"), (st.dr, "read-only standby")):
            leader = next((m for m in town.members if m.name == cluster.leader), None)
            where = f"{leader.address}:{PG_PORT}" if leader else "no leader"
            out.print(f"  {st.town} @ {cluster.site}: {where} ({what}), database {town.database}, user {town.app_user}")
    out.print("  connect with: kumiai psql TOWN [--site SITE]  (credentials stay in the vault)")


def onboard(
    ctx: typer.Context,
    town_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Town id(s) (towns/<id>.yaml); several are onboarded together.")
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and show the plan; change nothing.")] = False,
) -> None:
    """Onboard a town at both sites: cluster, DR standby, backups; then print its endpoints. Re-run on an onboarded
    town it converges it, and re-clones its DR standby when the DR slot was invalidated (see `kumiai status`)."""
    target = current_target(ctx)
    ids = list(dict.fromkeys(town_ids))
    check_towns(target.inventory, ids)
    if dry_run:
        target.check_capacity(ids)
        _print_dry_run(ctx, ids)
        return
    t0 = time.perf_counter()
    with Operation("onboard", target={"towns": ids}) as op:
        statuses = onboard_towns(target, ids, op)
    print_statuses(statuses)
    print_endpoints(statuses, target.topology())
    changed = op.target.get("changed")
    out.print(f"onboarded {', '.join(ids)} in {time.perf_counter() - t0:.1f} s (playbook changed={changed})")


def _print_dry_run(ctx: typer.Context, town_ids: list[str]) -> None:
    inv = ctx.obj.inventory()
    for tid in town_ids:
        primary, dr = inv.placement(inv.town(tid))
        out.print(f"dry run: onboarding {tid} would (nothing is changed now):")
        out.print("  - generate its credentials and backup key into the vault (if none yet) and give it addresses")
        for site, kind in (
            (primary, "cluster, synchronous mode"),
            (dr, f"standby cluster streaming from {primary.id}"),
        ):
            out.print(f"  - {site.id}: {MEMBERS_PER_SITE}-member Patroni {kind} (port {PG_PORT})")
        repos = ", ".join(f"repo{repo_number(inv, s.id)} at {s.id}" for s in inv.consortium.sites if s in (primary, dr))
        out.print(f"  - pgBackRest stanza {tid}: {repos}, aes-256-cbc; full backup in each")
        out.print("  - run playbooks/onboard_town.yml for both sites, then check DR streaming and both backups")


def status(
    ctx: typer.Context,
    town: Annotated[str | None, typer.Option("--town", help="Only this town.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Per town and site: leader, members, DR replication lag (bytes, seconds), the DR slot, last backup per repo;
    and each missed target: cross-site lag over the town's rpo_seconds, a backup older than its schedule allows, no
    healthy leader, a DR standby that needs a re-clone (its slot invalidated: `kumiai onboard ID` re-clones it)."""
    target = current_target(ctx)
    topology = onboarded(target, [town] if town else [])
    ids = [town] if town else list(topology.towns)
    statuses = [town_status(target, topology, t) for t in ids]
    now = datetime.now(UTC)
    for st in statuses:
        st.alerts = status_alerts(st, target.inventory.towns[st.town].protection, now, DEFAULT_GRACE_S)
    if json_:
        emit_json({"target": target.name, "dir": str(topology.dir), "towns": [s.as_dict() for s in statuses]})
        return
    if not statuses:
        out.print("no town is onboarded here")
        return
    print_statuses(statuses)


def psql(
    ctx: typer.Context,
    town_id: Annotated[str, typer.Argument(metavar="ID", help="Town id.")],
    psql_args: Annotated[list[str] | None, typer.Argument(metavar="[-- PSQL-ARGS...]", help="Passed to psql.")] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site (default: the town's primary site).")] = None,
) -> None:
    """psql to the town's current primary (or the leader at --site) as the town's application role."""
    args = psql_args or []
    refused = [a for a in args if _connection_option(a)]
    target = current_target(ctx)
    inv = target.inventory
    if refused:
        raise InputError(
            Problem(
                "PSQL-ARGS",
                refused[0],
                "kumiai psql connects to the town's own leader as its own role; host, port, user and database "
                "options are not allowed (they could send the town's password elsewhere)",
            )
        )
    check_towns(inv, [town_id])
    primary, _dr = inv.placement(inv.town(town_id))
    site_id = site or primary.id
    if site_id not in [s.id for s in inv.consortium.sites]:
        known = ", ".join(s.id for s in inv.consortium.sites)
        raise InputError(Problem("--site", "", f"unknown site {site_id!r}; sites are: {known}"))
    topology = onboarded(target, [town_id])
    town = topology.towns[town_id]
    members = town.at(site_id)
    cluster = parse_cluster(site_id, "", cluster_view(members))
    leader = next((m for m in members if m.name == cluster.leader), None)
    if leader is None:
        raise KumiaiError(f"{town_id} has no leader at {site_id} right now (kumiai status --town {town_id})")
    secrets = load_town_secrets(topology.secrets_file(town_id))
    # The password reaches psql through its environment only: never argv, never the terminal.
    env: dict[str, Any] = {**os.environ, "PGPASSWORD": secrets.app_password, "PGCONNECT_TIMEOUT": "5"}
    if leader.tls:  # the members accept the application role over TLS only; verify the member's certificate
        env.update({"PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(leader.tls.ca_file)})
    cmd = ["psql", "-h", leader.address, "-p", str(PG_PORT), "-U", town.app_user, "-d", town.database]
    # A session is recorded (who, town, site), never what it runs.
    with Operation("psql", target={"town": town_id, "site": site_id}):
        try:
            code = subprocess.run([*cmd, *args], env=env, check=False).returncode
        except FileNotFoundError:
            raise KumiaiError("psql is not installed (apt-get install postgresql-client-15)") from None
    raise typer.Exit(code)

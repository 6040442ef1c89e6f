"""`kumiai town ...`: list, show, validate and scaffold town specs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rich.table import Table

from kumiai import paths
from kumiai.catalogue import SEGMENT_LABELS, STANDARD_SYSTEMS
from kumiai.console import emit_json, out
from kumiai.errors import InputError, Problem
from kumiai.inventory import TOWNS_DIR, load_consortium, load_inventory, load_town
from kumiai.models import TOWN_ID_PATTERN, Town
from kumiai.ops import Operation

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

town_app = typer.Typer(help="Town specs: list, show, validate, new.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(town_app, name="town")


def town_summary(town: Town) -> dict[str, Any]:
    return {
        "id": town.id,
        "name": town.name,
        "code": town.code,
        "population": town.population,
        "tier": town.tier.value,
        "isolation": town.isolation.value,
        "segments": [s.value for s in town.segments],
        "systems": len(town.systems),
    }


@town_app.command("list")
def list_towns(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """List the towns of the inventory."""
    inv = ctx.obj.inventory()
    rows = [town_summary(t) for t in inv.towns.values()]
    if json_:
        emit_json({"consortium": inv.consortium.name, "towns": rows})
        return
    table = Table(title=f"{inv.consortium.name}: {len(rows)} towns")
    for col in ("id", "name", "code", "population", "tier", "isolation", "segments", "systems"):
        table.add_column(col, justify="right" if col in ("population", "systems") else "left")
    for r in rows:
        table.add_row(
            r["id"],
            r["name"],
            r["code"],
            f"{r['population']:,}",
            r["tier"],
            r["isolation"],
            ", ".join(r["segments"]),
            str(r["systems"]),
        )
    out.print(table)


@town_app.command("show")
def show_town(
    ctx: typer.Context, town_id: Annotated[str, typer.Argument(metavar="ID")], json_: JsonOpt = False
) -> None:
    """Show one town's full spec, defaults applied, and where it runs."""
    inv = ctx.obj.inventory()
    town = inv.town(town_id)
    primary, dr = inv.placement(town)
    data = {**town.model_dump(mode="json"), "placement": {"primary": primary.id, "dr": dr.id}}
    if json_:
        emit_json(data)
        return
    out.print(f"[bold]{town.name}[/] ({town.id}, 団体コード {town.code}, population {town.population:,})")
    out.print(f"tier {town.tier.value}, isolation {town.isolation.value}; primary at {primary.id}, standby at {dr.id}")
    for seg in town.segments:
        names = ", ".join(s.name for s in town.systems if s.segment is seg)
        out.print(f"  {seg.value} ({SEGMENT_LABELS[seg]}): {names}")
    p = town.protection
    out.print(
        f"protection: backups '{p.backup_schedule}', {p.retention_full} full kept, RPO {p.rpo_seconds} s, "
        f"RTO {p.rto_seconds} s, immutable {p.immutable_days} days"
    )


@town_app.command("validate")
def validate(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Check every file of the inventory; report all problems at once (exit 2 if any)."""
    try:
        inv = ctx.obj.inventory()
    except InputError as exc:
        if json_:
            emit_json({"ok": False, "problems": [p.__dict__ for p in exc.problems]})
            raise typer.Exit(2) from None
        raise
    if json_:
        emit_json(
            {
                "ok": True,
                "consortium": inv.consortium.name,
                "towns": len(inv.towns),
                "sites": [s.id for s in inv.consortium.sites],
            }
        )
        return
    out.print(
        f"[green]ok[/]: {inv.root} — consortium {inv.consortium.name}, {len(inv.towns)} towns, "
        f"sites {', '.join(f'{s.id} ({s.role.value})' for s in inv.consortium.sites)}"
    )


def render_town_yaml(town_id: str, name: str, code: str, population: int | None, tier: str | None) -> str:
    env = Environment(
        loader=FileSystemLoader(paths.templates_dir()),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # Values go in as double-quoted YAML scalars, so no input can add fields to the spec.
    env.filters["q"] = lambda value: json.dumps(str(value), ensure_ascii=False)
    return env.get_template("town.yaml.j2").render(
        id=town_id, name=name, code=code, population=population, tier=tier, systems=STANDARD_SYSTEMS
    )


@town_app.command("new")
def new_town(
    ctx: typer.Context,
    town_id: Annotated[str, typer.Argument(metavar="ID", help=f"Town id, {TOWN_ID_PATTERN}.")],
    name: Annotated[str, typer.Option("--name", help="団体名, e.g. 清川村.")],
    code: Annotated[str, typer.Option("--code", help="6-digit 全国地方公共団体コード with its check digit.")],
    population: Annotated[int | None, typer.Option("--population", help="Residents (approximate).")] = None,
    tier: Annotated[str | None, typer.Option("--tier", help="s, m or l; default from consortium.yaml.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Write towns/ID.yaml from the template, checked before writing; never overwrites."""
    root: Path = ctx.obj.inventory_path
    path = root / TOWNS_DIR / f"{town_id}.yaml"
    exists = InputError(Problem(str(path), "id", f"town {town_id!r} exists already; kumiai never overwrites a spec"))
    consortium, problems = load_consortium(root)
    if consortium is None:
        raise InputError(problems)
    if path.exists() or path.with_suffix(".yml").exists():
        raise exists
    text = render_town_yaml(town_id, name, code, population, tier)
    data = yaml.safe_load(text)
    town, problems = load_town(path, consortium, data=data)
    if town is None:
        raise InputError(problems)
    others = load_inventory(root).towns  # the rest must stay valid and the code must stay unique
    clash = [t.id for t in others.values() if t.code == town.code]
    if clash:
        raise InputError(Problem(str(path), "code", f"code {town.code} is already used by town {clash[0]}"))
    with Operation("town new", target={"town": town.id, "file": str(path)}, inventory=root) as op, op.step("write"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".yaml.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, path)  # atomic, and fails if another run wrote the same town meanwhile
        except FileExistsError:
            raise exists from None
        finally:
            tmp.unlink()
    if json_:
        emit_json({"written": str(path), "town": town_summary(town)})
        return
    out.print(f"[green]wrote[/] {path}: {town.name} ({town.code}), {len(town.systems)} systems.")
    if population is None:
        out.print("population was not given: the spec holds an estimate; put the real figure in.")
    out.print(f"Next: [bold]kumiai plan --town {town.id}[/], then [bold]kumiai onboard {town.id}[/].")

"""`kumiai certs rotate`: reissue every certificate kumiai issued to the towns' members and to itself."""

from __future__ import annotations

import typer

from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, out
from kumiai.datalayer.onboard import rotate_certificates
from kumiai.ops import Operation

certs = typer.Typer(help="The certificates kumiai issues from the consortium CA.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(certs, name="certs")


@certs.command("rotate")
def rotate(ctx: typer.Context, json_: JsonOpt = False) -> None:
    """Reissue every certificate of the members and of kumiai itself; reload, never restart.

    The members' server and client certificates and the controller's are reissued by the consortium CA (kept),
    installed, and Patroni and PostgreSQL reloaded; then every town must be healthy again."""
    target = current_target(ctx)
    with Operation("certs rotate", target={"target": target.name}) as op:
        serials = rotate_certificates(target, op)
    if json_:
        emit_json({"certificates": serials})
        return
    changed = sum(1 for s in serials.values() if s["before"] != s["after"])
    out.print(f"[green]rotated[/] {changed} of {len(serials)} certificates; every town healthy.")

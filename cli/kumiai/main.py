"""The `kumiai` command line."""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from kumiai import __version__
from kumiai.commands import (
    approve,
    audit,
    backup,
    certs,
    data,
    diff,
    drill,
    failover,
    lab,
    offboard,
    plan,
    recover,
    runbook,
    secrets,
    town,
)
from kumiai.console import err
from kumiai.errors import InputError, KumiaiError
from kumiai.inventory import Inventory, load_inventory

DEFAULT_INVENTORY = Path("inventories/lab")

app = typer.Typer(
    name="kumiai",
    help="kumiai (組合): describe each town once; provision, replicate, back up, drill and audit.",
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class AppState:
    """What every command gets through ctx.obj."""

    inventory_path: Path

    def inventory(self) -> Inventory:
        return load_inventory(self.inventory_path)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kumiai {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    inventory: Annotated[
        Path,
        typer.Option(
            "--inventory",
            "-i",
            envvar="KUMIAI_INVENTORY",
            help="Inventory directory: consortium.yaml and towns/<id>.yaml.",
        ),
    ] = DEFAULT_INVENTORY,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = AppState(inventory_path=inventory)


for module in (
    town,
    audit,
    plan,
    diff,
    approve,
    lab,
    data,
    backup,
    recover,
    drill,
    failover,
    offboard,
    runbook,
    secrets,
    certs,
):
    module.register(app)


def run() -> None:
    """Console entry point: no traceback ever reaches the user."""
    try:
        app()
    except InputError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        err.print("Nothing was changed.")
        sys.exit(exc.exit_code)
    except KumiaiError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to continue from where it stopped")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("KUMIAI_DEBUG"):
            traceback.print_exc()
        err.print(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(str(exc))}")
        err.print("This is a bug in kumiai. Set KUMIAI_DEBUG=1 to see the traceback.")
        sys.exit(1)


if __name__ == "__main__":
    run()

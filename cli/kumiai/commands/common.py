"""What several command modules share: options, and the data-layer target of the current inventory."""

from __future__ import annotations

from typing import Annotated

import typer

from kumiai.datalayer.target import Target
from kumiai.targets import target_for

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def current_target(ctx: typer.Context) -> Target:
    return target_for(ctx.obj.inventory())

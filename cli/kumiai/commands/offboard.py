"""`kumiai offboard`: a town leaves the consortium; its clusters go and its backup key is destroyed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, out
from kumiai.dr.offboard import (
    describe,
    git_commands,
    inventory_file,
    last_expiry,
    offboard_town,
    offboarded_before,
    plan,
)
from kumiai.errors import InputError, Problem
from kumiai.ops import Operation


def register(app: typer.Typer) -> None:
    app.command("offboard")(offboard)


def offboard(
    ctx: typer.Context,
    town_id: Annotated[str, typer.Argument(metavar="ID", help="Town id (towns/<id>.yaml).")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Do it: without --yes, only show what would be done (exit 2).")
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """A town leaves: its clusters removed at both sites, its backup key destroyed, its file out of the inventory.

    Stops and removes its programs, directories, scheduled backups and etcd keys at both sites, deletes its posix
    repo contents, disables its S3 user (locked objects age out), destroys its backup cipher key wherever kumiai
    holds it (crypto-shredding: its backups become unreadable) and prints the git commands that record the
    inventory change. Evidence under the evidence directory; the audit trail records it. Re-running is a no-op."""
    target = current_target(ctx)
    inv = target.inventory
    if town_id not in inv.towns:
        before = offboarded_before(town_id)
        if before is not None:
            out.print(f"{town_id} is offboarded already; nothing to do (evidence: {before})")
            return
        inv.town(town_id)  # the input error naming the inventory's towns and the known ids
    removal = plan(target, town_id)
    town_file = inventory_file(inv, town_id)
    if not yes:
        out.print(f"offboarding {town_id} would (nothing is changed now):")
        for line in describe(removal, town_file):
            out.print(f"  - {escape(line)}")
        raise InputError(
            Problem(
                "--yes",
                "",
                f"offboarding destroys {town_id}'s clusters and its backup key for good: run `kumiai offboard "
                f"{town_id} --yes` to do it",
            )
        )
    with Operation("offboard", target={"town": town_id}) as op:
        ev, where = offboard_town(target, town_id, op)
    commands = git_commands(inv.root, town_file)
    if json_:
        emit_json({**ev.model_dump(), "evidence": str(where), "commit_commands": commands})
        return
    for site in ev.sites:
        out.print(
            f"{site.site}: {len(site.programs)} programs, {len(site.job_files)} backup jobs, {site.dcs_keys_deleted} "
            f"etcd keys, {len(site.directories)} directories, {len(site.posix_repo)} posix repo paths removed"
        )
    for b in ev.buckets:
        state = f"{b.versions} versions ({b.locked_versions} locked) until {b.last_retain_until or '-'}"
        out.print(f"{b.site}: bucket {b.bucket}: {state if b.exists else 'no bucket'}; S3 user {ev.s3_user} disabled")
    out.print(
        f"cipher key destroyed: {len(ev.key_files_destroyed)} files; last locked object expires: "
        f"{last_expiry(ev) or 'none locked'}"
    )
    out.print(f"[yellow]escrow:[/] {escape(ev.escrow_note)}")
    out.print(f"evidence: {where}")
    out.print(f"{town_file} removed; record it in git:\n  " + "\n  ".join(escape(c) for c in commands))

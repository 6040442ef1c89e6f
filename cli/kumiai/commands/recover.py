"""`kumiai backup recover`: a town's S3 repo back to how it stood at a moment, from its locked versions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from kumiai.commands.backup import backup_app
from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, out
from kumiai.datalayer.onboard import onboarded
from kumiai.errors import InputError, Problem
from kumiai.objectstore.provision import recover_repo
from kumiai.ops import Operation


def register(app: typer.Typer) -> None:
    """A subcommand of `kumiai backup` (kumiai.commands.backup), kept apart from the pgBackRest verbs there."""
    backup_app.command("recover")(backup_recover)


def parse_moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InputError(
            Problem("--as-of", value, "an ISO 8601 time with its offset, e.g. 2026-11-27T09:30:00+09:00 or ...Z")
        )
    return moment


def backup_recover(
    ctx: typer.Context,
    town: Annotated[str, typer.Option("--town", help="The town whose repo is recovered.")],
    repo: Annotated[int, typer.Option("--repo", help="Repo number (numbered by site); an S3 repo.")],
    as_of: Annotated[
        str,
        typer.Option("--as-of", help="The moment to go back to: ISO 8601 with offset, e.g. 2026-11-27T09:30+09:00"),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would change.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Bring a town's S3 repo back to how it stood at --as-of, from its bucket's locked versions.

    For after deletions or overwrites (e.g. by someone holding the town's keys); restore or drill from it as usual
    afterwards."""
    moment = parse_moment(as_of)
    target = current_target(ctx)
    topology = onboarded(target, [town])
    facts = {"town": town, "repo": repo, "as_of": moment.isoformat(), "dry_run": dry_run}
    with Operation("backup recover", target=facts) as op:
        with op.step(f"{town} repo{repo}: back to {moment.isoformat()}") as step:
            recovery = recover_repo(target, topology, town, repo, moment, dry_run=dry_run)
            step.detail = ", ".join(f"{k} {v}" for k, v in recovery.counts().items())
        op.target["counts"] = recovery.counts()
    if json_:
        emit_json({**facts, "bucket": recovery.bucket, "counts": recovery.counts()})
        return
    c = recovery.counts()
    verb = "would be" if dry_run else "were"
    out.print(
        f"{town} repo{repo} ({recovery.bucket}) as of {moment.isoformat()}: {c['restore']} objects {verb} restored "
        f"from older versions, {c['unmark']} undeleted, {c['hide']} hidden (written later); {c['unchanged']} unchanged"
    )

"""`kumiai secrets ...`: the towns' keys and credentials survive losing the controller (kumiai.datalayer.escrow)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from kumiai import paths
from kumiai.audit.trail import Trail
from kumiai.commands.common import JsonOpt, current_target
from kumiai.console import emit_json, out
from kumiai.datalayer import escrow
from kumiai.datalayer.secrets import write_private
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.objectstore.evidence import credentials_file
from kumiai.ops import Operation

secrets_app = typer.Typer(
    help="The towns' vault keys and credentials: escrow them to an offline key, recover them on a new controller.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")


@secrets_app.command("escrow")
def escrow_cmd(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option("--to", metavar="PUBLIC-KEY", help="The offline recipient: an age public key (age1…) or a file."),
    ],
    out_file: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Where to write the escrow (default: kumiai-escrow-…json here)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Seal every onboarded town's vault key and credentials to an offline age recipient.

    The file holds each town's vault key, database passwords, backup cipher key and S3 keys, readable only with
    the recipient's identity; in clear it names the consortium, the towns, when and the recipient. Keep it at the
    DR site and the identity offline; `kumiai secrets recover` restores them on a new controller."""
    recipient = escrow.parse_recipient(to)
    target = current_target(ctx)
    topology = target.topology()
    consortium = target.inventory.consortium.name
    towns = sorted(t for t in topology.towns if topology.secrets_file(t).exists())
    if not towns:
        raise KumiaiError("no onboarded town has secrets here: nothing to escrow")
    now = datetime.now(UTC)
    path = (out_file or Path(f"kumiai-escrow-{consortium}-{now.strftime('%Y%m%dT%H%M%SZ')}.json")).absolute()
    if path.exists():
        raise InputError(Problem(str(path), "--out", "exists already: an escrow is never overwritten; name another"))
    header = escrow.EscrowHeader(
        consortium=consortium, towns=tuple(towns), created=now.isoformat(timespec="seconds"), recipient=str(recipient)
    )
    facts = {"towns": towns, "recipient": header.recipient, "file": str(path)}
    with Operation("secrets escrow", target=facts) as op:
        with op.step(f"seal {len(towns)} towns' keys and credentials") as step:
            audit_key = escrow.read_audit_key(Trail.default().key)
            evidence_keys = escrow.read_private_file(credentials_file(paths.state_dir()))
            data = escrow.seal(header, escrow.gather(topology, towns), recipient, audit_key, evidence_keys)
            write_private(path, data)
            step.detail = f"sha256 {escrow.digest(data)}"
        op.target["sha256"] = escrow.digest(data)
    if json_:
        emit_json({**header.as_dict(), "file": str(path), "sha256": escrow.digest(data)})
        return
    out.print(f"escrow of {len(towns)} towns ({', '.join(towns)}) sealed to {header.recipient}: {path}")
    out.print("Keep it at the DR site; the identity that opens it stays offline.")


@secrets_app.command("recover")
def recover_cmd(
    ctx: typer.Context,
    from_file: Annotated[Path, typer.Option("--from", metavar="FILE", help="An escrow file (kumiai secrets escrow).")],
    identity: Annotated[
        Path, typer.Option("--identity", metavar="KEY", help="The age identity file of the escrow's recipient (0600).")
    ],
    json_: JsonOpt = False,
) -> None:
    """Restore the towns' vault keys and vaults from an escrow on this controller.

    Writes only what is missing; refuses (and changes nothing) where different keys or secrets exist. Towns no
    longer in the inventory are skipped. Running it again changes nothing."""
    try:
        data = from_file.read_bytes()
    except OSError as exc:
        raise InputError(Problem(str(from_file), "--from", f"cannot be read: {exc.strerror}")) from None
    key = escrow.load_identity(identity)
    contents = escrow.unseal(data, str(from_file), key)
    header = contents.header
    target = current_target(ctx)
    consortium = target.inventory.consortium.name
    if header.consortium != consortium:
        raise InputError(
            Problem(str(from_file), "consortium", f"is {header.consortium}; this inventory is {consortium}")
        )
    facts = {
        "file": str(from_file.absolute()),
        "sha256": escrow.digest(data),
        "created": header.created,
        "recipient": header.recipient,
        "towns": list(header.towns),
    }
    topology, known, audit_key_file = target.topology(), list(target.inventory.towns), Trail.default().key
    evidence_keys_file = credentials_file(paths.state_dir())
    problems = escrow.conflicts(topology, contents, known, audit_key_file, evidence_keys_file=evidence_keys_file)
    if problems:
        raise InputError(problems)
    # The audit key and the evidence store's keys first: recording this run needs them (its head goes to the other
    # site's anchor) when the controller lost them with the rest.
    controller = {
        "audit_key": escrow.recover_audit_key(contents, audit_key_file),
        "evidence_keys": escrow.recover_evidence_keys(contents, evidence_keys_file),
    }
    with Operation("secrets recover", target=facts) as op:
        with op.step(f"restore {len(contents.towns)} towns' keys and vaults") as step:
            recovery = escrow.recover(topology, contents.towns, known)
            step.detail = ", ".join(f"{t} {what}" for t, what in recovery.towns.items())
        op.target.update({"result": recovery.towns, "skipped": recovery.skipped, **controller})
    if json_:
        emit_json({**facts, "result": recovery.towns, "skipped": recovery.skipped, **controller})
        return
    out.print(f"audit key: {controller['audit_key']}")
    out.print(f"evidence store keys: {controller['evidence_keys']}")
    for town_id, what in recovery.towns.items():
        out.print(f"{town_id}: {what}")
    if recovery.skipped:
        out.print(f"skipped (not in the inventory): {', '.join(recovery.skipped)}")


@secrets_app.command("keygen")
def keygen_cmd(
    out_file: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where to write the new identity (0600).")],
) -> None:
    """Make an age identity for escrows (as age-keygen does) and print its public key.

    The public key is the recipient for `kumiai secrets escrow --to`. Make the identity on the offline machine
    that keeps it."""
    if out_file.exists():
        raise InputError(Problem(str(out_file), "--out", "exists already: an identity is never overwritten"))
    out.print(escrow.generate_identity(out_file))

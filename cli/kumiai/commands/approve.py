"""`kumiai approve` and `kumiai apply`: a plan file is signed by an approver, and only a signed, current plan is
applied."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from kumiai import automation
from kumiai.audit import approval
from kumiai.console import emit_json, err, out
from kumiai.diff.gitref import locate
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory
from kumiai.ops import Operation
from kumiai.render import PLATFORM, Job, stack_id


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("apply")(apply)


PlanFile = Annotated[Path, typer.Argument(help="A plan written by `kumiai plan --out FILE`.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable result on stdout.")]


def _planned(plan_file: Path, document: dict[str, Any], ctx: typer.Context, tmp: str) -> Inventory:
    return approval.planned_inventory(plan_file, document, locate(ctx.obj.inventory_path), Path(tmp) / "inventory")


def _loud_break_glass(who: str, reason: str) -> None:
    err.print(f"[bold red]BREAK-GLASS:[/] {who} approved their own plan; reason: {reason}", markup=True)
    err.print("[bold red]This is recorded in the audit log and must be reviewed.[/]")


def approve(
    ctx: typer.Context,
    plan_file: PlanFile,
    key: Annotated[Path, typer.Option("--key", help="Your SSH private key (its public key is in approvers:).")],
    break_glass: Annotated[
        bool, typer.Option("--break-glass", help="Approve a plan you wrote yourself (emergencies; needs --reason).")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why break-glass is needed; signed and logged.")
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Sign a plan's hash with an approver's SSH key (ssh-keygen -Y sign, namespace kumiai-plan), next to the plan
    as FILE.approval.json. The approver must be listed in consortium.yaml and must not be the plan's author."""
    if break_glass and not (reason and reason.strip()):
        raise InputError(Problem("--reason", "", "--break-glass needs --reason TEXT saying why"))
    if reason and not break_glass:
        raise InputError(Problem("--reason", reason, "is only for --break-glass"))
    with Operation("approve", target={"plan": str(plan_file)}) as op:
        with op.step("load plan"):
            document = approval.load_plan(plan_file)
            op.target["plan_hash"] = op.plan_hash = document["plan_hash"]
        with tempfile.TemporaryDirectory(prefix="kumiai-approve-") as tmp, op.step("sign"):
            inv = _planned(plan_file, document, ctx, tmp)
            signed = approval.approve(
                plan_file,
                document,
                key,
                inv.consortium.approvers,
                ctx.obj.inventory_path,
                reason.strip() if break_glass and reason else None,
            )
        op.target.update(approver=signed.approver.name, break_glass=signed.break_glass)
        op.approval = signed.as_dict()
    if signed.break_glass:
        _loud_break_glass(signed.approver.name, signed.break_glass)
    if json_:
        emit_json({"ok": True, **signed.as_dict(), "approval": str(approval.approval_path(plan_file))})
    else:
        out.print(
            f"{plan_file} ({signed.plan_hash}) approved by {signed.approver.name} ({signed.approver.role}); "
            f"signature in {approval.approval_path(plan_file)}",
            markup=False,
        )


def _engine(inv: Inventory, jobs: list[Job], op: Operation) -> list[str]:
    """`up` for every stack of the plan, through the Automation API; the stacks' names."""
    done = []
    for job in jobs:
        site_id, town_id = stack_id(job)
        site = inv.consortium.site(site_id)
        with op.step(f"up {town_id}.{site_id}" if town_id != PLATFORM else f"up {site_id}"):
            stack = (
                automation.platform_stack(inv, site)
                if town_id == PLATFORM
                else automation.tenant_stack(inv, inv.towns[town_id], site)
            )
            automation.up(stack)
        done.append(stack.name)
    return done


def apply(ctx: typer.Context, plan_file: PlanFile, json_: JsonFlag = False) -> None:
    """Apply a signed plan: refused (exit 2) when unsigned, signed by an unknown key, self-approved, tampered with
    or stale (the inventory changed since, or a fresh render of its tree differs). With the pulumi CLI it runs
    `up` for each stack of the plan; without it, it checks everything and exits 1: no engine is available."""
    source = locate(ctx.obj.inventory_path)
    with Operation("apply", target={"plan": str(plan_file)}) as op:
        with op.step("load plan"):
            document = approval.load_plan(plan_file)
            op.target["plan_hash"] = op.plan_hash = document["plan_hash"]
        with tempfile.TemporaryDirectory(prefix="kumiai-apply-") as tmp:
            with op.step("verify approval"):
                inv = _planned(plan_file, document, ctx, tmp)
                signed = approval.verify(plan_file, document, inv.consortium.approvers, ctx.obj.inventory_path)
                op.target.update(approver=signed.approver.name, break_glass=signed.break_glass)
                op.approval = signed.as_dict()  # verified against consortium.yaml's approvers
            if signed.break_glass:
                _loud_break_glass(signed.approver.name, signed.break_glass)
            with op.step("check the plan is current"):
                # Rendered afresh into a scratch cache: the shared render cache is not what a plan is checked against.
                jobs = approval.check_fresh(plan_file, document, source, inv, Path(tmp) / "render")
            checked = (
                f"{plan_file} ({document['plan_hash']}): approved by {signed.approver.name} "
                f"({signed.approver.role}), current, {len(jobs)} stacks"
            )
            if not automation.pulumi_available():
                op.skip("up", "no engine: the pulumi CLI is not on PATH")
                if json_:
                    emit_json({"ok": False, "verified": True, "applied": [], **signed.as_dict(), "engine": None})
                else:
                    out.print(checked, markup=False)
                raise KumiaiError(
                    "no engine available: the pulumi CLI is not on PATH, so nothing was applied "
                    "(the plan itself passed every check)"
                )
            applied = _engine(inv, jobs, op)
    if json_:
        emit_json({"ok": True, "verified": True, "applied": applied, **signed.as_dict(), "engine": "pulumi"})
    else:
        out.print(checked, markup=False)
        out.print(f"applied {len(applied)} stacks: {', '.join(applied)}", markup=False)

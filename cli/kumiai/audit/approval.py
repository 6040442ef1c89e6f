"""Plans as signed artefacts: what a plan file records, an approver's SSH signature over its hash, and the checks
`apply` makes before anything changes.

Signing and verifying are OpenSSH's own (`ssh-keygen -Y sign|find-principals|verify`, namespace `kumiai-plan`);
who may sign is the `approvers:` list of consortium.yaml, turned into an allowed_signers file for each check.
What is signed is a statement naming the plan's hash and, for a break-glass approval, its reason: the approval
cannot be moved to another plan, and the reason cannot be edited afterwards. Who approved is read from the
signature (the key that made it), never from a field anyone can write.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from kumiai import __version__
from kumiai.diff.gitref import InventorySource
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory, load_inventory
from kumiai.models import Approver
from kumiai.planner import PLAN_FORMAT, canonical, content_hash, plan_hash, render_stacks, resource_set, select_jobs
from kumiai.render import Job
from kumiai.rendercache import code_version

NAMESPACE = "kumiai-plan"
APPROVAL_FORMAT = "kumiai-approval/1"


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def tool_versions() -> dict[str, str]:
    tools = {"kumiai": __version__, "python": platform.python_version(), "render_code": code_version()}
    for dist in ("pulumi", "pulumi_kubernetes"):
        try:
            tools[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            tools[dist] = "not installed"
    return tools


def provenance(source: InventorySource, towns: list[str], sites: list[str]) -> dict[str, Any]:
    """Where a plan comes from: the inventory's tree in git (and whether the work tree differed), what was
    selected, who made it."""
    claimed = os.environ.get("KUMIAI_ACTOR") or None
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inventory": {"path": source.path, "tree": source.tree("HEAD", "--inventory"), "dirty": source.dirty()},
        "selection": {"towns": towns, "sites": sites},
        "git_commit": source.commit(),
        "tools": tool_versions(),
        # KUMIAI_ACTOR is whatever the environment says: kept, and marked as a claim.
        "author": {"os_user": os_user(), "claimed_actor": claimed},
    }


def _refuse(plan: Path, field: str, message: str) -> InputError:
    return InputError(Problem(str(plan), field, message))


def load_plan(path: Path) -> dict[str, Any]:
    """A plan file, refused (exit 2) when it is not one or when its content no longer matches its hashes."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _refuse(path, "(file)", "no such plan file; write one with `kumiai plan --out FILE`") from None
    except (OSError, ValueError) as exc:
        raise _refuse(path, "(file)", f"is not a readable JSON plan: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        raise _refuse(path, "format", f"is not a kumiai plan (expected format {PLAN_FORMAT!r})")
    missing = [
        k for k in ("plan_hash", "resources_hash", "resources", "inventory", "selection", "author") if k not in document
    ]
    if missing:
        raise _refuse(path, ", ".join(missing), "missing: not a complete plan file")
    if content_hash(document["resources"]) != document["resources_hash"]:
        raise _refuse(path, "resources", "tampered: the resources do not match resources_hash")
    if plan_hash(document) != document["plan_hash"]:
        raise _refuse(path, "plan_hash", "tampered: the plan's content does not match its plan_hash")
    return document


def approval_path(plan: Path) -> Path:
    return plan.with_name(plan.name + ".approval.json")


def statement(plan_digest: str, break_glass: str | None) -> bytes:
    """The bytes an approver signs."""
    return canonical({"namespace": NAMESPACE, "plan_hash": plan_digest, "break_glass": break_glass})


def _ssh_keygen(args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["ssh-keygen", *args], input=data, capture_output=True, timeout=120, check=False)
    except FileNotFoundError:
        raise KumiaiError("ssh-keygen is not installed (Debian: openssh-client); it signs and verifies plans") from None


class _Signers:
    """consortium.yaml's approvers as an OpenSSH allowed_signers file, for the duration of a check."""

    def __init__(self, approvers: list[Approver]) -> None:
        self.approvers = {a.name: a for a in approvers}

    def __enter__(self) -> _Signers:
        self._dir = tempfile.TemporaryDirectory(prefix="kumiai-signers-")
        self.allowed = Path(self._dir.name) / "allowed_signers"
        self.allowed.write_text(
            "".join(f'{a.name} namespaces="{NAMESPACE}" {a.ssh_key}\n' for a in self.approvers.values()),
            encoding="utf-8",
        )
        self.signature = Path(self._dir.name) / "signature"
        return self

    def __exit__(self, *exc: object) -> None:
        self._dir.cleanup()

    def signer(self, signature: str, message: bytes) -> Approver | None:
        """The approver whose key made this signature over message, or None (unknown key or bad signature)."""
        self.signature.write_text(signature, encoding="utf-8")
        found = _ssh_keygen(["-Y", "find-principals", "-s", str(self.signature), "-f", str(self.allowed)])
        principals = found.stdout.decode(errors="replace").split() if found.returncode == 0 else []
        for name in principals:
            verified = _ssh_keygen(
                ["-Y", "verify", "-f", str(self.allowed), "-I", name, "-n", NAMESPACE, "-s", str(self.signature)],
                message,
            )
            if verified.returncode == 0 and name in self.approvers:
                return self.approvers[name]
        return None

    def knows_key(self, signature: str) -> bool:
        self.signature.write_text(signature, encoding="utf-8")
        found = _ssh_keygen(["-Y", "find-principals", "-s", str(self.signature), "-f", str(self.allowed)])
        return found.returncode == 0 and bool(found.stdout.strip())


@dataclass(frozen=True)
class Approval:
    plan_hash: str
    approver: Approver
    break_glass: str | None
    signed_at: str
    run_by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan_hash": self.plan_hash,
            "approver": self.approver.name,
            "role": self.approver.role,
            "break_glass": self.break_glass,
            "signed_at": self.signed_at,
            "run_by": self.run_by,
        }


def authors(document: dict[str, Any]) -> set[str]:
    """Every name the plan's author goes by: the OS user and, if given, the claimed actor."""
    author = document.get("author") or {}
    return {str(v) for v in (author.get("os_user"), author.get("claimed_actor")) if v}


def _no_approvers(inventory: Path) -> InputError:
    return InputError(
        Problem(
            str(inventory / "consortium.yaml"),
            "approvers",
            "lists nobody: add the approvers (name, role, ssh_key) who may sign plans",
        )
    )


def approve(
    plan: Path,
    document: dict[str, Any],
    key: Path,
    approvers: list[Approver],
    inventory: Path,
    break_glass: str | None,
) -> Approval:
    """Sign the plan's hash with the key, if the key belongs to an approver who did not write the plan."""
    if not approvers:
        raise _no_approvers(inventory)
    if not key.is_file():
        raise InputError(Problem(str(key), "--key", "no such private key file"))
    message = statement(document["plan_hash"], break_glass)
    signed = _ssh_keygen(["-Y", "sign", "-n", NAMESPACE, "-f", str(key)], message)
    if signed.returncode != 0:
        raise InputError(
            Problem(str(key), "--key", f"ssh-keygen could not sign with it: {signed.stderr.decode().strip()}")
        )
    signature = signed.stdout.decode()
    with _Signers(approvers) as signers:
        approver = signers.signer(signature, message)
    if approver is None:
        raise InputError(
            Problem(str(key), "--key", f"is not the key of any approver in {inventory / 'consortium.yaml'}")
        )
    if approver.name in authors(document) and not break_glass:
        raise _refuse(
            plan,
            "author",
            f"{approver.name} wrote this plan and may not approve it; another approver must, "
            "or use --break-glass --reason TEXT in an emergency",
        )
    approval = Approval(
        document["plan_hash"], approver, break_glass, datetime.now(UTC).isoformat(timespec="seconds"), os_user()
    )
    record = {"format": APPROVAL_FORMAT, **approval.as_dict(), "namespace": NAMESPACE, "signature": signature}
    target = approval_path(plan)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return approval


def verify(plan: Path, document: dict[str, Any], approvers: list[Approver], inventory: Path) -> Approval:
    """The plan's approval, checked: present, for this plan, signed by a listed approver who is not its author
    (unless break-glass). Each refusal is an InputError naming what is wrong."""
    path = approval_path(plan)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _refuse(
            plan, "approval", f"unsigned: no approval at {path}; run `kumiai approve {plan} --key KEY`"
        ) from None
    except (OSError, ValueError) as exc:
        raise _refuse(plan, "approval", f"unreadable approval {path}: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("signature"), str):
        raise _refuse(plan, "approval", f"unsigned: {path} holds no signature")
    if record.get("plan_hash") != document["plan_hash"]:
        raise _refuse(plan, "approval", f"the approval in {path} is for another plan ({record.get('plan_hash')})")
    if not approvers:
        raise _no_approvers(inventory)
    break_glass = record.get("break_glass")
    break_glass = str(break_glass) if break_glass else None
    with _Signers(approvers) as signers:
        if not signers.knows_key(record["signature"]):
            raise _refuse(
                plan, "approval", f"signed by a key that is not an approver's in {inventory / 'consortium.yaml'}"
            )
        approver = signers.signer(record["signature"], statement(document["plan_hash"], break_glass))
    if approver is None:
        raise _refuse(plan, "approval", f"the signature in {path} does not verify for this plan")
    if approver.name in authors(document) and not break_glass:
        raise _refuse(plan, "approval", f"self-approved: {approver.name} wrote the plan and signed it")
    return Approval(
        document["plan_hash"], approver, break_glass, str(record.get("signed_at")), str(record.get("run_by"))
    )


def planned_inventory(plan: Path, document: dict[str, Any], source: InventorySource, dest: Path) -> Inventory:
    """The inventory the plan was made from, exported from git into dest. A plan of uncommitted changes has no
    such tree and is refused, as is a plan for another inventory directory."""
    recorded = document["inventory"]
    if recorded.get("path") != source.path:
        raise _refuse(plan, "inventory.path", f"made for inventory {recorded.get('path')!r}, not {source.path!r}")
    if recorded.get("dirty"):
        raise _refuse(
            plan,
            "inventory.dirty",
            "made from uncommitted changes to the inventory, which no one can review or reproduce: "
            "commit them and plan again",
        )
    try:
        return load_inventory(source.export(str(recorded.get("tree")), dest))
    except KumiaiError as exc:
        raise _refuse(plan, "inventory.tree", f"cannot read the planned inventory from git: {exc.message}") from None


def check_fresh(
    plan: Path, document: dict[str, Any], source: InventorySource, inv: Inventory, cache_dir: Path
) -> list[Job]:
    """Refuse a stale plan: the inventory moved on since, or this kumiai renders the same tree differently.
    The render is fresh (cache_dir is scratch space, never read): a cache is not evidence. Returns the stacks the
    plan covers."""
    planned = document["inventory"]["tree"]
    head = source.tree("HEAD", "--inventory")
    if head != planned:
        raise _refuse(
            plan,
            "inventory.tree",
            f"stale: the inventory changed since this plan was made (planned {planned[:12]}, HEAD has "
            f"{head[:12]}); plan again",
        )
    selection = document["selection"]
    jobs = select_jobs(inv, list(selection.get("towns") or []), list(selection.get("sites") or []))
    rendered = render_stacks(jobs, cache_dir=cache_dir, use_cache=False)
    fresh = content_hash(resource_set(rendered.cache, rendered.keys(jobs)))
    if fresh != document["resources_hash"]:
        raise _refuse(
            plan,
            "resources_hash",
            f"stale: rendering the planned inventory now gives {fresh[:19]}…, the plan holds "
            f"{document['resources_hash'][:19]}… (kumiai or its inputs changed); plan again",
        )
    return jobs

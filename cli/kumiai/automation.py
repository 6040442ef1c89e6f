"""The engine path: run the tenant and platform projects through Pulumi's Automation API.

Used when the `pulumi` CLI is on PATH (production). Not exercised by the tests or in environments without the CLI:
there `kumiai plan` renders the same programs under mocks (kumiai.render). Each town and site is its own stack
(`<town>.<site>` in project stacks/tenant, `<site>` in stacks/platform); the state backend is a local `file://`
directory under the state dir unless KUMIAI_PULUMI_BACKEND names another (e.g. s3://bucket/prefix). The
PolicyPack in stacks/policy runs on every preview and update.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from kumiai import paths
from kumiai.errors import KumiaiError
from kumiai.inventory import Inventory
from kumiai.models import Site, Town

if TYPE_CHECKING:
    from pulumi import automation as auto


def pulumi_available() -> bool:
    return shutil.which("pulumi") is not None


def backend_url() -> str:
    env = os.environ.get("KUMIAI_PULUMI_BACKEND")
    if env:
        return env
    local = paths.state_dir() / "pulumi"
    local.mkdir(parents=True, exist_ok=True)
    return f"file://{local}"


def _stacks_dir() -> Path:
    return paths.project_root() / "stacks"


def _workspace_env() -> dict[str, str]:
    if "PULUMI_CONFIG_PASSPHRASE" not in os.environ and "PULUMI_CONFIG_PASSPHRASE_FILE" not in os.environ:
        raise KumiaiError(
            "set PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE: the local backend encrypts stack secrets"
        )
    return {"PULUMI_BACKEND_URL": backend_url()}


def _select(project: str, stack_name: str, config: dict[str, str]) -> auto.Stack:
    from pulumi import automation as auto

    if not pulumi_available():
        raise KumiaiError("the pulumi CLI is not on PATH; `kumiai plan` renders the stacks without it")
    stack = auto.create_or_select_stack(
        stack_name=stack_name,
        work_dir=str(_stacks_dir() / project),
        opts=auto.LocalWorkspaceOptions(env_vars=_workspace_env()),
    )
    stack.set_all_config({k: auto.ConfigValue(value=v) for k, v in config.items()})
    return stack


def tenant_stack(inv: Inventory, town: Town, site: Site) -> auto.Stack:
    return _select(
        "tenant",
        f"{town.id}.{site.id}",
        {
            "kumiai:inventory": str(inv.root.resolve()),
            "kumiai:town": town.id,
            "kumiai:site": site.id,
            "kubernetes:context": site.kube_context,
        },
    )


def platform_stack(inv: Inventory, site: Site) -> auto.Stack:
    return _select(
        "platform",
        site.id,
        {"kumiai:inventory": str(inv.root.resolve()), "kumiai:site": site.id, "kubernetes:context": site.kube_context},
    )


def policy_packs() -> list[str]:
    return [str(_stacks_dir() / "policy")]


def preview(stack: auto.Stack) -> auto.PreviewResult:
    """What the engine would change, with the isolation PolicyPack enforced."""
    return stack.preview(policy_packs=policy_packs(), diff=True)


def up(stack: auto.Stack) -> auto.UpResult:
    """Apply a stack; a mandatory policy violation stops it before anything changes."""
    return stack.up(policy_packs=policy_packs())

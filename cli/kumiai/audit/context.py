"""What a record says about who ran a command and on what: identities, the command line (masked), git state.

Only the OS account is an identity the machine vouches for (taken from the real uid, not from $USER, which anyone
can set). The git identity is configuration and `KUMIAI_ACTOR` / `KUMIAI_APPROVED_BY` are plain environment
variables: they are recorded, as claims, and never stand in for the actor or for an approval (approvals are
signatures on plans, checked before a record is written).
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

MASK = "[secret]"
# An option or a key=value whose name says it holds a secret. `--key PATH` (a key file's path) is not a secret.
_SECRET_NAME = r"[A-Za-z0-9_.-]*(?:pass(?:word|wd|phrase)?|secret|token|credential|api[_-]?key|access[_-]?key|_key)"
_SECRET_OPTION = re.compile(rf"^--?{_SECRET_NAME}$", re.IGNORECASE)
_SECRET_OPTION_INLINE = re.compile(rf"^(--?{_SECRET_NAME}=).+$", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(
    rf"(?<![A-Za-z0-9_.-])({_SECRET_NAME}\s*[=:]\s*)(?:'[^']*'|\"[^\"]*\"|[^\s&;]+)", re.IGNORECASE
)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@/\s]+(@)")


def mask_argument(arg: str) -> str:
    """One argument with any secret in it replaced: key=value, --password=value, scheme://user:pass@host."""
    inline = _SECRET_OPTION_INLINE.match(arg)
    if inline:
        return inline.group(1) + MASK
    arg = _URL_CREDENTIALS.sub(rf"\g<1>{MASK}\g<2>", arg)
    return _SECRET_ASSIGNMENT.sub(rf"\g<1>{MASK}", arg)


def mask_argv(argv: list[str]) -> list[str]:
    """The command line as it may be recorded: the value after a secret-named option, and every secret inside
    an argument, masked; what follows `--` goes to another program (psql's SQL, say) and is only counted."""
    masked: list[str] = []
    hide_next = False
    for index, arg in enumerate(argv):
        if arg == "--" and not hide_next:
            return [*masked, "--", f"[{len(argv) - index - 1} argument(s) passed on, not recorded]"]
        masked.append(MASK if hide_next else mask_argument(arg))
        hide_next = bool(_SECRET_OPTION.match(arg)) and not hide_next
    return masked


def _git(cwd: Path | None, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def os_account() -> dict[str, Any]:
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid:{uid}"
    return {"os_user": name, "uid": uid, "host": socket.gethostname()}


def git_identity(cwd: Path | None = None) -> str | None:
    """`name <email>` from git's configuration where the command runs (configuration, so a claim)."""
    out = _git(cwd, "config", "--get-regexp", r"^user\.(name|email)$") or ""
    values = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    name, email = values.get("user.name", "").strip(), values.get("user.email", "").strip()
    if not (name or email):
        return None
    return f"{name} <{email}>" if email else name


def who() -> dict[str, Any]:
    """The OS account running the command, and what it claims beyond that."""
    return {
        **os_account(),
        "git_identity": git_identity(),
        "claimed_actor": os.environ.get("KUMIAI_ACTOR") or None,
        "claimed_approver": os.environ.get("KUMIAI_APPROVED_BY") or None,
    }


def git_commit(cwd: Path | None) -> str | None:
    out = _git(cwd, "rev-parse", "HEAD")
    return out.strip() if out else None


def inventory_state(root: Path) -> dict[str, Any]:
    """The inventory's git tree at HEAD and whether the working copy differs from it (then the tree hash alone
    does not describe what was used); no git, or not in a repository: path only."""
    state: dict[str, Any] = {"path": str(root.absolute()), "commit": None, "tree": None, "dirty": None}
    if not root.is_dir():
        return state
    out = _git(root, "rev-parse", "HEAD", "HEAD:./")
    if out and len(out.split()) == 2:
        state["commit"], state["tree"] = out.split()
        status = _git(root, "status", "--porcelain", "--", ".")
        state["dirty"] = None if status is None else bool(status.strip())
    return state

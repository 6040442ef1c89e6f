"""Throwaway git repositories holding a copy of an inventory, for diffs and plans between commits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cli_helpers import LAB

IDENTITY = ("-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false")


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", *IDENTITY, *args], cwd=repo, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit everything in the throwaway repository; its commit hash."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def repo_with_inventory(root: Path, source: Path = LAB) -> Path:
    """A new repository under root with the inventory copied to root/inv and committed; the inventory's path."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    shutil.copytree(source, root / "inv")
    commit_all(root, "inventory")
    return root / "inv"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")

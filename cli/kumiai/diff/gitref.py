"""The inventory as git holds it: where it sits in its repository, its tree at a ref, a copy of that tree.

`diff` compares two trees, `plan --out` records the tree it rendered, `apply` renders the recorded tree again.
Reading a tree goes through `git archive` into a temporary directory: the user's work tree and index are never
touched.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kumiai.errors import InputError, KumiaiError, Problem


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60, check=False)
    except FileNotFoundError:
        raise KumiaiError("git is not installed: plans and diffs read the inventory from git") from None
    except subprocess.TimeoutExpired:
        raise KumiaiError(f"git {args[0]} in {repo} did not finish within 60 s") from None


@dataclass(frozen=True)
class InventorySource:
    """An inventory directory inside a git work tree: `path` is relative to the top (posix, "" at the top)."""

    repo: Path
    path: str

    def spec(self, ref: str) -> str:
        """git's name for the inventory's tree at `ref` (a commit or tag name)."""
        return f"{ref}:{self.path}" if self.path else f"{ref}^{{tree}}"

    def tree(self, ref: str, option: str = "BASE") -> str:
        """The tree hash of the inventory at `ref`; an unknown ref or a ref without the inventory is bad input."""
        if ref.startswith("-"):
            raise InputError(Problem(option, ref, "a git ref does not start with '-'"))
        # One git process when all is well; a second only to say which part was wrong.
        found = _git(self.repo, "rev-parse", "--quiet", f"{ref}^{{commit}}", self.spec(ref))
        lines = found.stdout.decode().split()
        if found.returncode == 0 and len(lines) == 2:
            return lines[1]
        commit = _git(self.repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if commit.returncode != 0:
            raise InputError(Problem(option, ref, f"no commit {ref!r} in the git repository {self.repo}"))
        raise InputError(Problem(option, ref, f"{ref} has no directory {self.path or '.'} (the inventory)"))

    def dirty(self) -> bool:
        """Whether the work tree's inventory differs from HEAD (changed, added or untracked files)."""
        out = _git(self.repo, "status", "--porcelain", "--untracked-files=all", "--", self.path or ".")
        if out.returncode != 0:
            raise KumiaiError(f"git status failed in {self.repo}: {out.stderr.decode(errors='replace').strip()}")
        return bool(out.stdout.strip())

    def commit(self) -> str | None:
        out = _git(self.repo, "rev-parse", "--verify", "--quiet", "HEAD")
        return out.stdout.decode().strip() or None

    def export(self, tree: str, dest: Path) -> Path:
        """Write the files of `tree` (a tree hash from `tree()`) under dest; returns dest."""
        out = _git(self.repo, "archive", "--format=tar", tree)
        if out.returncode != 0:
            raise KumiaiError(f"git archive {tree} failed: {out.stderr.decode(errors='replace').strip()}")
        dest.mkdir(parents=True, exist_ok=True)
        # Regular files and directories only, each confined to dest: an inventory has no use for links, and a
        # committed symlink must not make a read reach outside the copy.
        with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
            for member in tar:
                target = (dest / member.name).resolve()
                if not target.is_relative_to(dest.resolve()):
                    continue
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    data = tar.extractfile(member)
                    target.write_bytes(data.read() if data else b"")
        return dest


def locate(inventory: Path) -> InventorySource:
    """The git work tree holding the inventory directory; an inventory outside git is bad input."""
    if not inventory.is_dir():
        raise InputError(Problem(str(inventory), "--inventory", "is not a directory"))
    top = _git(inventory, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise InputError(
            Problem(
                str(inventory),
                "--inventory",
                "is not inside a git work tree: plans and diffs are made from committed inventories",
            )
        )
    repo = Path(top.stdout.decode().strip())
    rel = inventory.resolve().relative_to(repo.resolve())
    return InventorySource(repo=repo, path="" if str(rel) == "." else rel.as_posix())

"""On-disk cache of rendered stacks, so that a re-plan renders only what changed.

The key of a stack is a hash of everything its program reads: the town spec (defaults applied), the site it is
rendered for, the site currently primary for it, the consortium name, and the version of the code that turns
them into resources (the kumiai_stacks sources, the models' quota tables, this package's rendering code and the
Pulumi SDK versions). Change any of them and the key changes; nothing is ever invalidated by hand.

Layout: <dir>/<key[:2]>/<key>.json holds the stack's resources as a JSON array; <dir>/index.json maps keys to
what was found about them (e.g. checkov's results, which cost seconds to make again), each with the digest of the
entry it was found on. Everything is JSON: reading the cache runs no code. An entry is data to check, never a
verdict: an index entry is returned only for a cache entry read by this process with the same digest, so a cache
entry edited on disk loses every result made about it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from kumiai import paths
from kumiai.render import Job

INDEX = "index.json"


def default_dir() -> Path:
    return paths.state_dir() / "cache" / "render"


@functools.cache
def code_version() -> str:
    """Hash of the code that decides what a stack renders to."""
    import kumiai
    import kumiai_stacks

    h = hashlib.sha256()
    stacks_dir = Path(kumiai_stacks.__file__).parent
    cli_dir = Path(kumiai.__file__).parent
    files = sorted(stacks_dir.glob("*.py")) + [cli_dir / n for n in ("models.py", "catalogue.py", "render.py")]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    for dist in ("pulumi", "pulumi_kubernetes"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(dist.encode())
    return h.hexdigest()


def stack_keys(jobs: list[Job]) -> list[str]:
    """The render key of each job (each town and site is serialised once however many stacks use it)."""
    memo: dict[int, str] = {}

    def dump(model: Any) -> str:
        if model is None:
            return "null"
        if id(model) not in memo:
            memo[id(model)] = model.model_dump_json()
        return memo[id(model)]

    version = code_version()
    keys = []
    for job in jobs:
        h = hashlib.sha256(version.encode())
        for part in (
            job.consortium,
            dump(job.site),
            dump(getattr(job, "town", None)),
            dump(getattr(job, "db_site", None)),
        ):
            h.update(b"\0" + part.encode())
        keys.append(h.hexdigest())
    return keys


def stack_key(job: Job) -> str:
    return stack_keys([job])[0]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RenderCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        # Digest of each entry as this process last read or wrote it.
        self._digests: dict[str, str] = {}

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def read_text(self, key: str) -> str:
        """The stack's resources as JSON array text."""
        text = self.path(key).read_text(encoding="utf-8")
        self._digests[key] = _digest(text)
        return text

    def read(self, key: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.read_text(key))
        return data

    def write(self, key: str, resources: list[dict[str, Any]]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        text = json.dumps(resources, ensure_ascii=False, separators=(",", ":"))
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        self._digests[key] = _digest(text)

    def read_index(self) -> dict[str, dict[str, Any]]:
        """What was found about the entries this process has read, where they are unchanged since."""
        try:
            data = json.loads((self.root / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            k: v
            for k, v in data.items()
            if isinstance(v, dict) and k in self._digests and v.get("digest") == self._digests[k]
        }

    def write_index(self, index: dict[str, dict[str, Any]]) -> None:
        """Keep `index`, each entry bound to the digest of the cache entry it describes (as it is on disk now for
        an entry this process has neither read nor written, e.g. one a worker rendered)."""
        bound = {}
        for key, found in index.items():
            if key not in self._digests:
                try:
                    self.read_text(key)
                except OSError:
                    continue  # no entry left to describe
            bound[key] = {**found, "digest": self._digests[key]}
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{INDEX}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(bound, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, self.root / INDEX)

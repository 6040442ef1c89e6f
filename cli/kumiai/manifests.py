"""Write rendered resources as Kubernetes manifests: <dir>/<site>/<town>/<namespace>.yaml.

Each file holds one namespace's objects, the Namespace first, in the order they can be applied. A stamp file
records the render key, and an index at the root maps every stack to its key, so that an unchanged stack is
not rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

STAMP = ".render-key"
INDEX = ".kumiai-manifests.json"
KIND_ORDER = {"Namespace": 0, "ServiceAccount": 1, "ResourceQuota": 2, "LimitRange": 3, "Role": 4}
TOP = ("apiVersion", "kind", "metadata")


def manifest(inputs: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes object with apiVersion, kind and metadata first, as people expect to read it."""
    head = {k: inputs[k] for k in TOP if k in inputs}
    return {**head, **{k: v for k, v in inputs.items() if k not in TOP}}


def by_file(resources: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """File name -> objects, for the Kubernetes objects among the resources (components have no manifest)."""
    files: dict[str, list[dict[str, Any]]] = {}
    for r in resources:
        inputs = r.get("inputs") or {}
        if "kind" not in inputs:
            continue
        meta = inputs.get("metadata") or {}
        ns = meta.get("namespace") or meta.get("name") if inputs["kind"] == "Namespace" else meta.get("namespace")
        files.setdefault(f"{ns or 'cluster'}.yaml", []).append(manifest(inputs))
    for objs in files.values():
        objs.sort(key=lambda o: (KIND_ORDER.get(o["kind"], 9), o["kind"], o["metadata"].get("name", "")))
    return files


def stack_dir(root: Path, site: str, town: str) -> Path:
    return root / site / town


def write_stack(root: Path, site: str, town: str, key: str, resources: Iterable[dict[str, Any]]) -> None:
    """(Re)write one stack's directory."""
    target = stack_dir(root, site, town)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name, objs in by_file(resources).items():
        text = yaml.dump_all(objs, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
        (target / name).write_text(text, encoding="utf-8")
    (target / STAMP).write_text(key, encoding="utf-8")


def read_index(root: Path) -> dict[str, str]:
    """ "<site>/<town>" -> render key of the manifests written there (one file, not one stamp per directory)."""
    try:
        data = json.loads((root / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_index(root: Path, index: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{INDEX}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
    os.replace(tmp, root / INDEX)


def prune(root: Path, site: str, keep: set[str]) -> list[Path]:
    """Remove stack directories of a site that the plan no longer holds (a town left the consortium)."""
    removed: list[Path] = []
    site_dir = root / site
    if not site_dir.is_dir():
        return removed
    for child in site_dir.iterdir():
        if child.is_dir() and child.name not in keep and (child / STAMP).exists():
            shutil.rmtree(child)
            removed.append(child)
    return removed


def manifest_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.yaml"))

"""Schema validation (kubernetes-validate --strict) and checkov over the rendered manifests.

Schema validation runs per stack where the stack is rendered (in the worker), so its result is cached with the
render. checkov runs once per plan over the directories of the stacks rendered in that plan.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

K8S_VERSION = "1.30"

# checkov checks skipped for every manifest, with the reason. Empty: the rendered manifests pass every check of the
# kubernetes framework. A skip is added here (never by editing the manifests by hand) and listed in stacks/README.md.
CHECKOV_SKIPS: dict[str, str] = {}


def schema_errors(objects: Iterable[dict[str, Any]], version: str = K8S_VERSION) -> list[str]:
    """kubernetes-validate --strict against Kubernetes `version`: one message per invalid object.

    The same schemas, validator and error as `kubernetes_validate.validate(obj, version, strict=True)`, but each
    validator is built once per process: the library re-reads the schema and the shared definitions (several MB
    of JSON) and builds a fresh reference registry for every object, ≈ 11 ms each; reused, an object takes well
    under a millisecond (`tests/unit/test_render.py` compares the messages with the library's own).
    """
    import jsonschema
    import kubernetes_validate as kv

    errors: list[str] = []
    for obj in objects:
        name = f"{obj.get('kind')} {obj.get('metadata', {}).get('namespace', '')}/{obj.get('metadata', {}).get('name')}"
        try:
            _validator(str(obj.get("apiVersion")), str(obj.get("kind")), version).validate(obj)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(object)"
            errors.append(f"{name}: {where}: {exc.message}")
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as exc:
            errors.append(f"{name}: {exc}")
    return errors


@functools.cache
def _definitions(schema_dir: str, version: str) -> Any:
    from kubernetes_validate import utils

    return utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)


@functools.cache
def _validator(api_version: str, kind: str, version: str) -> Any:
    """What kubernetes_validate.validate(strict=True) builds for one kind, kept (raises as it does)."""
    import jsonschema
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    if utils.major_minor(version) > utils.latest_version():
        raise utils.VersionNotSupportedError(version=utils.major_minor(version))
    schema_version = [v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(version)][-1]
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema_dir = f"v{schema_version}-local-strict"
    try:
        schema = utils.schema_contents(
            f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json", version
        )
    except FileNotFoundError:
        raise utils.SchemaNotFoundError(
            version=utils.major_minor(version), kind=kind, api_version=api_version
        ) from None
    registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(_definitions(schema_dir, version)) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def checkov_command() -> list[str]:
    exe = shutil.which("checkov") or str(Path(sys.executable).parent / "checkov")
    return [exe]


def run_checkov(dirs: Sequence[Path]) -> dict[str, Any]:
    """checkov --framework kubernetes over the directories, in one run; failed and skipped checks name the file
    (in its original directory) and the resource."""
    if not dirs:
        return {"ran": False, "passed": 0, "failed": [], "skipped": []}
    # One checkov run over one directory: copies of the stacks' files side by side (checkov prints one report
    # per -d, and starting it costs seconds).
    with tempfile.TemporaryDirectory(prefix="kumiai-checkov-") as tmp:
        origin: dict[str, Path] = {}
        for i, d in enumerate(dirs):
            for f in sorted(d.glob("*.yaml")):
                copy = Path(tmp) / f"{i:06d}" / f.name
                copy.parent.mkdir(exist_ok=True)
                shutil.copyfile(f, copy)
                origin[str(copy.relative_to(tmp))] = f
        report = _checkov(Path(tmp))
    for item in report["failed"] + report["skipped"]:
        rel = item["file"].lstrip("/")
        item["file"] = str(origin.get(rel, item["file"]))
    return report


def _checkov(root: Path) -> dict[str, Any]:
    cmd = [*checkov_command(), "--framework", "kubernetes", "--skip-download", "--quiet", "-o", "json", "--compact"]
    cmd += ["-d", str(root)]
    if CHECKOV_SKIPS:
        cmd += ["--skip-check", ",".join(CHECKOV_SKIPS)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    except OSError as exc:
        return {"ran": False, "error": f"checkov could not run: {exc}", "passed": 0, "failed": [], "skipped": []}
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return {"ran": False, "error": (proc.stderr or proc.stdout)[-2000:], "passed": 0, "failed": [], "skipped": []}
    reports = data if isinstance(data, list) else [data]
    passed = 0
    failed: list[dict[str, str]] = []
    skipped: list[dict[str, str]] = []
    for report in reports:
        results = report.get("results") or {}
        passed += len(results.get("passed_checks") or [])
        for c in results.get("failed_checks") or []:
            failed.append(_check(c))
        for c in results.get("skipped_checks") or []:
            skipped.append({**_check(c), "reason": CHECKOV_SKIPS.get(c.get("check_id", ""), "")})
    return {"ran": True, "passed": passed, "failed": failed, "skipped": skipped}


def _check(c: dict[str, Any]) -> dict[str, str]:
    return {
        "check_id": str(c.get("check_id")),
        "check_name": str(c.get("check_name")),
        "file": str(c.get("file_path")),
        "resource": str(c.get("resource")),
    }

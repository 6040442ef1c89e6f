"""Bringing a town's bucket back to how it stood at a moment, from its locked versions.

Ransomware holding the town's keys can delete or overwrite every current object, but not the versions under
retention: the state at any moment since is still in the bucket. Recovery only adds (a copy of the old version
becomes current again, or a delete marker hides what came later) or removes delete markers, which carry no data
and no lock: nothing locked is touched, and a recovery can itself be undone the same way.

`plan_recovery` is pure (tested without a store); `recover_bucket` reads the versions and applies the plan as the
bucket's owner.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import botocore.exceptions

from kumiai.errors import KumiaiError


@dataclass(frozen=True)
class Entry:
    """One version or delete marker of a key, as ListObjectVersions reports it."""

    key: str
    version_id: str
    modified: datetime
    marker: bool
    latest: bool


@dataclass(frozen=True)
class Step:
    """restore: copy `version_id` over the key; unmark: remove these delete markers; hide: add a delete marker."""

    kind: Literal["restore", "unmark", "hide"]
    key: str
    version_id: str | None = None
    markers: tuple[str, ...] = ()


@dataclass
class Recovery:
    bucket: str
    as_of: datetime
    steps: list[Step] = field(default_factory=list)
    unchanged: int = 0

    def counts(self) -> dict[str, int]:
        kinds = {"restore": 0, "unmark": 0, "hide": 0}
        for step in self.steps:
            kinds[step.kind] += 1
        return {**kinds, "unchanged": self.unchanged}


def plan_recovery(bucket: str, entries: Iterable[Entry], as_of: datetime) -> Recovery:
    """What makes every key of the bucket read as it did at `as_of` (an entry written at `as_of` counts)."""
    by_key: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_key[entry.key].append(entry)
    recovery = Recovery(bucket=bucket, as_of=as_of)
    for key in sorted(by_key):
        history = sorted(by_key[key], key=lambda e: (e.modified, e.latest))
        then = [e for e in history if e.modified <= as_of]
        was = then[-1] if then else None
        now = next((e for e in history if e.latest), history[-1])
        later = [e for e in history if e.modified > as_of]
        if was is None or was.marker:
            if now.marker:
                recovery.unchanged += 1
            else:
                recovery.steps.append(Step("hide", key))
        elif now.version_id == was.version_id:
            recovery.unchanged += 1
        elif all(e.marker for e in later):
            recovery.steps.append(Step("unmark", key, markers=tuple(e.version_id for e in later)))
        else:
            recovery.steps.append(Step("restore", key, version_id=was.version_id))
    return recovery


def list_entries(s3: Any, bucket: str) -> list[Entry]:
    entries = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for kind, marker in (("Versions", False), ("DeleteMarkers", True)):
            for v in page.get(kind, []):
                entries.append(Entry(v["Key"], v["VersionId"], v["LastModified"], marker, bool(v["IsLatest"])))
    return entries


def recover_bucket(s3: Any, bucket: str, as_of: datetime, *, dry_run: bool = False) -> Recovery:
    """Plan, and unless `dry_run` apply, the recovery of `bucket` to `as_of` with `s3` (the owner's client)."""
    try:
        recovery = plan_recovery(bucket, list_entries(s3, bucket), as_of)
        if dry_run:
            return recovery
        for step in recovery.steps:
            if step.kind == "restore":
                s3.copy_object(
                    Bucket=bucket,
                    Key=step.key,
                    CopySource={"Bucket": bucket, "Key": step.key, "VersionId": step.version_id},
                )
            elif step.kind == "unmark":
                for marker in step.markers:
                    s3.delete_object(Bucket=bucket, Key=step.key, VersionId=marker)
            else:
                s3.delete_object(Bucket=bucket, Key=step.key)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise KumiaiError(f"bucket {bucket}: {error.get('Code')}: {error.get('Message')}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise KumiaiError(f"bucket {bucket}: {exc}") from None
    return recovery

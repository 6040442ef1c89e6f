"""A town's buckets when it leaves the consortium: its S3 user is disabled, and its locked objects age out.

Locked versions cannot be deleted by anyone before their retention ends (that is the point of the lock), so the
bucket is not emptied: every current object is hidden behind a delete marker, which makes it a noncurrent version
that the bucket's lifecycle rule (kumiai.objectstore.s3.BucketSpec.lifecycle_rules) removes once its retention has
passed. What is left readable meanwhile is ciphertext whose key is destroyed (crypto-shredding).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions

from kumiai.datalayer.topology import SiteLayout
from kumiai.errors import KumiaiError
from kumiai.objectstore.s3 import LIFECYCLE_RULE_ID, client
from kumiai.objectstore.store import Credentials, StoreAdmin


@dataclass(frozen=True)
class BucketFate:
    """A retired town bucket at one site, as read back from the store."""

    site: str
    bucket: str
    exists: bool
    user_disabled: bool  # this run disabled the town's S3 user (False: it already was, or there was none)
    versions: int = 0  # object versions still stored
    locked_versions: int = 0  # of which retention has not ended yet
    hidden_now: int = 0  # current objects this run hid behind a delete marker
    last_retain_until: str | None = None  # ISO time the last locked version's retention ends
    noncurrent_days: int | None = None  # the lifecycle rule: noncurrent versions removed after this many days
    gone_by: str | None = None  # when the lifecycle will have removed every version (estimate, ISO)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _noncurrent_days(s3: Any, bucket: str) -> int | None:
    try:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except botocore.exceptions.ClientError:
        return None
    for rule in rules:
        if rule.get("ID") == LIFECYCLE_RULE_ID and rule.get("Status") == "Enabled":
            days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
            return int(days) if days is not None else None
    return None


def _listing(s3: Any, bucket: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(object versions, delete markers) of the bucket."""
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    return versions, markers


def _retain_until(s3: Any, bucket: str, version: dict[str, Any]) -> datetime | None:
    try:
        got = s3.get_object_retention(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    except botocore.exceptions.ClientError:
        return None  # no retention on this version (e.g. a bucket without a default rule)
    until = got.get("Retention", {}).get("RetainUntilDate")
    return until if isinstance(until, datetime) else None


def _retire(s3: Any, owner_s3: Any, site: str, bucket: str, disabled: bool) -> BucketFate:
    """`s3` hides and reads the objects' retention (their writer's keys, or the owner's); `owner_s3` reads the
    bucket's lifecycle rule (bucket settings are the bucket owner's to read)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return BucketFate(site, bucket, exists=False, user_disabled=disabled)
        raise
    now = datetime.now(UTC)
    versions, _ = _listing(s3, bucket)
    current = [v for v in versions if v.get("IsLatest")]
    for v in current:
        s3.delete_object(Bucket=bucket, Key=v["Key"])  # only adds a delete marker: locked versions stay
    versions, markers = _listing(s3, bucket)
    # Each version became noncurrent when a newer version or marker was written: at the latest, at the newest
    # marker (a run re-done later reads the same moment, not its own).
    noncurrent_since = max((m["LastModified"] for m in markers), default=now)
    until = [u for u in (_retain_until(s3, bucket, v) for v in versions) if u is not None]
    last = max(until, default=None)
    days = _noncurrent_days(owner_s3, bucket)
    gone = None
    if days is not None and versions:
        gone = max([noncurrent_since + timedelta(days=days), *([last] if last else [])])
    return BucketFate(
        site=site,
        bucket=bucket,
        exists=True,
        user_disabled=disabled,
        versions=len(versions),
        locked_versions=sum(1 for u in until if u > now),
        hidden_now=len(current),
        last_retain_until=last.isoformat() if last else None,
        noncurrent_days=days,
        gone_by=gone.isoformat() if gone else None,
    )


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def retire_bucket(
    site: SiteLayout, admin: StoreAdmin, bucket: str, town_user: str, town_keys: Credentials | None
) -> BucketFate:
    """Hide the bucket's current objects and read when its locks end, then disable the town's S3 user.

    The objects belong to the town's user that wrote them, so it reads their retention (with `town_keys`, from its
    vault while that exists); the store's owner, who owns the bucket, serves a run repeated after the town's keys
    are gone: it lists and hides, and reads what retention the store lets it."""
    store = site.object_store
    if store is None:
        raise KumiaiError(f"{site.id} keeps backups in a posix directory, not in an object store")
    try:
        fate = None
        owner = client(store, admin.owner())
        if town_keys is not None:
            try:
                fate = _retire(client(store, town_keys), owner, site.id, bucket, False)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) not in ("InvalidAccessKeyId", "AccessDenied", "UserSuspended", "403"):
                    raise
        if fate is None:
            fate = _retire(owner, owner, site.id, bucket, False)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        raise KumiaiError(f"bucket {bucket} at {site.id}: {error.get('Code')}: {error.get('Message')}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise KumiaiError(f"bucket {bucket} at {site.id}: {exc}") from None
    return replace(fate, user_disabled=admin.disable_user(town_user))

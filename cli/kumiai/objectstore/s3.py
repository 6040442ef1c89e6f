"""A town's backup bucket as code: what it must be (pure) and reconciling or checking a real one (boto3).

The bucket belongs to the store's owner account, never to the town: the town's S3 user reaches it only through
the bucket policy, which grants what pgBackRest and a recovery need and nothing that changes the bucket itself.
What keeps backups is the object lock, not the policy: the policy even grants deleting versions and setting
retention, and the lock still refuses both before a version's retention ends.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from kumiai.datalayer.topology import ObjectStoreLayout
from kumiai.errors import KumiaiError
from kumiai.objectstore.store import Credentials

_CLIENT_LOCK = threading.Lock()
LIFECYCLE_RULE_ID = "kumiai-noncurrent-versions"
# Town objects, bucket and read-only bucket facts the town's user may touch (pgBackRest: list, get, put, delete,
# which on a versioned bucket only adds a delete marker).
TOWN_OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:GetObjectRetention",
    "s3:PutObjectRetention",
)
TOWN_BUCKET_ACTIONS = (
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:GetBucketLocation",
    "s3:GetBucketVersioning",
    "s3:GetBucketObjectLockConfiguration",
)


def client(store: ObjectStoreLayout, credentials: Credentials, *, attempts: int = 3, connect_timeout: int = 10) -> Any:
    """A boto3 S3 client for a site's store: path-style addressing, TLS verified against the site's CA. Threads may
    call this at once (boto3's default session does not allow that; its clients may be shared)."""
    with _CLIENT_LOCK:
        return _client(store, credentials, attempts, connect_timeout)


def _client(store: ObjectStoreLayout, credentials: Credentials, attempts: int, connect_timeout: int) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint_url,
        region_name=store.region,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        verify=str(store.ca_file) if store.ca_file else True,
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": attempts},
            connect_timeout=connect_timeout,
            read_timeout=60,
        ),
    )


def town_user(town_id: str) -> str:
    return f"kumiai-town-{town_id}"


@dataclass(frozen=True)
class BucketSpec:
    """A town's bucket at one site (or the consortium's evidence bucket: `town_user` is then the evidence user)."""

    name: str
    town_user: str
    lock_mode: str  # COMPLIANCE or GOVERNANCE
    retention_days: int  # the town's protection.immutable_days; 0: versions are kept, but not locked
    object_actions: tuple[str, ...] = TOWN_OBJECT_ACTIONS  # what the user may do to the bucket's objects

    def lock_configuration(self) -> dict[str, Any]:
        if self.retention_days == 0:
            return {"ObjectLockEnabled": "Enabled"}
        return {
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": self.lock_mode, "Days": self.retention_days}},
        }

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        """Old versions (what pgBackRest's expire leaves behind) go once their retention has passed: a version
        becomes noncurrent after it was written, so its lock has ended by then."""
        return [
            {
                "ID": LIFECYCLE_RULE_ID,
                "Filter": {"Prefix": ""},
                "Status": "Enabled",
                "NoncurrentVersionExpiration": {"NoncurrentDays": max(self.retention_days, 1)},
            }
        ]

    def policy(self) -> dict[str, Any]:
        principal = {"AWS": [f"arn:aws:iam:::user/{self.town_user}"]}
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "TownBucket",
                    "Effect": "Allow",
                    "Principal": principal,
                    "Action": list(TOWN_BUCKET_ACTIONS),
                    "Resource": [f"arn:aws:s3:::{self.name}"],
                },
                {
                    "Sid": "TownObjects",
                    "Effect": "Allow",
                    "Principal": principal,
                    "Action": list(self.object_actions),
                    "Resource": [f"arn:aws:s3:::{self.name}/*"],
                },
            ],
        }


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _lock(s3: Any, bucket: str) -> dict[str, Any] | None:
    try:
        return dict(s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"])
    except botocore.exceptions.ClientError as exc:
        if _code(exc) == "ObjectLockConfigurationNotFoundError":
            return None
        raise


def _lifecycle(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        return list(s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"])
    except botocore.exceptions.ClientError as exc:
        if _code(exc) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _policy(s3: Any, bucket: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"]))
    except botocore.exceptions.ClientError as exc:
        if _code(exc) == "NoSuchBucketPolicy":
            return None
        raise


def _exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def _same_rules(observed: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """Lifecycle rules as the store returns them carry extra empty fields; compare what we set."""
    keys = ("ID", "Status", "NoncurrentVersionExpiration")
    prefix = [r.get("Filter", {}).get("Prefix", r.get("Prefix", "")) for r in observed]
    return [{k: r.get(k) for k in keys} for r in observed] == [{k: r.get(k) for k in keys} for r in wanted] and all(
        p == "" for p in prefix
    )


def reconcile_bucket(s3: Any, spec: BucketSpec) -> list[str]:
    """Bring the bucket to `spec` (as its owner); what was changed, [] when it already was. Object lock can only be
    chosen when a bucket is created: a bucket without it is an error to fix by hand, never silently accepted."""
    changes = []
    try:
        if not _exists(s3, spec.name):
            s3.create_bucket(Bucket=spec.name, ObjectLockEnabledForBucket=True)
            changes.append("created with object lock")
        lock = _lock(s3, spec.name)
        if lock is None:
            raise KumiaiError(
                f"bucket {spec.name} exists without object lock, which cannot be added later: move its contents "
                "and remove it, then onboard again"
            )
        if s3.get_bucket_versioning(Bucket=spec.name).get("Status") != "Enabled":
            s3.put_bucket_versioning(Bucket=spec.name, VersioningConfiguration={"Status": "Enabled"})
            changes.append("versioning enabled")
        if lock != spec.lock_configuration():
            s3.put_object_lock_configuration(Bucket=spec.name, ObjectLockConfiguration=spec.lock_configuration())
            changes.append(f"default retention {spec.lock_mode} {spec.retention_days} days")
        if not _same_rules(_lifecycle(s3, spec.name), spec.lifecycle_rules()):
            s3.put_bucket_lifecycle_configuration(
                Bucket=spec.name, LifecycleConfiguration={"Rules": spec.lifecycle_rules()}
            )
            changes.append("lifecycle rule for noncurrent versions")
        if _policy(s3, spec.name) != spec.policy():
            s3.put_bucket_policy(Bucket=spec.name, Policy=json.dumps(spec.policy()))
            changes.append(f"policy for {spec.town_user}")
    except botocore.exceptions.BotoCoreError as exc:
        raise KumiaiError(f"bucket {spec.name}: {exc}") from None
    except botocore.exceptions.ClientError as exc:
        raise KumiaiError(f"bucket {spec.name}: {_code(exc)}: {exc.response.get('Error', {}).get('Message')}") from None
    return changes


def weaker_than(s3: Any, spec: BucketSpec) -> list[str]:
    """How the bucket protects less than `spec` asks (read with any credentials allowed to read these settings):
    versioning off, no lock, a shorter default retention or GOVERNANCE where COMPLIANCE is asked."""
    try:
        problems = []
        if s3.get_bucket_versioning(Bucket=spec.name).get("Status") != "Enabled":
            problems.append("versioning is not enabled")
        lock = _lock(s3, spec.name)
        if lock is None or lock.get("ObjectLockEnabled") != "Enabled":
            problems.append("object lock is not enabled")
        elif spec.retention_days:
            rule = lock.get("Rule", {}).get("DefaultRetention", {})
            days = rule.get("Days") or 365 * (rule.get("Years") or 0)
            if days < spec.retention_days:
                problems.append(f"default retention {days} days, less than {spec.retention_days}")
            if spec.lock_mode == "COMPLIANCE" and rule.get("Mode") != "COMPLIANCE":
                problems.append(f"lock mode {rule.get('Mode') or 'none'}, not COMPLIANCE")
        return problems
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise KumiaiError(f"bucket {spec.name}: cannot read its protection: {exc}") from None

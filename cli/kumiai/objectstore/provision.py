"""Onboarding's part in the object stores: each town's S3 user and bucket at every site holding its repos."""

from __future__ import annotations

from collections.abc import Sequence

from kumiai.datalayer.secrets import ensure_town_secrets
from kumiai.datalayer.target import Target
from kumiai.datalayer.topology import Topology
from kumiai.errors import KumiaiError
from kumiai.objectstore.s3 import BucketSpec, client, reconcile_bucket, town_user
from kumiai.objectstore.store import Credentials


def bucket_spec(target: Target, topology: Topology, town_id: str, site_id: str) -> BucketSpec:
    store = topology.site(site_id).object_store
    if store is None:
        raise KumiaiError(f"{site_id} keeps backups in a posix directory, not in an object store")
    return BucketSpec(
        name=store.bucket(town_id),
        town_user=town_user(town_id),
        lock_mode=store.lock_mode,
        retention_days=target.inventory.towns[town_id].protection.immutable_days,
    )


def town_credentials(topology: Topology, town_id: str) -> Credentials:
    secrets = ensure_town_secrets(topology.secrets_file(town_id))
    return Credentials(secrets.s3_access_key, secrets.s3_secret_key)


def ensure_town_buckets(target: Target, topology: Topology, town_ids: Sequence[str]) -> list[str]:
    """Every town's user and bucket at each of its sites with an object store, reconciled; what changed."""
    changes = []
    for site in topology.sites:
        admin = target.object_store(site.id)
        if site.object_store is None or admin is None:
            continue
        owner = client(site.object_store, admin.owner())
        for tid in town_ids:
            if site.id not in topology.towns[tid].sites:
                continue
            user = town_user(tid)
            if admin.ensure_user(user, town_credentials(topology, tid)):
                changes.append(f"{site.id}: S3 user {user}")
            spec = bucket_spec(target, topology, tid, site.id)
            changes += [f"{site.id}: bucket {spec.name}: {c}" for c in reconcile_bucket(owner, spec)]
    return changes

"""What kumiai does in the sites' object stores through a target: each town's S3 user and bucket at every site
holding its repos and the consortium's evidence bucket at every site (onboarding), and a repo brought back to an
earlier moment (`kumiai backup recover`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from kumiai import paths
from kumiai.datalayer.secrets import ensure_town_secrets
from kumiai.datalayer.target import Target
from kumiai.datalayer.topology import ObjectStoreLayout, SiteLayout, Topology
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.objectstore.evidence import (
    EVIDENCE_OBJECT_ACTIONS,
    EVIDENCE_RETENTION_DAYS,
    EVIDENCE_USER,
    ensure_credentials,
    evidence_bucket,
    evidence_site,
    save_store,
    store_of,
)
from kumiai.objectstore.recover import Recovery, recover_bucket
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
    """Every town's user and bucket at each of its sites with an object store, reconciled; what changed. The sites
    are reconciled at the same time (each radosgw-admin is a process of its own that mostly waits on its store)."""
    credentials = {tid: town_credentials(topology, tid) for tid in town_ids}
    admins = {site.id: target.object_store(site.id) for site in topology.sites}

    def at_site(site: SiteLayout) -> list[str]:
        admin = admins[site.id]
        if site.object_store is None or admin is None:
            return []
        changes = []
        owner = client(site.object_store, admin.owner())
        for tid in town_ids:
            if site.id not in topology.towns[tid].sites:
                continue
            user = town_user(tid)
            if admin.ensure_user(user, credentials[tid]):
                changes.append(f"{site.id}: S3 user {user}")
            spec = bucket_spec(target, topology, tid, site.id)
            changes += [f"{site.id}: bucket {spec.name}: {c}" for c in reconcile_bucket(owner, spec)]
        return changes

    return per_site(topology, at_site)


def per_site(topology: Topology, work: Callable[[SiteLayout], list[str]]) -> list[str]:
    """`work` at every site at once; what each returned, in the sites' order (the first error is raised)."""
    with ThreadPoolExecutor(max_workers=max(len(topology.sites), 1)) as pool:
        return [c for changes in pool.map(work, topology.sites) for c in changes]


def evidence_spec(store: ObjectStoreLayout) -> BucketSpec:
    """The consortium's evidence bucket at a site: the consortium's lock mode, EVIDENCE_RETENTION_DAYS."""
    return BucketSpec(
        name=evidence_bucket(store),
        town_user=EVIDENCE_USER,
        lock_mode=store.lock_mode,
        retention_days=EVIDENCE_RETENTION_DAYS,
        object_actions=EVIDENCE_OBJECT_ACTIONS,
    )


def ensure_evidence_buckets(target: Target, topology: Topology) -> list[str]:
    """The evidence user and bucket at every site with an object store, reconciled, and the controller told which
    one its copies go to (kumiai.objectstore.evidence); what changed."""
    state = paths.state_dir()
    credentials = ensure_credentials(state)
    admins = {site.id: target.object_store(site.id) for site in topology.sites}

    def at_site(site: SiteLayout) -> list[str]:
        admin = admins[site.id]
        if site.object_store is None or admin is None:
            return []
        changes = []
        if admin.ensure_user(EVIDENCE_USER, credentials):
            changes.append(f"{site.id}: S3 user {EVIDENCE_USER}")
        spec = evidence_spec(site.object_store)
        owner = client(site.object_store, admin.owner())
        return changes + [f"{site.id}: bucket {spec.name}: {c}" for c in reconcile_bucket(owner, spec)]

    changes = per_site(topology, at_site)
    other = evidence_site(topology.sites)
    if save_store(state, store_of(other) if other else None):
        changes.append(f"evidence and the audit anchor go to {other.id if other else 'this machine only'}")
    return changes


def recover_repo(
    target: Target, topology: Topology, town_id: str, repo_number: int, as_of: datetime, *, dry_run: bool = False
) -> Recovery:
    """The town's repo `repo_number` (its bucket at that repo's site) back to `as_of`, as the bucket's owner."""
    repo = next((r for r in topology.towns[town_id].repos if r.number == repo_number), None)
    if repo is None:
        numbers = ", ".join(str(r.number) for r in topology.towns[town_id].repos)
        raise InputError(Problem("--repo", str(repo_number), f"{town_id}'s repos are {numbers}"))
    store = topology.site(repo.site).object_store
    admin = target.object_store(repo.site)
    if store is None or admin is None or repo.bucket is None:
        raise InputError(
            Problem("--repo", str(repo_number), f"repo{repo_number} is a posix directory at {repo.site}: no versions")
        )
    return recover_bucket(client(store, admin.owner()), repo.bucket, as_of, dry_run=dry_run)

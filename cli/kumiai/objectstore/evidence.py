"""The consortium's evidence bucket at each site with an object store, and the controller's copies in the one at
the other site: every evidence file kumiai writes and every head of the audit log (its anchor).

Which site is "the other site": the controller runs at the primary site (consortium.yaml `role: primary`), so a
disaster there takes the controller's disk with its evidence and its local anchor. The copies go to the first
site with `role: dr` that has an object store (in consortium.yaml's order), which that disaster does not reach.
Without such a site nothing is copied and kumiai behaves as before: evidence and anchor stay local.

Every site with an object store gets the bucket (`<bucket_prefix>.evidence`; town ids have no '.', so it can never
be a town's bucket), versioned and locked with the consortium's `object_lock_mode` and a default retention of
EVIDENCE_RETENTION_DAYS, so moving the controller to another site only changes which one is written. Its own S3
user, `kumiai-evidence`, may put, read and list, never delete: a deleted object would only get a delete marker
anyway, and a locked version stays until its retention ends.

The anchor is one object per head, `audit/heads/<seq>.json`: the highest sequence number among all versions
(delete markers do not hide a version) is the newest record ever anchored, read from its first version: a later
overwrite with an older head cannot lower it, and is itself reported. `kumiai audit verify` checks the log
against that head as well as against the local one.

What the controller needs is kept in the state directory: `evidence-store.json` (where: endpoint, bucket, CA; no
secret) and `secrets/evidence-s3.json` (the user's keys, 0600). Onboarding writes both; `lab down --purge`
forgets the store with the lab's object stores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kumiai import paths
from kumiai.console import err
from kumiai.datalayer.topology import ObjectStoreLayout, SiteLayout
from kumiai.errors import KumiaiError
from kumiai.objectstore.store import Credentials

EVIDENCE_USER = "kumiai-evidence"
# Five years: longer than an audit of a fiscal year's drills and changes takes to be asked for and answered, and
# what a consortium would choose for records of its systems' operation. Noncurrent versions (each anchor write
# supersedes none: heads have keys of their own) expire by the lifecycle rule once this has passed.
EVIDENCE_RETENTION_DAYS = 1827
ANCHOR_PREFIX = "audit/heads/"
EVIDENCE_PREFIX = "evidence/"
CONFIG_FILE = "evidence-store.json"
CREDENTIALS_FILE = "evidence-s3.json"
# What the evidence user may do to objects: write new ones and read them, nothing that removes or weakens one.
EVIDENCE_OBJECT_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:GetObjectRetention")
_HEAD_KEY = re.compile(r"^audit/heads/(\d{12})\.json$")


def evidence_bucket(store: ObjectStoreLayout) -> str:
    return f"{store.bucket_prefix}.evidence"


def evidence_site(sites: Sequence[SiteLayout]) -> SiteLayout | None:
    """The site the controller's copies go to: the first DR site with an object store; None: copies stay local."""
    return next((s for s in sites if s.role == "dr" and s.object_store is not None), None)


def head_key(seq: int) -> str:
    return f"{ANCHOR_PREFIX}{seq:012d}.json"


def evidence_key(path: Path, evidence_dir: Path) -> str:
    """An evidence file's key: its path under the evidence directory, under `evidence/`."""
    return EVIDENCE_PREFIX + path.absolute().relative_to(evidence_dir.absolute()).as_posix()


class EvidenceStore(BaseModel):
    """Where the controller's copies go (the state directory's evidence-store.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    host: str
    port: int
    region: str
    bucket: str
    ca_file: str | None

    @property
    def where(self) -> str:
        return f"https://{self.host}:{self.port}/{self.bucket} ({self.site})"

    def layout(self, lock_mode: str = "COMPLIANCE") -> ObjectStoreLayout:
        return ObjectStoreLayout(
            host=self.host,
            port=self.port,
            region=self.region,
            bucket_prefix="",
            lock_mode=lock_mode,
            ca_file=Path(self.ca_file) if self.ca_file else None,
        )


def store_of(site: SiteLayout) -> EvidenceStore:
    store = site.object_store
    assert store is not None
    return EvidenceStore(
        site=site.id,
        host=store.host,
        port=store.port,
        region=store.region,
        bucket=evidence_bucket(store),
        ca_file=str(store.ca_file) if store.ca_file else None,
    )


# --- the controller's files (state directory)


def store_file(state: Path) -> Path:
    """Where the controller keeps the record of its evidence store (no secret)."""
    return state / CONFIG_FILE


def credentials_file(state: Path) -> Path:
    """The evidence user's S3 keys (0600, beside the audit key)."""
    return state / "secrets" / CREDENTIALS_FILE


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_store(state: Path) -> EvidenceStore | None:
    path = store_file(state)
    try:
        return EvidenceStore.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        raise KumiaiError(
            f"{path} is damaged ({type(exc).__name__}): onboard again to rewrite it, or remove it to keep evidence "
            "and the audit anchor only on this machine"
        ) from None


def save_store(state: Path, store: EvidenceStore | None) -> bool:
    """Record where copies go (None: nowhere, the file is removed); True when this changed the file."""
    path = store_file(state)
    with contextlib.suppress(KumiaiError):
        if load_store(state) == store:
            return False
    if store is None:
        path.unlink()
        return True
    _write_private(path, store.model_dump_json(indent=2) + "\n")
    return True


def ensure_credentials(state: Path) -> Credentials:
    """The evidence user's keys, made once (0600 under secrets/)."""
    path = credentials_file(state)
    if not path.exists():
        alphabet = string.ascii_uppercase + string.digits
        keys = {
            "access_key": "".join(secrets.choice(alphabet) for _ in range(20)),
            "secret_key": secrets.token_urlsafe(30),
        }
        _write_private(path, json.dumps(keys) + "\n")
    return load_credentials(state)


def load_credentials(state: Path) -> Credentials:
    path = credentials_file(state)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(str(data["access_key"]), str(data["secret_key"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KumiaiError(
            f"the evidence store's keys {path} cannot be read ({type(exc).__name__}); onboard again to set them"
        ) from None


# --- reading the anchor back (pure)


@dataclass(frozen=True)
class AnchoredHead:
    """The version holding the highest head ever anchored, and what looks tampered with on the way."""

    key: str | None
    version_id: str | None
    problems: list[str]
    later_versions: tuple[str, ...] = ()  # the same key written again: must hold the same head


def newest_anchored(versions: Iterable[Mapping[str, Any]], markers: Iterable[Mapping[str, Any]]) -> AnchoredHead:
    """From a listing of every version and delete marker under ANCHOR_PREFIX: the highest head's key and its first
    version (the one written with the record; later versions of the same key are rewrites)."""
    problems = []
    by_key: dict[str, list[Mapping[str, Any]]] = {}
    for v in versions:
        key = str(v.get("Key", ""))
        if _HEAD_KEY.match(key) is None:
            problems.append(f"{key} is not a head kumiai writes")
            continue
        by_key.setdefault(key, []).append(v)
    for m in markers:
        problems.append(f"{m.get('Key')} has a delete marker: someone tried to remove an anchored head")
    if not by_key:
        return AnchoredHead(None, None, problems)
    key = max(by_key)
    ordered = sorted(by_key[key], key=lambda v: v["LastModified"])
    later = tuple(str(v.get("VersionId")) for v in ordered[1:])
    return AnchoredHead(key, str(ordered[0].get("VersionId")), problems, later)


# --- the controller's copies (boto3, imported only when a store is configured)


class EvidenceMirror:
    """The other site's evidence bucket, as the evidence user."""

    def __init__(self, store: EvidenceStore, credentials: Credentials) -> None:
        self.store = store
        self.credentials = credentials
        self._client: Any = None

    @property
    def where(self) -> str:
        return self.store.where

    def _s3(self) -> Any:
        if self._client is None:
            from kumiai.objectstore.s3 import client

            # A store that is down must not hold up a command for long: one attempt, a short connect timeout.
            self._client = client(self.store.layout(), self.credentials, attempts=1, connect_timeout=5)
        return self._client

    def put(self, key: str, body: bytes) -> None:
        import botocore.exceptions

        try:
            self._s3().put_object(Bucket=self.store.bucket, Key=key, Body=body)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise KumiaiError(f"{key} could not be copied to {self.where}: {exc}") from None

    def put_head(self, seq: int, body: bytes) -> None:
        self.put(head_key(seq), body)

    def newest_head(self) -> tuple[bytes | None, list[str]]:
        """The body of the highest head ever anchored (None: no head yet), and signs of tampering."""
        import botocore.exceptions

        s3 = self._s3()
        try:
            versions: list[Mapping[str, Any]] = []
            markers: list[Mapping[str, Any]] = []
            for page in s3.get_paginator("list_object_versions").paginate(
                Bucket=self.store.bucket, Prefix=ANCHOR_PREFIX
            ):
                versions += page.get("Versions", [])
                markers += page.get("DeleteMarkers", [])
            found = newest_anchored(versions, markers)
            if found.key is None:
                return None, found.problems
            bodies = [
                bytes(s3.get_object(Bucket=self.store.bucket, Key=found.key, VersionId=v)["Body"].read())
                for v in (found.version_id, *found.later_versions)
            ]
            problems = list(found.problems)
            if len(set(bodies)) > 1:
                problems.append(f"{found.key} was written again with another head: someone rewrote the anchor")
            return bodies[0], problems
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise KumiaiError(f"the anchor in {self.where} cannot be read: {exc}") from None


def mirror_for(state: Path) -> EvidenceMirror | None:
    """The mirror this state directory's controller writes to; None when no object store is configured."""
    store = load_store(state)
    if store is None:
        return None
    return EvidenceMirror(store, load_credentials(state))


def publish_evidence(files: Sequence[Path], state: Path, evidence_dir: Path) -> list[str]:
    """Copy evidence files to the other site's bucket; why any could not be (the local files stay either way)."""
    try:
        mirror = mirror_for(state)
    except KumiaiError as exc:
        return [exc.message]
    if mirror is None:
        return []
    problems = []
    for path in files:
        try:
            mirror.put(evidence_key(path, evidence_dir), path.read_bytes())
        except (KumiaiError, OSError) as exc:
            problems.append(exc.message if isinstance(exc, KumiaiError) else str(exc))
    return problems


def copy_evidence(*files: Path) -> None:
    """Evidence files just written under the evidence directory, copied to the other site's bucket when there is
    one; a copy that fails is a warning (the evidence is kept here either way)."""
    for problem in publish_evidence(files, paths.state_dir(), paths.evidence_dir()):
        err.print(f"warning: evidence not copied to the other site: {problem}", markup=False)

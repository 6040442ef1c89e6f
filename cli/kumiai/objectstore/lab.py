"""The lab's own object store per site (roles/ceph_rgw runs it): where it listens, its certificates, its users.

The site's `object_storage.endpoint` in consortium.yaml says where the lab runs radosgw, so the same address is
what production code would call; it must be an address of the site's own loopback network.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from kumiai.datalayer.topology import ObjectStoreLayout, Topology
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory
from kumiai.models import Site
from kumiai.objectstore.store import Credentials
from kumiai.pki import ensure_ca, ensure_server_cert

# pgBackRest's repo path inside a town's bucket.
S3_REPO_PATH = Path("/pgbackrest")
# The account owning every town bucket (roles/ceph_rgw creates it).
OWNER_UID = "kumiai-admin"
RADOSGW_ADMIN = "/usr/bin/radosgw-admin"


def lab_object_store(lab_dir: Path, site: Site, inv: Inventory) -> ObjectStoreLayout:
    storage = site.object_storage
    index = inv.consortium.sites.index(site)
    url = urllib.parse.urlsplit(storage.endpoint or "")
    try:
        address = ipaddress.ip_address(url.hostname or "")
    except ValueError:
        address = None
    if address is None or address not in site.db_network or url.path not in ("", "/"):
        raise InputError(
            Problem(
                str(inv.root / "consortium.yaml"),
                f"sites[{index}].object_storage.endpoint",
                f"the lab runs the site's object store itself: give https://ADDRESS:PORT with an address of the "
                f"site's db_network {site.db_network} (e.g. https://{site.db_network.network_address + 3}:7443), "
                f"got {storage.endpoint!r}",
            )
        )
    return ObjectStoreLayout(
        host=str(address),
        port=url.port or 443,
        region=storage.region or "",
        bucket_prefix=storage.bucket_prefix or "",
        lock_mode=inv.consortium.object_lock_mode,
        ca_file=lab_dir / "ca" / "ca.crt",
        run_dir=lab_dir / site.id / "objectstore",
    )


def certificate(store: ObjectStoreLayout) -> tuple[Path, Path]:
    """The server certificate and key radosgw presents."""
    assert store.run_dir is not None
    return store.run_dir / "tls" / "server.crt", store.run_dir / "tls" / "server.key"


def lab_store_vars(store: ObjectStoreLayout) -> dict[str, Any]:
    """What roles/ceph_rgw needs to run a site's object store in the lab (the site's `kumiai_object_store`)."""
    assert store.run_dir is not None and store.ca_file is not None
    cert, key = certificate(store)
    return {
        "address": store.host,
        "port": store.port,
        "dir": str(store.run_dir),
        "certificate": str(cert),
        "private_key": str(key),
        "ca_file": str(store.ca_file),
    }


def ensure_lab_certificates(topology: Topology) -> None:
    """The lab CA and each lab object store's certificate, before the stores start (kept while still valid)."""
    for site in topology.sites:
        store = site.object_store
        if store is None or store.run_dir is None or store.ca_file is None:
            continue
        ca = ensure_ca(store.ca_file.parent, "kumiai lab CA")
        cert, _ = certificate(store)
        ensure_server_cert(ca, cert.parent, store.host)


class RadosgwAdmin:
    """kumiai.objectstore.store.StoreAdmin for a lab site's Ceph RGW, by radosgw-admin with the site's ceph.conf (S3
    has no API for users). A production target does this through its store's own admin API."""

    def __init__(self, store: ObjectStoreLayout) -> None:
        assert store.run_dir is not None
        self.conf = store.run_dir / "ceph.conf"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RADOSGW_ADMIN, "--conf", str(self.conf), *args], capture_output=True, text=True, timeout=120, check=False
        )

    def _keys(self, uid: str) -> list[dict[str, str]] | None:
        done = self._run("user", "info", "--uid", uid)
        if done.returncode != 0:
            return None
        return list(json.loads(done.stdout).get("keys", []))

    def owner(self) -> Credentials:
        keys = self._keys(OWNER_UID)
        if not keys:
            raise KumiaiError(f"the object store ({self.conf}) has no user {OWNER_UID}: run `kumiai lab up`")
        return Credentials(keys[0]["access_key"], keys[0]["secret_key"])

    def ensure_user(self, uid: str, credentials: Credentials) -> bool:
        keys = self._keys(uid)
        if keys is not None and any(
            k["access_key"] == credentials.access_key and k["secret_key"] == credentials.secret_key for k in keys
        ):
            return False
        verb = ["user", "create", "--display-name", uid] if keys is None else ["key", "create", "--key-type", "s3"]
        done = self._run(
            *verb, "--uid", uid, "--access-key", credentials.access_key, "--secret-key", credentials.secret_key
        )
        if done.returncode != 0:
            # radosgw-admin repeats the keys in its output: never pass it on.
            raise KumiaiError(f"radosgw-admin could not set up the S3 user {uid} (exit {done.returncode})")
        return True

    def disable_user(self, uid: str) -> bool:
        done = self._run("user", "info", "--uid", uid)
        if done.returncode != 0:
            return False  # no such user: nothing can sign in as it
        info = json.loads(done.stdout)
        changed = False
        if not info.get("suspended"):
            self._check(self._run("user", "suspend", "--uid", uid), f"suspend the S3 user {uid}")
            changed = True
        for key in info.get("keys", []):
            self._check(
                self._run("key", "rm", "--uid", uid, "--key-type", "s3", "--access-key", key["access_key"]),
                f"remove a key of the S3 user {uid}",
            )
            changed = True
        return changed

    @staticmethod
    def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            # radosgw-admin may repeat keys in its output: never pass it on.
            raise KumiaiError(f"radosgw-admin could not {what} (exit {done.returncode})")

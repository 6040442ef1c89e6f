"""Patroni's REST API: the cluster view, and cluster-wide settings changed on a running cluster.

Cluster-wide settings (standby_cluster, synchronous_mode, slots) live in the DCS; `PATCH /config` changes them on a
running cluster (Patroni merges the patch, and a null removes a key). Promotion and demotion of a site are such
changes: see `desired_config` for what each role of a site means.

The REST API is HTTPS, verified against the consortium CA (the member's `tls`); every state-changing call carries
the town's REST credentials (basic auth: PATRONI_REST_USER and the town's patroni_rest_password), which Patroni
demands of every POST, PUT, PATCH and DELETE; reading needs none.
"""

from __future__ import annotations

import base64
import functools
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from kumiai.datalayer.topology import PATRONI_REST_USER, PG_PORT, MemberLayout, TownLayout, slot_name
from kumiai.errors import KumiaiError


@functools.cache
def _context(ca_file: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def tls_context(member: MemberLayout) -> ssl.SSLContext | None:
    """The TLS context verifying the member's REST API against the consortium CA (None: plain HTTP)."""
    return _context(str(member.tls.ca_file)) if member.tls else None


def auth_header(password: str) -> dict[str, str]:
    token = base64.b64encode(f"{PATRONI_REST_USER}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def open_member(
    member: MemberLayout,
    path: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    password: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """An open response of the member's REST API (a context manager); raises urllib's errors."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(auth_header(password) if password else {})}
    req = urllib.request.Request(f"{member.rest_url}{path}", data=data, method=method, headers=headers)
    return urllib.request.urlopen(req, timeout=timeout, context=tls_context(member))


def _request(
    member: MemberLayout,
    path: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    password: str | None = None,
    timeout: float = 5.0,
) -> Any:
    with open_member(member, path, method=method, body=body, password=password, timeout=timeout) as resp:
        text = resp.read()
    return json.loads(text) if text.strip() else None


def cluster_view(members: Sequence[MemberLayout], timeout: float = 2.0) -> dict[str, Any] | None:
    """The cluster view from the first member that answers (any member answers for the whole cluster)."""
    for m in members:
        try:
            return _request(m, "/cluster", timeout=timeout)
        except (OSError, urllib.error.URLError, ValueError):
            continue
    return None


def get_config(members: Sequence[MemberLayout]) -> dict[str, Any]:
    """The cluster-wide (dynamic) configuration, from the first member that answers."""
    for m in members:
        try:
            return dict(_request(m, "/config"))
        except (OSError, urllib.error.URLError, ValueError, TypeError):
            continue
    raise KumiaiError(f"no member of {members[0].town} at {members[0].site} answers on Patroni's REST API")


def patch_config(members: Sequence[MemberLayout], patch: dict[str, Any], *, password: str) -> dict[str, Any]:
    """PATCH /config through the first member that answers, authenticated with the town's REST password; returns
    the configuration Patroni now holds."""
    errors = []
    for m in members:
        try:
            return dict(_request(m, "/config", method="PATCH", body=patch, password=password, timeout=10.0))
        except urllib.error.HTTPError as exc:
            errors.append(f"{m.name}: HTTP {exc.code}")
        except (OSError, urllib.error.URLError, ValueError, TypeError) as exc:
            errors.append(f"{m.name}: {exc}")
    raise KumiaiError(f"could not change the cluster settings of {members[0].town} at {members[0].site}: {errors}")


def desired_config(town: TownLayout, site_id: str) -> dict[str, Any]:
    """The cluster-wide settings of the town's cluster at a site, for the town's current placement.

    The primary site's cluster runs synchronous mode inside the site and keeps a permanent slot for the DR site's
    standby cluster; the DR site's cluster is a standby cluster streaming from the primary site's members through
    that slot. Nulls remove a key, so the same patch turns one role into the other.

    Both sites bound the WAL kept for the other by the town's tier (`wal_parameters`): a cluster keeps them across
    a failover, and a standby cluster keeps them when it becomes the primary one.
    """
    if site_id == town.primary_site:
        return {
            "standby_cluster": None,
            "synchronous_mode": True,
            "slots": {slot_name(town.dr_site): {"type": "physical"}},
            # Patroni drops a slot that PostgreSQL invalidated (and creates it anew at once), which would erase the
            # evidence that the DR standby lost its WAL: kumiai keeps it (status reports it) until onboard re-clones.
            "ignore_slots": [{"name": slot_name(town.dr_site), "type": "physical"}],
            "postgresql": {"parameters": wal_parameters(town)},
        }
    return {
        "standby_cluster": {
            "host": ",".join(m.address for m in town.at(town.primary_site)),
            "port": PG_PORT,
            "primary_slot_name": slot_name(site_id),
            "create_replica_methods": ["basebackup"],
        },
        "synchronous_mode": False,
        "slots": None,
        "ignore_slots": None,
        "postgresql": {"parameters": wal_parameters(town)},
    }


def wal_parameters(town: TownLayout) -> dict[str, str]:
    """PostgreSQL settings bounding pg_wal by the town's tier: the DR slot is invalidated rather than fill the disk."""
    return {
        "max_slot_wal_keep_size": f"{town.wal.max_slot_wal_keep_size}MB",
        "max_wal_size": f"{town.wal.max_wal_size}MB",
    }


def config_differs(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """Keys of `desired` whose value the running configuration does not have (a null: the key is absent).

    A mapping matches when each of its keys matches: PATCH merges mappings, so keys the running configuration has
    besides (e.g. the other PostgreSQL parameters) are not a difference."""
    return sorted(k for k, v in desired.items() if not _holds(current.get(k), v))


def _holds(current: Any, desired: Any) -> bool:
    if isinstance(desired, dict) and desired:
        return isinstance(current, dict) and all(_holds(current.get(k), v) for k, v in desired.items())
    # An absent key, null, false and an empty mapping all mean "not set".
    return (current or None) == (desired or None)

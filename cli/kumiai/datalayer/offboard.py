"""Offboarding a town from the data layer: what of it exists where (pure), and removing each piece of it.

`removal_plan` lists everything kumiai put in place for a town at every site of a topology: its members' programs
and directories, its scheduled backup jobs, its keys in each site's DCS (the Patroni namespace of the town), its
posix repo contents and its S3 buckets and user. Each removal below is idempotent: run again after an interruption,
it removes what is left and reports what it removed, nothing when nothing is left.
"""

from __future__ import annotations

import base64
import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumiai.datalayer.secrets import town_key_file
from kumiai.datalayer.target import ServiceManager
from kumiai.datalayer.topology import SiteLayout, Topology
from kumiai.errors import KumiaiError

# Patroni's namespace per site (playbooks/vars/town_member.yml: patroni_cluster_namespace); the scope is the town id.
DCS_NAMESPACE = "/kumiai/"


def dcs_prefix(site_id: str, town_id: str) -> str:
    """The town's keys in a site's etcd. The trailing slash keeps town `naka` from reaching town `nakai`'s keys."""
    return f"{DCS_NAMESPACE}{site_id}/{town_id}/"


@dataclass(frozen=True)
class SiteRemoval:
    """What of one town is at one site."""

    site: str
    programs: tuple[str, ...]  # supervisord programs (systemd units) of its members
    job_files: tuple[Path, ...]  # its members' scheduled backup jobs
    dcs_prefix: str
    etcd_endpoint: str
    directories: tuple[Path, ...]  # its members' directories and drill scratch space at this site
    posix_repo: tuple[Path, ...]  # its stanza's directories in the site's posix repo (none for S3)
    bucket: str | None  # its bucket in the site's object store (locked objects: they stay until retention ends)


@dataclass(frozen=True)
class Removal:
    town: str
    sites: tuple[SiteRemoval, ...]
    key_files: tuple[Path, ...]  # files carrying the town's backup cipher key on this controller and target
    s3_user: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "town": self.town,
            "sites": [
                {
                    "site": s.site,
                    "programs": list(s.programs),
                    "job_files": [str(p) for p in s.job_files],
                    "dcs_prefix": s.dcs_prefix,
                    "directories": [str(p) for p in s.directories],
                    "posix_repo": [str(p) for p in s.posix_repo],
                    "bucket": s.bucket,
                }
                for s in self.sites
            ],
            "key_files": [str(p) for p in self.key_files],
            "s3_user": self.s3_user,
        }


def _town_dirs(site: SiteLayout, town_id: str, member_dirs: list[Path]) -> tuple[Path, ...]:
    # Members live in <site>/towns/<town>/member<i>; the town directory above them is the town's alone.
    parents = {d.parent for d in member_dirs if d.parent.name == town_id}
    return (*sorted(parents or set(member_dirs)), site.dir / "drills" / town_id)


def removal_plan(topology: Topology, town_id: str, town_sites: list[str], s3_user: str) -> Removal:
    """Everything of `town_id` in `topology` at `town_sites` (its sites from the inventory). Its members are known
    while the town holds its place in the topology (the lab's slot); after that only site-wide pieces remain."""
    layout = topology.towns.get(town_id)
    sites = []
    for site in topology.sites:
        if site.id not in town_sites:
            continue
        members = layout.at(site.id) if layout else ()
        store = site.object_store
        sites.append(
            SiteRemoval(
                site=site.id,
                programs=tuple(m.program for m in members),
                job_files=tuple(site.backup_jobs_dir / f"{m.name}.json" for m in members),
                dcs_prefix=dcs_prefix(site.id, town_id),
                etcd_endpoint=site.etcd_endpoint,
                directories=_town_dirs(site, town_id, [m.dir for m in members]) if members else (),
                posix_repo=() if store else (site.repo_path / "archive" / town_id, site.repo_path / "backup" / town_id),
                bucket=store.bucket(town_id) if store else None,
            )
        )
    configs = tuple(m.pgbackrest_config for m in layout.members) if layout else ()
    has_store = any(s.bucket for s in sites)
    return Removal(
        town=town_id,
        sites=tuple(sites),
        # Its vault, the vault's own key (keys escrowed from it stay with their holders), its pgBackRest configs.
        key_files=(topology.secrets_file(town_id), town_key_file(town_id), *configs),
        s3_user=s3_user if has_store else None,
    )


def remove_job_files(site: SiteRemoval) -> list[str]:
    """The town's scheduled backups at the site: the scheduler re-reads its directory, so they stop firing."""
    removed = []
    for path in site.job_files:
        if path.exists():
            path.unlink()
            removed.append(path.name)
    return removed


def remove_programs(services: ServiceManager, site: SiteRemoval) -> list[str]:
    """Stop the town's programs at the site and make its process manager forget them."""
    known = services.states(site.site)
    present = [p for p in site.programs if p in known]
    services.remove(site.site, site.programs)
    return present


def _etcd(endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{endpoint}/v3/kv/{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read() or b"{}"))
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise KumiaiError(f"etcd at {endpoint} did not answer ({exc}); the town's keys there are not removed") from None


def _range(prefix: str) -> dict[str, str]:
    raw = prefix.encode()
    end = raw[:-1] + bytes([raw[-1] + 1])
    return {"key": base64.b64encode(raw).decode(), "range_end": base64.b64encode(end).decode()}


def dcs_keys(endpoint: str, prefix: str) -> list[str]:
    """Keys under `prefix` in the etcd at `endpoint` (v3 JSON gateway)."""
    data = _etcd(endpoint, "range", {**_range(prefix), "keys_only": True})
    return sorted(base64.b64decode(kv["key"]).decode() for kv in data.get("kvs", []))


def remove_dcs_keys(site: SiteRemoval) -> int:
    """Delete the town's keys in the site's etcd (after its Patroni stopped, else Patroni writes them again)."""
    data = _etcd(site.etcd_endpoint, "deleterange", _range(site.dcs_prefix))
    return int(data.get("deleted", 0))


def remove_paths(paths: tuple[Path, ...]) -> list[str]:
    removed = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            removed.append(str(path))
        elif path.exists() or path.is_symlink():
            path.unlink()
            removed.append(str(path))
    return removed

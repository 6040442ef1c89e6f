"""Offboarding a town from the data layer: what of it exists where (pure), and removing each piece of it.

`removal_plan` lists everything kumiai put in place for a town at every site of a topology: its members' programs
and directories, its scheduled backup jobs, its keys in each site's DCS (the Patroni namespace of the town), its
posix repo contents and its S3 buckets and user. Each removal below is idempotent: run again after an interruption,
it removes what is left and reports what it removed, nothing when nothing is left.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kumiai.datalayer.etcd import EtcdPki, town_prefix, town_user
from kumiai.datalayer.secrets import town_key_file
from kumiai.datalayer.target import ServiceManager
from kumiai.datalayer.topology import SiteLayout, Topology
from kumiai.errors import KumiaiError


def dcs_prefix(site_id: str, town_id: str) -> str:
    """The town's keys in a site's etcd (the prefix its etcd role reaches; see kumiai.datalayer.etcd)."""
    return town_prefix(site_id, town_id)


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
                posix_repo=() if store else (site.repo_path / town_id,),  # the town's own repo directory
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


ETCDCTL = "/usr/bin/etcdctl"


def _etcdctl(pki: EtcdPki, endpoint: str, *args: str) -> str:
    """etcdctl (v3, gRPC) at `endpoint` as etcd's root: the controller's client certificate with CN=root (etcd's
    JSON gateway refuses certificates that name a user, so this goes over gRPC)."""
    cmd = [
        ETCDCTL,
        f"--endpoints=https://{endpoint}",
        f"--cacert={pki.ca_file}",
        f"--cert={pki.root.cert}",
        f"--key={pki.root.key}",
        "--dial-timeout=5s",
        "--command-timeout=20s",
        *args,
    ]
    try:
        done = subprocess.run(
            cmd, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KumiaiError(f"etcd at {endpoint} did not answer ({exc}); the town's keys there are not removed") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise KumiaiError(f"etcdctl {args[0]} at {endpoint} failed: {last}")
    return done.stdout


def dcs_keys(pki: EtcdPki, endpoint: str, prefix: str) -> list[str]:
    """Keys under `prefix` in the etcd at `endpoint`."""
    out = _etcdctl(pki, endpoint, "get", "--prefix", "--keys-only", prefix)
    return sorted(line for line in out.splitlines() if line)


def remove_dcs_keys(pki: EtcdPki, site: SiteRemoval) -> int:
    """Delete the town's keys in the site's etcd (after its Patroni stopped, else Patroni writes them again)."""
    out = _etcdctl(pki, site.etcd_endpoint, "del", "--prefix", site.dcs_prefix)
    return int(out.strip() or 0)


def remove_etcd_identity(pki: EtcdPki, site: SiteRemoval, town_id: str) -> list[str]:
    """The town's etcd user and role at the site (kumiai.datalayer.etcd.town_user), when they exist."""
    name = town_user(town_id)
    removed = []
    for kind in ("user", "role"):
        listed = _etcdctl(pki, site.etcd_endpoint, kind, "list").split()
        if name in listed:
            _etcdctl(pki, site.etcd_endpoint, kind, "delete", name)
            removed.append(f"{kind} {name}")
    return removed


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

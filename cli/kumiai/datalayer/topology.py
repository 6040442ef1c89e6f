"""Where a data layer's pieces are: each site's services, each town's members and repos. Pure data.

A target (see target.py) builds a Topology from the inventory: the lab derives addresses from its slots and
directories from its lab directory; real hosts take them from the host inventory. Everything that talks to a
town's databases reads addresses, ports and paths from here, never from one target's conventions.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kumiai.models import TIER_WAL, Tier, WalBudget

MEMBERS_PER_SITE = 2
PG_PORT = 5432
REST_PORT = 8008
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
SUPERUSER = "postgres"
# The user of Patroni's REST API for state-changing calls (its password is each town's patroni_rest_password).
PATRONI_REST_USER = "kumiai"


def sql_name(town_id: str) -> str:
    """Town ids may hold '-', which SQL identifiers should not."""
    return town_id.replace("-", "_")


# Linux user and group names hold at most 32 characters (useradd refuses longer ones).
OS_NAME_MAX = 32
OS_USER_PREFIX = "kumiai-"
# Characters of a long town id kept in its OS user name, before '_' and a hash of the whole id.
OS_USER_KEPT = OS_NAME_MAX - len(OS_USER_PREFIX) - 1 - 8


def os_user(town_id: str) -> str:
    """The system user (and group) owning and running a town's PostgreSQL, Patroni and pgBackRest.

    `kumiai-<id>` while it fits in 32 characters (ids up to 25 characters); a longer id keeps its first 16
    characters and adds '_' and 8 hex digits of its SHA-256: `kumiai-<id[:16]>_<hash>`, exactly 32. Town ids hold no
    '_', so the two forms never meet, and one id always gives the same name (on every host, in every lab)."""
    name = OS_USER_PREFIX + town_id
    if len(name) <= OS_NAME_MAX:
        return name
    digest = hashlib.sha256(town_id.encode()).hexdigest()[:8]
    return f"{OS_USER_PREFIX}{town_id[:OS_USER_KEPT]}_{digest}"


def group_name(text: str) -> str:
    """Ansible group names allow letters, digits and '_'."""
    return text.replace("-", "_")


@dataclass(frozen=True)
class ObjectStoreLayout:
    """A site's S3 endpoint holding the towns' repos (one bucket per town), and how its certificate is checked."""

    host: str
    port: int
    region: str
    bucket_prefix: str
    lock_mode: str
    ca_file: Path | None  # None: the system's trust store
    run_dir: Path | None = None  # the lab runs this store itself (roles/ceph_rgw), from here

    @property
    def endpoint_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def bucket(self, town_id: str) -> str:
        return f"{self.bucket_prefix}-{town_id}"


@dataclass(frozen=True)
class SiteLayout:
    id: str
    role: str
    network: ipaddress.IPv4Network
    dir: Path
    repo_path: Path
    etcd_address: str
    object_store: ObjectStoreLayout | None = None  # None: posix repos, one directory per town below repo_path

    @property
    def host(self) -> str:
        """The site's service host in the Ansible inventory."""
        return self.id

    @property
    def etcd_endpoint(self) -> str:
        return f"{self.etcd_address}:{ETCD_CLIENT_PORT}"

    @property
    def etcd_name(self) -> str:
        return self.id

    @property
    def etcd_data_dir(self) -> Path:
        return self.dir / "etcd"

    @property
    def supervisor_dir(self) -> Path:
        return self.dir / "supervisor"

    @property
    def supervisor_config(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def backup_jobs_dir(self) -> Path:
        """Definitions of the scheduled backups of the town members at this site (kumiai.dr.scheduler)."""
        return self.dir / "backup-jobs"


@dataclass(frozen=True)
class ControllerTLS:
    """How kumiai itself reaches the members: the consortium CA it verifies them against and its own client
    certificate (CN SUPERUSER: PostgreSQL 15 matches the CN of a scram-sha-256 line's certificate against the role
    itself, without maps)."""

    ca_file: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class MemberLayout:
    town: str
    site: str
    index: int
    address: str
    dir: Path
    tls: ControllerTLS | None = None  # None: plain HTTP to Patroni (only layouts built without a CA)

    @property
    def name(self) -> str:
        return f"{self.town}-{self.site}-{self.index}"

    @property
    def program(self) -> str:
        """The supervisord program (or systemd unit) running this member's Patroni."""
        return f"patroni-{self.name}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        # The member directory is distinct per member, which is what PostgreSQL needs of a socket directory.
        return self.dir

    @property
    def patroni_config(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def pgbackrest_config(self) -> Path:
        return self.dir / "pgbackrest.conf"

    @property
    def rest_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}:{REST_PORT}"

    @property
    def tls_dir(self) -> Path:
        """Where the member's host keeps its CA, server and client certificates (installed by the role)."""
        return self.dir / "tls"


@dataclass(frozen=True)
class RepoLayout:
    """One pgBackRest repo of a town: numbered by site (kumiai.datalayer.hostvars.repo_number)."""

    number: int
    site: str
    path: Path  # in an S3 repo, the path inside the bucket
    bucket: str | None = None


@dataclass(frozen=True)
class TownLayout:
    id: str
    slot: int
    primary_site: str
    dr_site: str
    members: tuple[MemberLayout, ...]
    repos: tuple[RepoLayout, ...]
    tier: Tier = Tier.s  # the town's tier (models.Town.tier); the smallest WAL budget when not given

    @property
    def wal(self) -> WalBudget:
        """The WAL the town's primary keeps at most for its DR site (slot and archive queue)."""
        return TIER_WAL[self.tier]

    @property
    def database(self) -> str:
        return sql_name(self.id)

    @property
    def app_user(self) -> str:
        return f"{sql_name(self.id)}_app"

    @property
    def os_user(self) -> str:
        """The town's own OS user and group: its processes run as it, its files and repos belong to it."""
        return os_user(self.id)

    @property
    def dr_slot_name(self) -> str:
        """Permanent slot at the primary site through which the DR standby cluster streams."""
        return slot_name(self.dr_site)

    def at(self, site_id: str) -> tuple[MemberLayout, ...]:
        return tuple(m for m in self.members if m.site == site_id)

    def repo(self, site_id: str) -> RepoLayout:
        return next(r for r in self.repos if r.site == site_id)

    @property
    def sites(self) -> tuple[str, ...]:
        """The town's sites in consortium order (the order of its repos)."""
        return tuple(r.site for r in self.repos)


def slot_name(site_id: str) -> str:
    """The permanent replication slot kept for the standby cluster at `site_id`."""
    return f"kumiai_dr_{sql_name(site_id)}"


@dataclass(frozen=True)
class Topology:
    """A target's sites and the towns it holds (only towns that are onboarded, or being onboarded)."""

    dir: Path
    sites: tuple[SiteLayout, ...]
    towns: Mapping[str, TownLayout]

    def site(self, site_id: str) -> SiteLayout:
        return next(s for s in self.sites if s.id == site_id)

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def pki_dir(self) -> Path:
        """Certificates kumiai issues on the controller: members/<member>/ and controller/ (kumiai.datalayer.certs)."""
        return self.dir / "pki"

    @property
    def ca_dir(self) -> Path:
        """The consortium CA (kumiai.pki), the one CA of every channel."""
        return self.dir / "ca"

    def secrets_file(self, town_id: str) -> Path:
        return self.secrets_dir / f"{town_id}.vault.yml"

"""Typed models of the consortium description (inventories/<name>/consortium.yaml and towns/<id>.yaml).

Pure: no file or process access here. The loader in inventory.py reads the files and reports problems.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kumiai.catalogue import Segment, standard_catalogue

TOWN_ID_PATTERN = r"^[a-z][a-z0-9-]{1,30}$"
SITE_ID_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
# The consortium's name is a path component (manifests), part of the etcd cluster token and of the towns' RBAC
# group names, and reaches Ansible: nothing but what all of them carry as is.
CONSORTIUM_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,40}$"
# Context names as kubeconfig tools write them (EKS ARNs, gke_project_zone_name, user@cluster), nothing more.
KUBE_CONTEXT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:/-]{0,252}$"
STORAGE_PATH_PATTERN = r"^[A-Za-z0-9_./-]{1,255}$"
S3_ENDPOINT_PATTERN = r"^https://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)*/?$"
S3_REGION_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}$"
BUCKET_PREFIX_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,40}$"
# Absolute backup directories are for real hosts only, and never a directory the system or its users own: the
# data layer makes the directory its own (owner, mode), so these would break the host or expose it.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run",
    "/sbin", "/sys", "/tmp", "/usr", "/var/log", "/var/run", "/var/tmp",
)  # fmt: skip
SYSTEM_DIRS = ("/", "/media", "/mnt", "/opt", "/srv", "/var", "/var/lib")
# ASCII punctuation a name may hold; anything else in ASCII (quotes, braces, %, $, ;, <, >, |, \) is refused so
# that no template, shell or config format downstream can read a name as syntax.
NAME_PUNCTUATION = " ()-_.,&/:"
# Minute, hour, day of month, month, day of week (0 and 7 are Sunday).
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CRON_ITEM = r"(\*|([0-9]+)(-([0-9]+))?)(/([0-9]+))?"

# Counts and durations must be YAML integers: "7", 7.5 or true are mistakes, not numbers to coerce.
Count = Annotated[int, Field(strict=True)]


def check_digit(first_five: str) -> int:
    """Check digit of a 全国地方公共団体コード: (11 - (6*d1 + 5*d2 + 4*d3 + 3*d4 + 2*d5) % 11) % 10."""
    weights = (6, 5, 4, 3, 2)
    total = sum(w * int(d) for w, d in zip(weights, first_five, strict=True))
    return (11 - total % 11) % 10


def with_check_digit(first_five: str) -> str:
    """The six-digit code for a five-digit one."""
    return f"{first_five}{check_digit(first_five)}"


def _cron_field_ok(field: str, low: int, high: int) -> bool:
    for item in field.split(","):
        m = re.fullmatch(CRON_ITEM, item)
        if m is None:
            return False
        first, last, step = m.group(2), m.group(4), m.group(6)
        values = [int(v) for v in (first, last) if v is not None]
        if any(not low <= v <= high for v in values) or (len(values) == 2 and values[0] > values[1]):
            return False
        if step is not None and int(step) < 1:
            return False
    return True


def _visible(c: str) -> bool:
    if c.isascii():
        return c.isalnum() or c in NAME_PUNCTUATION
    # Letters, marks, digits, punctuation, symbols and spaces (e.g. the ideographic space); not control, format,
    # private-use or line/paragraph separator characters.
    category = unicodedata.category(c)
    return category[0] in "LMNPS" or category == "Zs"


def _plain_text(value: str) -> str:
    """Names end up in file headers, tables, labels and generated configs: one line of visible text."""
    if not value.strip():
        raise ValueError("must not be blank")
    wrong = sorted({c for c in value if not _visible(c)})
    if wrong:
        shown = " ".join(f"U+{ord(c):04X}" if not c.isprintable() else repr(c) for c in wrong)
        raise ValueError(
            "must be one line of text without control characters: letters, digits, spaces and "
            f"{' '.join(NAME_PUNCTUATION.strip())} only (found {shown})"
        )
    return value


def _matching(pattern: str, allowed: str) -> AfterValidator:
    """A check that the whole value matches `pattern`; the message says what is allowed in words and as the pattern."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must be {allowed} (pattern {pattern})")
        return value

    return AfterValidator(check)


def _storage_path(value: str) -> str:
    if not re.fullmatch(STORAGE_PATH_PATTERN, value):
        raise ValueError(
            f"must be a directory path of letters, digits, '.', '_', '-' and '/' (pattern {STORAGE_PATH_PATTERN})"
        )
    if value.startswith("/"):
        tree = next((t for t in SYSTEM_TREES if PurePosixPath(value).is_relative_to(t)), None)
        if tree is not None or (value.rstrip("/") or "/") in SYSTEM_DIRS:
            raise ValueError(
                f"must not be a system directory ({tree or value}): an absolute path, allowed only for real hosts, "
                "names a directory of kumiai's own, e.g. /srv/kumiai/backup"
            )
    if any(p in ("", ".", "..") for p in value.removeprefix("/").split("/")):
        raise ValueError("must not contain '..', '.' or empty components: a path confined to its base directory")
    return value


class Strict(BaseModel):
    """Base for everything read from YAML: unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteRole(StrEnum):
    primary = "primary"
    dr = "dr"


class Tier(StrEnum):
    s = "s"
    m = "m"
    l = "l"  # noqa: E741 - the tier names are s, m and l


class Isolation(StrEnum):
    namespace = "namespace"
    vcluster = "vcluster"
    dedicated_nodes = "dedicated-nodes"


STORAGE_FIELDS = {"posix": ("path",), "s3": ("endpoint", "region", "bucket_prefix")}


class ObjectStorage(Strict):
    """Where a site keeps backups: a posix path (lab) or an S3 endpoint (production)."""

    type: Literal["posix", "s3"]
    path: (
        Annotated[
            str,
            Field(
                description="posix: directory, relative to the lab data directory (absolute only on real hosts, "
                "never a system directory)"
            ),
            AfterValidator(_storage_path),
        ]
        | None
    ) = None
    endpoint: (
        Annotated[
            str,
            Field(description="s3: https endpoint"),
            _matching(S3_ENDPOINT_PATTERN, "an https:// URL of a host name or address, an optional port and path"),
        ]
        | None
    ) = None
    region: Annotated[str, _matching(S3_REGION_PATTERN, "a region name such as ap-northeast-1")] | None = None
    bucket_prefix: (
        Annotated[str, _matching(BUCKET_PREFIX_PATTERN, "lower-case letters, digits, '.' and '-' (2-41 characters)")]
        | None
    ) = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> ObjectStorage:
        needed = STORAGE_FIELDS[self.type]
        missing = [f for f in needed if not getattr(self, f)]
        if missing:
            raise ValueError(f"type {self.type} needs {', '.join(missing)}")
        foreign = [f for fields in STORAGE_FIELDS.values() for f in fields if f not in needed and getattr(self, f)]
        if foreign:
            raise ValueError(f"type {self.type} takes only {', '.join(needed)}; remove {', '.join(foreign)}")
        return self


class Site(Strict):
    id: Annotated[str, Field(pattern=SITE_ID_PATTERN)]
    role: SiteRole
    name: Annotated[str, Field(max_length=80), AfterValidator(_plain_text)] | None = None
    kube_context: Annotated[
        str, _matching(KUBE_CONTEXT_PATTERN, "a kubeconfig context name: letters, digits and _ . @ : / -")
    ]
    db_network: ipaddress.IPv4Network
    object_storage: ObjectStorage


class LocalSystem(Strict):
    """A business system the consortium runs besides the 20 standardized ones."""

    name: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_plain_text)]
    segments: Annotated[list[Segment], Field(min_length=1)] = [Segment.lgwan]


class Approver(Strict):
    """Someone who may approve a plan: `name` is their login, as `kumiai plan` records a plan's author."""

    name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")]
    role: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_plain_text)]
    ssh_key: Annotated[
        str,
        Field(
            pattern=r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|rsa-sha2-(256|512)|ssh-rsa) [A-Za-z0-9+/]+={0,2}$",
            max_length=4096,
            description="OpenSSH public key, type and base64 only (no comment)",
        ),
    ]


class Protection(Strict):
    """Backup and continuity targets (RPO/RTO as in IPA's 非機能要求グレード)."""

    backup_schedule: Annotated[str, Field(description="cron expression, five fields")]
    retention_full: Annotated[Count, Field(ge=1, le=400)]
    rpo_seconds: Annotated[Count, Field(ge=0, le=7 * 86400)]
    rto_seconds: Annotated[Count, Field(ge=1, le=30 * 86400)]
    immutable_days: Annotated[Count, Field(ge=0, le=3650)]

    @field_validator("backup_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        # Split on spaces only: a tab or a line break would reach the schedulers' files.
        fields = [f for f in value.split(" ") if f]
        if len(fields) != 5 or not all(
            _cron_field_ok(f, low, high) for f, (low, high) in zip(fields, CRON_RANGES, strict=True)
        ):
            raise ValueError(
                "must be a cron expression of five fields (minute 0-59, hour 0-23, day 1-31, month 1-12, "
                f"weekday 0-7) made of numbers, *, ranges a-b, lists a,b and steps /n, e.g. '0 2 * * *'; got {value!r}"
            )
        return value


class TownDefaults(Strict):
    """Values a town file may leave out."""

    tier: Tier | None = None
    isolation: Isolation | None = None
    protection: Protection | None = None


class Consortium(Strict):
    name: Annotated[
        str, _matching(CONSORTIUM_NAME_PATTERN, "a lower-case letter, then lower-case letters, digits or '-' (2-41)")
    ]
    sites: list[Site]  # one primary and at least one dr: checked below, with a message saying so
    local_systems: list[LocalSystem] = []
    defaults: TownDefaults = TownDefaults()
    approvers: list[Approver] = []  # who may sign plans (kumiai approve); names and keys unique: checked below
    # S3 object lock of every backup bucket. COMPLIANCE: no credential at all can delete a backup before its
    # protection.immutable_days end; GOVERNANCE: only one granted s3:BypassGovernanceRetention can.
    object_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"

    # Field validators rather than one model validator, so each problem is reported at its field path.
    @field_validator("sites")
    @classmethod
    def _sites(cls, sites: list[Site]) -> list[Site]:
        wrong = []
        ids = [s.id for s in sites]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            wrong.append(f"site ids must be unique, repeated: {', '.join(dupes)}")
        primaries = [s.id for s in sites if s.role is SiteRole.primary]
        if len(primaries) != 1:
            found = ", ".join(primaries) or "none"
            wrong.append(f"exactly one site must have role 'primary', found {len(primaries)} ({found})")
        if not any(s.role is SiteRole.dr for s in sites):
            wrong.append("at least one site must have role 'dr' (the remote copy), found none")
        if wrong:
            raise ValueError("; ".join(wrong))
        return sites

    @field_validator("local_systems")
    @classmethod
    def _local_systems(cls, local: list[LocalSystem]) -> list[LocalSystem]:
        standard = standard_catalogue()
        clash = [ls.name for ls in local if ls.name in standard]
        if clash:
            raise ValueError(
                f"local_systems repeat standardized systems: {', '.join(clash)}; list only systems besides the 20"
            )
        names = [ls.name for ls in local]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"each local system is listed once, repeated: {', '.join(dupes)}")
        return local

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, approvers: list[Approver]) -> list[Approver]:
        for what, values in (("name", [a.name for a in approvers]), ("ssh_key", [a.ssh_key for a in approvers])):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"each approver's {what} is listed once, repeated: {', '.join(dupes)}")
        return approvers

    @property
    def primary_site(self) -> Site:
        return next(s for s in self.sites if s.role is SiteRole.primary)

    @property
    def dr_site(self) -> Site:
        return next(s for s in self.sites if s.role is SiteRole.dr)

    def site(self, site_id: str) -> Site:
        return next(s for s in self.sites if s.id == site_id)

    def catalogue(self) -> dict[str, frozenset[Segment]]:
        """Every system a town of this consortium may run -> the segments it may run in."""
        cat = standard_catalogue()
        cat.update({ls.name: frozenset(ls.segments) for ls in self.local_systems})
        return cat


def _catalogue(info: ValidationInfo) -> dict[str, frozenset[Segment]] | None:
    """The consortium's catalogue, passed by the loader as validation context (None: not checked)."""
    return (info.context or {}).get("catalogue")


class System(Strict):
    name: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_plain_text)]
    segment: Segment

    @field_validator("name")
    @classmethod
    def _known(cls, name: str, info: ValidationInfo) -> str:
        catalogue = _catalogue(info)
        if catalogue is not None and name not in catalogue:
            local = sorted(set(catalogue) - set(standard_catalogue()))
            raise ValueError(
                f"unknown system {name!r}: allowed are the 20 standardized systems (住民基本台帳, 戸籍, …) "
                f"and the consortium's local_systems ({', '.join(local) or 'none'})"
            )
        return name

    @field_validator("segment")
    @classmethod
    def _allowed_segment(cls, segment: Segment, info: ValidationInfo) -> Segment:
        catalogue = _catalogue(info)
        name = info.data.get("name")  # absent when the name itself was rejected
        if catalogue is None or name not in catalogue:
            return segment
        allowed = catalogue[name]
        if segment not in allowed:
            names = ", ".join(sorted(s.value for s in allowed))
            raise ValueError(f"{name} may only run in segment {names}, not {segment.value}")
        return segment


class Placement(Strict):
    """Which site serves the town now, and which holds its standby."""

    primary: Annotated[str, Field(pattern=SITE_ID_PATTERN)]
    dr: Annotated[str, Field(pattern=SITE_ID_PATTERN)]

    @model_validator(mode="after")
    def _distinct(self) -> Placement:
        if self.primary == self.dr:
            raise ValueError("primary and dr must be different sites")
        return self


class Town(Strict):
    id: Annotated[str, Field(pattern=TOWN_ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_plain_text)]
    code: Annotated[str, Field(description="6-digit 全国地方公共団体コード with check digit")]
    population: Annotated[Count, Field(gt=0, le=50_000_000)]
    systems: Annotated[list[System], Field(min_length=1)]
    tier: Tier
    isolation: Isolation
    protection: Protection
    placement: Placement | None = None

    @field_validator("code", mode="before")
    @classmethod
    def _code_type(cls, value: Any) -> Any:
        # An unquoted code is read by YAML as an integer; accept it only when no digit can have been lost.
        if isinstance(value, int) and not isinstance(value, bool) and 100000 <= value <= 999999:
            return str(value)
        if not isinstance(value, str):
            raise ValueError('must be a quoted string of 6 digits, e.g. code: "143014"')
        return value

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9]{6}", value):
            raise ValueError(f'must be 6 digits (5 digits and a check digit), got "{value}"')
        expected = check_digit(value[:5])
        if int(value[5]) != expected:
            raise ValueError(
                f"check digit of {value} is wrong: {value[:5]} takes {expected}, i.e. {value[:5]}{expected}"
            )
        return value

    @field_validator("systems")
    @classmethod
    def _unique_systems(cls, value: list[System]) -> list[System]:
        names = [s.name for s in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"each system is listed once, repeated: {', '.join(dupes)}")
        return value

    @property
    def segments(self) -> list[Segment]:
        """Segments the town uses, in the fixed order mynumber, lgwan, internet."""
        used = {s.segment for s in self.systems}
        return [seg for seg in Segment if seg in used]


# Resources per tier and segment namespace. Sized for a small town's core systems; the l tier is for towns
# above about 40,000 residents.
TIER_QUOTAS: dict[Tier, dict[str, str]] = {
    Tier.s: {
        "requests.cpu": "2",
        "requests.memory": "4Gi",
        "limits.cpu": "4",
        "limits.memory": "8Gi",
        "pods": "20",
        "persistentvolumeclaims": "10",
        "requests.storage": "100Gi",
    },
    Tier.m: {
        "requests.cpu": "4",
        "requests.memory": "8Gi",
        "limits.cpu": "8",
        "limits.memory": "16Gi",
        "pods": "40",
        "persistentvolumeclaims": "20",
        "requests.storage": "250Gi",
    },
    Tier.l: {
        "requests.cpu": "8",
        "requests.memory": "16Gi",
        "limits.cpu": "16",
        "limits.memory": "32Gi",
        "pods": "80",
        "persistentvolumeclaims": "40",
        "requests.storage": "500Gi",
    },
}

TIER_LIMITS: dict[Tier, dict[str, dict[str, str]]] = {
    Tier.s: {
        "default": {"cpu": "500m", "memory": "512Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
        "max": {"cpu": "2", "memory": "4Gi"},
    },
    Tier.m: {
        "default": {"cpu": "1", "memory": "1Gi"},
        "defaultRequest": {"cpu": "200m", "memory": "256Mi"},
        "max": {"cpu": "4", "memory": "8Gi"},
    },
    Tier.l: {
        "default": {"cpu": "1", "memory": "2Gi"},
        "defaultRequest": {"cpu": "250m", "memory": "512Mi"},
        "max": {"cpu": "8", "memory": "16Gi"},
    },
}


@dataclass(frozen=True)
class WalBudget:
    """How much WAL a town's primary may keep for its DR site, in MiB.

    - max_slot_wal_keep_size: WAL the DR slot may hold back; beyond it PostgreSQL invalidates the slot at the next
      checkpoint (the DR standby then needs a re-clone) instead of filling the disk.
    - archive_push_queue_max: WAL waiting for pgBackRest to archive it (a repo unreachable); beyond it pgBackRest
      reports the waiting WAL as archived and drops it (a gap in the archive that `backup verify` shows).
    - max_wal_size: WAL between checkpoints (PostgreSQL's soft limit).
    """

    max_slot_wal_keep_size: int
    archive_push_queue_max: int
    max_wal_size: int

    @property
    def pg_wal_bound(self) -> int:
        """The most pg_wal holds with the DR site or a repo unreachable: whatever is held back for the slot or the
        archive (they count back from the same newest WAL), plus up to two checkpoints' distance (the one being
        written while the previous one's segments wait to be removed, and the segments recycled ahead)."""
        return max(self.max_slot_wal_keep_size, self.archive_push_queue_max) + 2 * self.max_wal_size


# Sized against each tier's storage (TIER_QUOTAS requests.storage): the WAL held for the DR site stays a small part
# of the disk. A small town's database re-clones in minutes, so it loses its slot sooner than a large one.
TIER_WAL: dict[Tier, WalBudget] = {
    Tier.s: WalBudget(max_slot_wal_keep_size=512, archive_push_queue_max=512, max_wal_size=512),
    Tier.m: WalBudget(max_slot_wal_keep_size=4096, archive_push_queue_max=4096, max_wal_size=1024),
    Tier.l: WalBudget(max_slot_wal_keep_size=16384, archive_push_queue_max=16384, max_wal_size=2048),
}

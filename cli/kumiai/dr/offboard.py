"""`kumiai offboard`: a town leaves the consortium, and kumiai proves what of it is gone.

Its clusters at both sites stop and are removed (programs, directories, scheduled backups, DCS keys, lab slot), its
posix repo contents are deleted, its S3 user is disabled and its buckets' locked objects are left to age out, its
backup cipher key is destroyed wherever kumiai holds it (crypto-shredding: what stays in a locked bucket is
ciphertext nobody can read), and its file leaves the inventory, so the plan no longer renders its tenant. Each
step removes only what is left: a run interrupted anywhere ends the same when run again. The evidence (JSON,
Markdown, self-contained HTML) says what was removed and when the last locked object of each bucket expires.
"""

from __future__ import annotations

import shlex
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from kumiai import __version__, paths
from kumiai.datalayer.etcd import etcd_pki
from kumiai.datalayer.hostvars import town_sites
from kumiai.datalayer.offboard import (
    Removal,
    dcs_keys,
    removal_plan,
    remove_dcs_keys,
    remove_etcd_identity,
    remove_job_files,
    remove_paths,
    remove_programs,
)
from kumiai.datalayer.secrets import load_town_secrets, shred_town_key
from kumiai.datalayer.target import Target
from kumiai.dr.evidence import StepRecord, esc, html_page, html_table, md_row
from kumiai.errors import KumiaiError
from kumiai.inventory import TOWNS_DIR, Inventory
from kumiai.objectstore.retire import retire_bucket
from kumiai.objectstore.s3 import town_user
from kumiai.objectstore.store import Credentials
from kumiai.ops import Operation

SCHEMA = 1

ESCROW_NOTE = (
    "Copies of the town's keys taken before this run (escrowed with `kumiai secrets escrow`, or any other copy) "
    "still decrypt its backups in the locked buckets until their holders destroy them: ask each holder to destroy "
    "the town's copy and to confirm it."
)
SHRED_NOTE = (
    "Files are overwritten before they are unlinked; on journaling or copy-on-write storage that is no guarantee "
    "that no old block survives. The backups are unreadable because they are encrypted (aes-256-cbc) with a key of "
    "which no copy is left here, not because their objects are gone."
)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteRecord(_Record):
    site: str
    programs: list[str] = []
    job_files: list[str] = []
    dcs_prefix: str
    dcs_keys_deleted: int = 0
    dcs_keys_left: int = 0
    directories: list[str] = []
    posix_repo: list[str] = []


class BucketRecord(_Record):
    site: str
    bucket: str
    exists: bool
    user_disabled: bool
    versions: int = 0
    locked_versions: int = 0
    hidden_now: int = 0
    last_retain_until: str | None = None
    noncurrent_days: int | None = None
    gone_by: str | None = None


class OffboardEvidence(_Record):
    schema_version: int = SCHEMA
    offboard_id: str
    town: str
    town_name: str
    target: str
    started_at: str
    finished_at: str
    sites: list[SiteRecord] = []
    s3_user: str | None = None
    buckets: list[BucketRecord] = []
    key_files_destroyed: list[str] = []
    inventory_file: str
    inventory_file_removed: bool
    slot_released: bool = True
    escrow_note: str = ESCROW_NOTE
    shred_note: str = SHRED_NOTE
    steps: list[StepRecord] = []
    tools: dict[str, str] = {}


# --- what would be done (pure)


def inventory_file(inv: Inventory, town_id: str) -> Path:
    """The town's file in the inventory (towns/<id>.yaml, or .yml)."""
    towns = inv.root / TOWNS_DIR
    for suffix in (".yaml", ".yml"):
        if (towns / f"{town_id}{suffix}").exists():
            return towns / f"{town_id}{suffix}"
    return towns / f"{town_id}.yaml"


def git_commands(inv_root: Path, town_file: Path) -> list[str]:
    """What records the town's leaving in the inventory's git history (kumiai changes files, git holds history)."""
    root = shlex.quote(str(inv_root))
    rel = shlex.quote(str(town_file.relative_to(inv_root)))
    return [
        f"git -C {root} rm -q --cached --ignore-unmatch -- {rel}",
        f"git -C {root} commit -m {shlex.quote(f'Offboard {town_file.stem}: its tenant leaves the plan')} -- {rel}",
    ]


def describe(removal: Removal, town_file: Path) -> list[str]:
    """What offboarding the town does, one line each, for the confirmation (nothing is changed by reading it)."""
    lines = []
    for s in removal.sites:
        what = []
        if s.programs:
            what.append(f"stop and remove {len(s.programs)} programs ({', '.join(s.programs)})")
        if s.job_files:
            what.append(f"remove {len(s.job_files)} scheduled backup jobs")
        what.append(f"delete its etcd keys under {s.dcs_prefix}")
        if s.directories:
            what.append(f"delete {', '.join(str(d) for d in s.directories)}")
        if s.posix_repo:
            what.append(f"delete its posix repo contents ({', '.join(str(p) for p in s.posix_repo)})")
        if s.bucket:
            what.append(
                f"disable S3 user {removal.s3_user}; hide the current objects of bucket {s.bucket} (its locked "
                "versions stay until their retention ends)"
            )
        lines.append(f"{s.site}: " + "; ".join(what))
    keys = ", ".join(str(p) for p in removal.key_files)
    lines.append(
        f"crypto-shredding: destroy the backup cipher key of {removal.town} ({keys}); its backups become unreadable"
    )
    lines.append(f"release its addresses; remove {town_file} from the inventory (its tenant leaves the plan)")
    return lines


# --- evidence (pure rendering)


def to_json(ev: OffboardEvidence) -> str:
    return ev.model_dump_json(indent=2) + "\n"


def from_json(text: str) -> OffboardEvidence:
    return OffboardEvidence.model_validate_json(text)


def facts(ev: OffboardEvidence) -> list[tuple[str, str]]:
    return [
        ("Town 団体", f"{ev.town_name} ({ev.town})"),
        ("Offboarding", ev.offboard_id),
        ("Target", ev.target),
        ("Started", ev.started_at),
        ("Finished", ev.finished_at),
        (
            "Cipher key files destroyed",
            ", ".join(ev.key_files_destroyed) or "none left (an earlier run destroyed them)",
        ),
        ("S3 user", f"{ev.s3_user} disabled" if ev.s3_user else "none (posix repos)"),
        ("Inventory", f"{ev.inventory_file} {'removed' if ev.inventory_file_removed else 'already removed'}"),
        ("Last locked object expires", last_expiry(ev) or "no locked object"),
    ]


def last_expiry(ev: OffboardEvidence) -> str | None:
    dates = [b.last_retain_until for b in ev.buckets if b.last_retain_until]
    return max(dates) if dates else None


SITE_COLUMNS = ("Site", "Programs", "Backup jobs", "etcd keys deleted (left)", "Directories", "Posix repo")
BUCKET_COLUMNS = ("Site", "Bucket", "Versions (locked)", "Last lock ends", "Lifecycle", "All gone by")
STEP_COLUMNS = ("Step", "Status", "Seconds", "Detail")


def _site_cells(s: SiteRecord) -> list[str]:
    return [
        s.site,
        ", ".join(s.programs) or "—",
        str(len(s.job_files)),
        f"{s.dcs_keys_deleted} ({s.dcs_keys_left}) under {s.dcs_prefix}",
        ", ".join(s.directories) or "—",
        ", ".join(s.posix_repo) or "—",
    ]


def _bucket_cells(b: BucketRecord) -> list[str]:
    if not b.exists:
        return [b.site, b.bucket, "no bucket", "—", "—", "—"]
    lifecycle = f"noncurrent versions removed after {b.noncurrent_days} d" if b.noncurrent_days else "no rule"
    return [
        b.site,
        b.bucket,
        f"{b.versions} ({b.locked_versions})",
        b.last_retain_until or "—",
        lifecycle,
        b.gone_by or "—",
    ]


BUCKETS_TEXT = (
    "Locked versions cannot be deleted before their retention ends, by anyone. Their current objects are hidden "
    "behind delete markers, and the bucket's lifecycle rule removes them once retention has passed; until then "
    "they hold only ciphertext. After that date the store's owner can delete the empty bucket."
)


def to_markdown(ev: OffboardEvidence) -> str:
    lines = [f"# Offboarding 脱退: {ev.town_name} ({ev.town})", ""]
    lines += [md_row(("", "")), md_row(("---", "---"))] + [md_row(f) for f in facts(ev)]
    lines += ["", "## Removed at each site", "", md_row(SITE_COLUMNS), md_row(["---"] * len(SITE_COLUMNS))]
    lines += [md_row(_site_cells(s)) for s in ev.sites]
    lines += ["", "## Locked backups", "", BUCKETS_TEXT, ""]
    if ev.buckets:
        lines += [md_row(BUCKET_COLUMNS), md_row(["---"] * len(BUCKET_COLUMNS))]
        lines += [md_row(_bucket_cells(b)) for b in ev.buckets]
    else:
        lines.append("The town's repos were posix directories: their contents are deleted.")
    lines += ["", "## Crypto-shredding", "", SHRED_NOTE, "", f"**Escrow:** {ev.escrow_note}"]
    lines += ["", "## Steps", "", md_row(STEP_COLUMNS), md_row(["---"] * len(STEP_COLUMNS))]
    lines += [md_row((s.name, s.status, f"{s.seconds:.3f}", s.detail)) for s in ev.steps]
    lines += ["", "## Tools", ""] + [f"- {k}: {v}" for k, v in sorted(ev.tools.items())]
    return "\n".join(lines) + "\n"


def to_html(ev: OffboardEvidence) -> str:
    body = [
        f'<h1>Offboarding 脱退: {esc(ev.town_name)} (<span id="town">{esc(ev.town)}</span>)</h1>',
        "<table><tbody>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts(ev)) + "</tbody>"
        "</table>",
        "<h2>Removed at each site</h2>",
        html_table(SITE_COLUMNS, [(_site_cells(s), "") for s in ev.sites]),
        "<h2>Locked backups</h2>",
        f"<p>{esc(BUCKETS_TEXT)}</p>",
        html_table(BUCKET_COLUMNS, [(_bucket_cells(b), "") for b in ev.buckets])
        if ev.buckets
        else "<p>The town's repos were posix directories: their contents are deleted.</p>",
        "<h2>Crypto-shredding</h2>",
        f"<p>{esc(SHRED_NOTE)}</p>",
        f'<p id="escrow"><strong>Escrow:</strong> {esc(ev.escrow_note)}</p>',
        "<h2>Steps</h2>",
        html_table(
            STEP_COLUMNS,
            [
                ((s.name, s.status, f"{s.seconds:.3f}", s.detail), "fail" if s.status == "failed" else "")
                for s in ev.steps
            ],
        ),
        "<h2>Tools</h2><ul>" + "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in sorted(ev.tools.items())) + "</ul>",
    ]
    return html_page(f"Offboarding {ev.town} {ev.started_at}", body)


# --- evidence on disk


def offboards_dir() -> Path:
    return paths.evidence_dir() / "offboards"


def write_evidence(ev: OffboardEvidence) -> Path:
    """offboard.json, offboard.md and offboard.html in the run's own directory; returns that directory."""
    where = offboards_dir() / ev.offboard_id
    where.mkdir(parents=True, exist_ok=True)
    (where / "offboard.json").write_text(to_json(ev), encoding="utf-8")
    (where / "offboard.md").write_text(to_markdown(ev), encoding="utf-8")
    (where / "offboard.html").write_text(to_html(ev), encoding="utf-8")
    return where


def offboarded_before(town_id: str) -> Path | None:
    """The newest evidence of a finished offboarding of this town (its directory), if there is one."""
    found = []
    for path in offboards_dir().glob(f"*-{town_id}-*/offboard.json"):
        try:
            ev = from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if ev.town == town_id:
            found.append((ev.finished_at, path.parent))
    return max(found)[1] if found else None


# --- running it


def plan(target: Target, town_id: str) -> Removal:
    inv = target.inventory
    sites = [s.id for s in town_sites(inv, inv.town(town_id))]
    return removal_plan(target.topology(), town_id, sites, town_user(town_id))


def _site_order(target: Target, town_id: str, removal: Removal) -> list[str]:
    """The DR site first: its standby cluster stops before the primary it streams from."""
    primary, _dr = target.inventory.placement(target.inventory.town(town_id))
    return sorted((s.site for s in removal.sites), key=lambda site: site == primary.id)


def offboard_town(target: Target, town_id: str, op: Operation) -> tuple[OffboardEvidence, Path]:
    """Remove everything of the town, destroy its cipher key, write the evidence; (evidence, its directory)."""
    started = datetime.now(UTC)
    inv = target.inventory
    town = inv.town(town_id)
    removal = plan(target, town_id)
    records = {s.site: SiteRecord(site=s.site, dcs_prefix=s.dcs_prefix) for s in removal.sites}
    by_site = {s.site: s for s in removal.sites}
    order = _site_order(target, town_id, removal)

    with op.step("scheduled backups") as step:
        for site in order:
            records[site].job_files = remove_job_files(by_site[site])
        step.detail = f"{sum(len(r.job_files) for r in records.values())} jobs removed"
    with op.step("stop and remove the town's programs, DR site first") as step:
        for site in order:
            records[site].programs = remove_programs(target.services, by_site[site])
        step.detail = f"{sum(len(r.programs) for r in records.values())} programs removed"
    buckets = []
    # The town's own keys read its objects' retention (they are its objects); gone with the vault on a re-run.
    vault = target.topology().secrets_file(town_id)
    stored = load_town_secrets(vault) if vault.exists() else None
    town_keys = Credentials(stored.s3_access_key, stored.s3_secret_key) if stored and stored.s3_access_key else None
    with op.step("object stores: disable the town's S3 user, let its locked objects age out") as step:
        for site in order:
            bucket = by_site[site].bucket
            admin = target.object_store(site)
            if bucket is None or admin is None or removal.s3_user is None:
                continue
            fate = retire_bucket(target.topology().site(site), admin, bucket, removal.s3_user, town_keys)
            buckets.append(BucketRecord(**fate.as_dict()))
        step.detail = f"{len(buckets)} buckets"
    with op.step("crypto-shredding: the town's backup cipher key") as step:
        destroyed = [str(p) for p in shred_town_key(removal.key_files)]
        step.detail = f"{len(destroyed)} files destroyed"
    with op.step("DCS keys, the town's etcd user and role at each site") as step:
        pki = etcd_pki(target.topology())
        for site in order:
            records[site].dcs_keys_deleted = remove_dcs_keys(pki, by_site[site])
            records[site].dcs_keys_left = len(dcs_keys(pki, by_site[site].etcd_endpoint, by_site[site].dcs_prefix))
            remove_etcd_identity(pki, by_site[site], town_id)
        left = {s: r.dcs_keys_left for s, r in records.items() if r.dcs_keys_left}
        step.detail = f"{sum(r.dcs_keys_deleted for r in records.values())} keys deleted"
        if left:
            raise KumiaiError(f"keys of {town_id} are still in etcd after deleting them: {left}")
    with op.step("member directories and posix repo contents") as step:
        for site in order:
            records[site].directories = remove_paths(by_site[site].directories)
            records[site].posix_repo = remove_paths(by_site[site].posix_repo)
        step.detail = f"{sum(len(r.directories) + len(r.posix_repo) for r in records.values())} removed"
    with op.step("release the town's addresses"):
        target.release(town_id)
    town_file = inventory_file(inv, town_id)
    with op.step("remove the town from the inventory") as step:
        removed = town_file.exists()
        town_file.unlink(missing_ok=True)
        step.detail = str(town_file)
    ev = OffboardEvidence(
        offboard_id=f"{started.strftime('%Y%m%dT%H%M%SZ')}-{town_id}-{uuid.uuid4().hex[:6]}",
        town=town_id,
        town_name=town.name,
        target=target.name,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sites=[records[s] for s in sorted(records)],
        s3_user=removal.s3_user,
        buckets=sorted(buckets, key=lambda b: b.site),
        key_files_destroyed=destroyed,
        inventory_file=str(town_file),
        inventory_file_removed=removed,
        steps=[StepRecord(**s.as_dict()) for s in op.steps],
        tools={"kumiai": __version__},
    )
    where = write_evidence(ev)
    op.target.update({"evidence": str(where), "key_files_destroyed": len(destroyed), "last_lock_ends": last_expiry(ev)})
    return ev, where

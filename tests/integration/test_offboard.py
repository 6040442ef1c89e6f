"""Offboarding a town on a lab whose repos are S3 buckets with object lock (the sites' real Ceph RGW).

A lab of its own (KUMIAI_TEST_OFFBOARD_NETWORKS, default 127.0.81.0/24 and 127.0.82.0/24) with two towns: one is
offboarded, and nothing of it is left that runs, answers or decrypts, while the locked objects stay and the other
town goes on with its data. Every "gone" is checked next to the same check passing before.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from conftest import ROOT, Lab, build_lab, networks

from kumiai.datalayer.etcd import etcd_pki
from kumiai.datalayer.offboard import dcs_keys, dcs_prefix
from kumiai.datalayer.secrets import TownSecrets, load_town_secrets
from kumiai.datalayer.topology import Topology, TownLayout
from kumiai.lab.supervisor import program_states
from kumiai.objectstore.lab import RadosgwAdmin
from kumiai.objectstore.s3 import client
from kumiai.objectstore.store import Credentials
from support import faults
from support.browser import rendered_dom, screenshot
from support.lab_inventory import s3_lab_inventory

pytestmark = pytest.mark.integration

GONE, KEPT = "kiyokawa", "nakai"
RETENTION_DAYS = 1
REPORTS = ROOT / "out" / "offboard"


@pytest.fixture(scope="module")
def offboard_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    source = s3_lab_inventory(tmp_path_factory.mktemp("offboard") / "inventory", RETENTION_DAYS)
    nets = networks("KUMIAI_TEST_OFFBOARD_NETWORKS", "127.0.81.0/24,127.0.82.0/24")
    with build_lab(nets, [GONE, KEPT], source=source) as lab:
        yield lab


def owner_s3(topology: Topology, site: str) -> Any:
    store = topology.site(site).object_store
    assert store is not None
    return client(store, RadosgwAdmin(store).owner())


def versions(topology: Topology, town: TownLayout) -> dict[str, set[tuple[str, str]]]:
    """Every object version in the town's buckets (key, version id), by bucket."""
    out = {}
    for repo in town.repos:
        assert repo.bucket is not None
        pages = owner_s3(topology, repo.site).get_paginator("list_object_versions").paginate(Bucket=repo.bucket)
        out[repo.bucket] = {(v["Key"], v["VersionId"]) for p in pages for v in p.get("Versions", [])}
    return out


def copy_repo(topology: Topology, town: TownLayout, keys: TownSecrets, dst: Path) -> Path:
    """Every current object of the town's repo at its primary site, read with its own keys into a posix directory:
    the same ciphertext the bucket holds (as a replica, an exfiltrated copy or a restored tape would)."""
    repo = town.repo(town.primary_site)
    store = topology.site(repo.site).object_store
    assert store is not None and repo.bucket is not None
    s3 = client(store, Credentials(keys.s3_access_key, keys.s3_secret_key))
    prefix = str(repo.path).strip("/") + "/"
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            target = dst / obj["Key"].removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(repo.bucket, obj["Key"], str(target))
            count += 1
    assert count > 5 and list(dst.glob(f"backup/{town.id}/*/backup.manifest*")), count
    return dst


def repo_info(copy: Path, stanza: str, cipher_pass: str, tmp: Path) -> str:
    """pgbackrest info of a copy of a repo with `cipher_pass`: "ok" when it decrypts and lists a backup, else
    pgBackRest's error."""
    conf = tmp / "pgbackrest.conf"
    lines = [
        "[global]",
        f"repo1-path={copy}",
        "repo1-cipher-type=aes-256-cbc",
        f"repo1-cipher-pass={cipher_pass}",
        f"log-path={tmp}",
        f"lock-path={tmp}",
        "log-level-console=warn",
        "log-level-file=off",
        f"[{stanza}]",
        f"pg1-path={tmp / 'no-data'}",
        "",
    ]
    conf.write_text("\n".join(lines), encoding="utf-8")
    conf.chmod(0o600)
    run = subprocess.run(
        ["pgbackrest", f"--config={conf}", f"--stanza={stanza}", "--output=json", "info"],
        capture_output=True,
        text=True,
        errors="replace",  # what a wrong key decrypts is no text
        timeout=120,
        check=False,
    )
    conf.unlink()
    try:
        info = json.loads(run.stdout)[0]
    except (ValueError, IndexError):
        info = {}
    if run.returncode == 0 and info.get("status", {}).get("code") == 0 and info.get("backup"):
        return "ok"
    return f"exit {run.returncode}: {run.stdout[-600:]} {run.stderr[-600:]}"


def files_holding(root: Path, needle: bytes) -> list[Path]:
    """Files below `root` holding `needle`; files of 64 MiB and more (the object stores' block files, which hold
    only what the stores were given: encrypted backups) are not read."""
    hits = []
    for path in root.rglob("*"):
        try:
            if (
                path.is_file()
                and not path.is_symlink()
                and path.stat().st_size < 64 << 20
                and needle in path.read_bytes()
            ):
                hits.append(path)
        except OSError:
            continue
    return hits


def s3_refusal(topology: Topology, site: str, bucket: str, keys: TownSecrets) -> str | None:
    """None when the town's own keys may list its bucket, else the store's error code."""
    store = topology.site(site).object_store
    assert store is not None
    s3 = client(store, Credentials(keys.s3_access_key, keys.s3_secret_key))
    try:
        s3.list_objects_v2(Bucket=bucket, MaxKeys=1)
    except botocore.exceptions.ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


def processes_of(lab: Lab, topology: Topology, town: TownLayout) -> dict[str, Any]:
    programs = {
        site.id: sorted(p for p in program_states(site) if town.id in p)
        for site in topology.sites
        if site.id in town.sites
    }
    pids = set()
    for site in town.sites:
        pids |= faults.naming(topology.site(site).dir / "towns" / town.id)
    return {"programs": {k: v for k, v in programs.items() if v}, "pids": sorted(pids)}


def test_offboarding_leaves_no_process_key_or_readable_backup_of_the_town_and_the_other_is_untouched(
    offboard_lab: Lab, tmp_path: Path
) -> None:
    lab = offboard_lab
    tmp_path.chmod(0o700)
    topology = lab.topology()
    gone, kept = topology.towns[GONE], topology.towns[KEPT]
    keys = load_town_secrets(topology.secrets_file(GONE), lab.vault_keys)

    # Before: the other town holds a row; the town's repos decrypt with the key kumiai holds, its S3 keys work,
    # its processes run and its keys are in both sites' etcd.
    row = lab.kumiai(
        "psql",
        KEPT,
        "--",
        "-v",
        "ON_ERROR_STOP=1",
        "-Atc",
        "create table kept (v text); insert into kept values ('still here')",
        timeout=60,
    )
    assert row.code == 0, row
    copy = copy_repo(topology, gone, keys, tmp_path / "copy")
    assert repo_info(copy, GONE, keys.backup_cipher_pass, tmp_path) == "ok"
    for repo in gone.repos:
        assert repo.bucket is not None
        assert s3_refusal(topology, repo.site, repo.bucket, keys) is None
    running = processes_of(lab, topology, gone)
    assert running["pids"] and sum(len(p) for p in running["programs"].values()) == 4, running
    for site in gone.sites:
        assert dcs_keys(etcd_pki(topology), topology.site(site).etcd_endpoint, dcs_prefix(site, GONE)), site
    locked_before = versions(topology, gone)
    assert all(locked_before.values()), locked_before

    # Without --yes: what would happen, exit 2, nothing changed. An unknown town: exit 2 naming the inventory.
    asked = lab.kumiai("offboard", GONE)
    assert asked.code == 2, asked
    assert "--yes" in asked.stderr and "Nothing was changed" in asked.stderr, asked
    assert f"etcd keys under /kumiai/site-a/{GONE}/" in asked.stdout, asked
    assert topology.secrets_file(GONE).exists() and processes_of(lab, topology, gone) == running
    unknown = lab.kumiai("offboard", "no-such-town", "--yes")
    assert unknown.code == 2 and "towns: id: no town 'no-such-town'" in unknown.stderr, unknown

    done = lab.kumiai("offboard", GONE, "--yes", "--json", timeout=900)
    assert done.code == 0, done
    result = json.loads(done.stdout)

    # No process, program, etcd key, directory, vault file or copy of the cipher key of the town is left.
    assert processes_of(lab, topology, gone) == {"programs": {}, "pids": []}
    for site in gone.sites:
        assert dcs_keys(etcd_pki(topology), topology.site(site).etcd_endpoint, dcs_prefix(site, GONE)) == [], site
        assert dcs_keys(etcd_pki(topology), topology.site(site).etcd_endpoint, dcs_prefix(site, KEPT)), (
            site
        )  # the other's are kept
        assert not (topology.site(site).dir / "towns" / GONE).exists()
        assert not list(topology.site(site).backup_jobs_dir.glob(f"{GONE}-*"))
    assert not topology.secrets_file(GONE).exists()
    for root in (lab.lab_dir, lab.state_dir):
        assert files_holding(root, keys.backup_cipher_pass.encode()) == [], root
    # Its backups no longer decrypt: kumiai holds no key, and any other key is refused; only a copy of the key
    # taken before (held by this test, as an escrow holder would hold one) still reads the same ciphertext.
    refused = repo_info(copy, GONE, secrets.token_urlsafe(48), tmp_path)
    # A wrong key decrypts backup.info into bytes that are no info file at all (seen: "FormatError: key/value found
    # outside of section"), so pgBackRest cannot open it.
    assert refused != "ok" and "FormatError" in refused and "backup.info cannot be opened" in refused, refused
    assert repo_info(copy, GONE, keys.backup_cipher_pass, tmp_path) == "ok"
    # Its S3 keys are refused; every locked version is still stored.
    for repo in gone.repos:
        assert repo.bucket is not None
        assert s3_refusal(topology, repo.site, repo.bucket, keys) in ("InvalidAccessKeyId", "AccessDenied")
    # (WAL archived between the count above and the town's stop adds versions: every earlier one is still there.)
    locked_after = versions(topology, gone)
    assert all(locked_before[b] <= locked_after[b] for b in locked_before), "a locked version is gone"
    assert len(result["buckets"]) == 2
    for bucket in result["buckets"]:
        assert bucket["versions"] == len(locked_after[bucket["bucket"]]) and bucket["locked_versions"] > 0, bucket
        assert bucket["last_retain_until"] and bucket["gone_by"] >= bucket["last_retain_until"], bucket

    # The other town is healthy and has its row; its processes still run.
    status = lab.status()
    assert GONE not in status and status[KEPT]["healthy"], status
    read = lab.kumiai("psql", KEPT, "--", "-Atc", "select v from kept", timeout=60)
    assert read.code == 0 and read.stdout.strip() == "still here", read
    assert processes_of(lab, topology, kept)["pids"]

    # The plan no longer has its tenant; the inventory file is gone and the git commands to record it printed.
    plan = lab.kumiai("plan", "--json", "--no-validate", timeout=300)
    assert plan.code == 0, plan
    assert GONE not in json.loads(plan.stdout)["towns"] and KEPT in json.loads(plan.stdout)["towns"]
    assert not (lab.inventory / "towns" / f"{GONE}.yaml").exists()
    assert any("git" in c and f"towns/{GONE}.yaml" in c for c in result["commit_commands"]), result

    # Evidence in three forms, the HTML as a browser shows it; the audit trail has the run.
    evidence = Path(result["evidence"])
    assert json.loads((evidence / "offboard.json").read_text(encoding="utf-8"))["town"] == GONE
    markdown = (evidence / "offboard.md").read_text(encoding="utf-8")
    assert "escrow" in markdown.lower() and min(b["last_retain_until"] for b in result["buckets"])[:10] in markdown
    dom = rendered_dom(evidence / "offboard.html")
    assert f'<span id="town">{GONE}</span>' in dom and 'id="escrow"' in dom
    screenshot(evidence / "offboard.html", "offboard-evidence")
    # Kept for people (the lab's directory goes at the end): the evidence with each step's duration.
    shutil.copytree(evidence, REPORTS, dirs_exist_ok=True)
    log = lab.state_dir / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    ends = [r for r in records if r.get("event") == "end" and r.get("operation") == "offboard"]
    assert [(r["target"]["town"], r["result"]) for r in ends] == [(GONE, "ok")], ends
    assert keys.backup_cipher_pass not in log.read_text(encoding="utf-8")

    # Again: nothing to do, exit 0.
    again = lab.kumiai("offboard", GONE, "--yes")
    assert again.code == 0 and "offboarded already" in again.stdout, again

"""Each site's real object store (Ceph RGW) holding the towns' pgBackRest repos in locked, versioned buckets.

A lab of its own (KUMIAI_TEST_S3_NETWORKS, default 127.0.61.0/24 and 127.0.62.0/24) whose sites keep backups in
S3: the lab inventory with `object_storage: type: s3` at both sites and a retention of one day. Everything is
checked against the running radosgw with the towns' own credentials, as ransomware holding them would try.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest
from conftest import Lab, build_lab, networks

from kumiai.audit.chain import head_of
from kumiai.audit.trail import Trail, verify
from kumiai.objectstore.evidence import EVIDENCE_RETENTION_DAYS, evidence_key, load_credentials, load_store
from kumiai.objectstore.provision import evidence_spec
from kumiai.objectstore.s3 import BucketSpec, client, town_user, weaker_than
from support.lab_inventory import s3_lab_inventory

pytestmark = pytest.mark.integration

TOWNS = ["kiyokawa", "nakai"]
RETENTION_DAYS = 1


@pytest.fixture(scope="module")
def s3_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    source = s3_lab_inventory(tmp_path_factory.mktemp("s3") / "inventory", RETENTION_DAYS)
    with build_lab(networks("KUMIAI_TEST_S3_NETWORKS", "127.0.61.0/24,127.0.62.0/24"), TOWNS, source=source) as lab:
        yield lab


def refused(call: Any, **kwargs: Any) -> str:
    """The error code of a request the store must refuse."""
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call(**kwargs)
    return str(caught.value.response["Error"]["Code"])


def test_onboarding_leaves_a_verified_full_backup_in_each_sites_bucket(s3_lab: Lab) -> None:
    status = s3_lab.status()
    topology = s3_lab.topology()
    for town in TOWNS:
        assert status[town]["healthy"], status[town]
        for repo in topology.towns[town].repos:
            backup = status[town]["backups"][f"repo{repo.number}"]
            assert backup is not None and backup["type"] == "full", (town, repo)
            # The backup is in the bucket, read with the town's own keys, and pgBackRest verifies it there.
            s3 = s3_lab.town_s3(town, repo.site)
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket=repo.bucket, Prefix="pgbackrest/")["Contents"]]
            assert any(k.endswith(f"/{backup['label']}/backup.manifest") for k in keys), keys
            assert any(re.search(r"/archive/[^/]+/archive.info$", k) for k in keys), keys


def test_the_towns_own_credentials_cannot_weaken_or_delete_its_backups(s3_lab: Lab) -> None:
    topology = s3_lab.topology()
    for town in TOWNS:
        for repo in topology.towns[town].repos:
            assert repo.bucket is not None
            s3 = s3_lab.town_s3(town, repo.site)
            bucket = repo.bucket
            versions = s3.list_object_versions(Bucket=bucket, Prefix="pgbackrest/")["Versions"]
            assert versions
            for version in versions[:3]:
                retention = s3.get_object_retention(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
                assert retention["Retention"]["Mode"] == "COMPLIANCE"
                assert refused(s3.delete_object, Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"]) in (
                    "AccessDenied",
                )
                assert refused(
                    s3.delete_object,
                    Bucket=bucket,
                    Key=version["Key"],
                    VersionId=version["VersionId"],
                    BypassGovernanceRetention=True,
                ) in ("AccessDenied",)
                shorter = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
                assert refused(
                    s3.put_object_retention,
                    Bucket=bucket,
                    Key=version["Key"],
                    VersionId=version["VersionId"],
                    Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter},
                ) in ("AccessDenied",)
                assert refused(
                    s3.put_object_retention,
                    Bucket=bucket,
                    Key=version["Key"],
                    VersionId=version["VersionId"],
                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": retention["Retention"]["RetainUntilDate"]},
                ) in ("AccessDenied",)
            # The bucket's own protection: no shorter default, no suspended versioning, no bucket deleted.
            assert refused(
                s3.put_object_lock_configuration,
                Bucket=bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
                },
            ) in ("AccessDenied",)
            assert refused(
                s3.put_bucket_versioning, Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
            ) in ("AccessDenied", "InvalidBucketState")
            assert refused(s3.delete_bucket, Bucket=bucket) in ("AccessDenied", "BucketNotEmpty")
            assert refused(s3.put_bucket_policy, Bucket=bucket, Policy=json.dumps({"Statement": []})) in (
                "AccessDenied",
            )
            # Deleting the current objects only hides them: every version is still there.
            key = versions[0]["Key"]
            s3.delete_object(Bucket=bucket, Key=key)
            after = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
            assert versions[0]["VersionId"] in {v["VersionId"] for v in after}
            marker = s3.list_object_versions(Bucket=bucket, Prefix=key)["DeleteMarkers"][0]
            s3.delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])  # undo: markers are not locked
            # And the bucket still is as strong as the town asks.
            spec = BucketSpec(bucket, town_user(town), "COMPLIANCE", RETENTION_DAYS)
            assert weaker_than(s3, spec) == []


def test_another_towns_credentials_reach_nothing_of_the_bucket(s3_lab: Lab) -> None:
    topology = s3_lab.topology()
    owner, other = TOWNS
    for repo in topology.towns[owner].repos:
        s3 = s3_lab.town_s3(other, repo.site)
        bucket = repo.bucket
        assert refused(s3.list_objects_v2, Bucket=bucket) == "AccessDenied"
        assert refused(s3.list_object_versions, Bucket=bucket) == "AccessDenied"
        key = s3_lab.town_s3(owner, repo.site).list_objects_v2(Bucket=bucket, Prefix="pgbackrest/")["Contents"][0]
        assert refused(s3.get_object, Bucket=bucket, Key=key["Key"]) == "AccessDenied"
        assert refused(s3.put_object, Bucket=bucket, Key="pgbackrest/planted", Body=b"x") == "AccessDenied"
        assert refused(s3.delete_object, Bucket=bucket, Key=key["Key"]) == "AccessDenied"


def test_ransomware_with_the_towns_keys_is_undone_by_recover_and_a_drill_passes(s3_lab: Lab) -> None:
    """Every current object of the town's repo at its primary site deleted with the town's own keys; `backup
    recover --as-of` a moment before brings the repo back, and a restore drill from it passes with the data."""
    town = TOWNS[0]
    topology = s3_lab.topology()
    repo = topology.towns[town].repo(topology.towns[town].primary_site)
    assert repo.bucket is not None
    s3 = s3_lab.town_s3(town, repo.site)
    time.sleep(2)  # S3 times are whole seconds: nothing of the attack may share the moment recovered to
    before = datetime.datetime.now(datetime.UTC)
    time.sleep(2)
    keys = [
        o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket) for o in page["Contents"]
    ]
    assert len(keys) > 10
    for key in keys:
        s3.delete_object(Bucket=repo.bucket, Key=key)
    assert s3.list_objects_v2(Bucket=repo.bucket).get("KeyCount") == 0

    dry = s3_lab.kumiai(
        "backup",
        "recover",
        "--town",
        town,
        "--repo",
        str(repo.number),
        "--as-of",
        before.isoformat(),
        "--dry-run",
        "--json",
    )
    assert dry.code == 0, dry
    assert s3.list_objects_v2(Bucket=repo.bucket).get("KeyCount") == 0  # a dry run changes nothing
    done = s3_lab.kumiai(
        "backup", "recover", "--town", town, "--repo", str(repo.number), "--as-of", before.isoformat(), "--json"
    )
    assert done.code == 0, done
    counts = json.loads(done.stdout)["counts"]
    assert counts == json.loads(dry.stdout)["counts"]
    restored = {
        o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket) for o in page["Contents"]
    }
    assert set(keys) - restored <= {k for k in keys if "/archive/" in k}  # only WAL written after `before` stays hidden
    assert counts["unmark"] + counts["restore"] >= len(restored & set(keys)) > 10, counts

    drill = s3_lab.kumiai("drill", "--town", town, "--repo", str(repo.number), "--json", timeout=900)
    assert drill.code == 0, drill


def test_evidence_and_the_audit_anchor_are_in_the_dr_sites_locked_bucket(s3_lab: Lab) -> None:
    """Every evidence file and every audit head is copied to the DR site's evidence bucket, which the evidence
    user cannot weaken or delete from; deleting the newest audit records with this machine's anchor rewritten to
    match passes the local check (the control) and is found against the bucket's anchor."""
    topology = s3_lab.topology()
    state = s3_lab.state_dir
    store = load_store(state)
    assert store is not None and store.site == "site-b", store  # role: dr in consortium.yaml
    keys = load_credentials(state)
    for site in topology.sites:
        assert site.object_store is not None
        spec = evidence_spec(site.object_store)
        assert spec.lock_mode == "COMPLIANCE" and spec.retention_days == EVIDENCE_RETENTION_DAYS
        assert weaker_than(client(site.object_store, keys), spec) == []
    dr_store = topology.site("site-b").object_store
    assert dr_store is not None
    s3 = client(dr_store, keys)

    verified = s3_lab.kumiai("backup", "verify", "--json", timeout=600)
    assert verified.code in (0, 1), verified  # its evidence is written either way (after the ransomware drill)
    local = sorted(p for p in (state / "evidence").rglob("*") if p.is_file())
    assert any("backup-verify" in p.parts for p in local), local
    for path in local:
        body = s3.get_object(Bucket=store.bucket, Key=evidence_key(path, state / "evidence"))["Body"].read()
        assert body == path.read_bytes(), path

    # The evidence user can add, never remove or weaken.
    some = s3.list_object_versions(Bucket=store.bucket, Prefix="evidence/")["Versions"][0]
    assert refused(s3.delete_object, Bucket=store.bucket, Key=some["Key"]) == "AccessDenied"
    assert refused(s3.delete_object, Bucket=store.bucket, Key=some["Key"], VersionId=some["VersionId"]) == (
        "AccessDenied"
    )
    sooner = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    assert refused(
        s3.put_object_retention,
        Bucket=store.bucket,
        Key=some["Key"],
        VersionId=some["VersionId"],
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": sooner},
    ) in ("AccessDenied",)

    ok = s3_lab.kumiai("audit", "verify", "--json", timeout=120)
    assert ok.code == 0, ok
    assert json.loads(ok.stdout)["remote_anchor"] == store.where

    trail = Trail.for_log(state / "audit" / "audit.jsonl")
    log_bytes, anchor_bytes = trail.log.read_bytes(), trail.anchor.read_bytes()
    lines = log_bytes.splitlines(keepends=True)
    top = f"audit/heads/{head_of(json.loads(lines[-1])).seq:012d}.json"
    older = head_of(json.loads(lines[-3])).model_dump_json() + "\n"
    try:
        trail.log.write_bytes(b"".join(lines[:-2]))
        trail.anchor.write_text(older, encoding="utf-8")
        # The control: against this machine's own (rewritten) anchor the shortened log verifies.
        alone = verify(Trail(trail.log, trail.key, trail.anchor_dir))
        assert alone.ok, alone.problems
        tampered = s3_lab.kumiai("audit", "verify", "--json", timeout=120)
        assert tampered.code == 1, tampered
        found = [p["problem"] for p in json.loads(tampered.stdout)["problems"]]
        missing = f"the anchor in {store.where}: the newest 2 record(s) are missing"
        assert len(found) == 1 and found[0].startswith(missing), found
    finally:
        trail.log.write_bytes(log_bytes)
        trail.anchor.write_bytes(anchor_bytes)
    again = s3_lab.kumiai("audit", "verify", timeout=120)
    assert again.code == 0, again

    # The evidence user's keys can put an older head over the newest, not remove it: the rewrite itself is found,
    # and stays on record in the locked bucket (this module's last test: nothing after it verifies the log).
    assert refused(s3.delete_object, Bucket=store.bucket, Key=top) == "AccessDenied"
    s3.put_object(Bucket=store.bucket, Key=top, Body=older.encode())
    rewritten = s3_lab.kumiai("audit", "verify", "--json", timeout=120)
    assert rewritten.code == 1, rewritten
    found = [p["problem"] for p in json.loads(rewritten.stdout)["problems"]]
    assert found == [
        f"the anchor in {store.where}: {top} was written again with another head: someone rewrote the anchor"
    ]

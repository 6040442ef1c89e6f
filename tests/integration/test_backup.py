"""Backups on the lab: run, list, verify (healthy, stale, broken) and the scheduler, against real pgBackRest.

These tests share the session's lab (each site's repos in its object store) and leave it as they found it: a damaged
backup object is written back as it was (its newest version; the damaged one stays locked below it), and the
every-minute schedule is replaced by the town's own before the test ends.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, Lab

pytestmark = pytest.mark.integration

LAB_TOWNS = ["kiyokawa", "manazuru", "nakai"]
SCHEDULED_WAIT_S = 150


def backups(lab: Lab, town: str) -> list[dict[str, Any]]:
    run = lab.kumiai("backup", "list", "--town", town, "--json", timeout=120)
    assert run.code == 0, run
    items: list[dict[str, Any]] = json.loads(run.stdout)["towns"][town]
    return items


def verify(lab: Lab, *args: str, inventory: Path | None = None) -> tuple[int, dict[str, Any], str]:
    run = lab.kumiai("backup", "verify", "--json", *args, timeout=600, inventory=inventory)
    assert run.stdout, run
    return run.code, json.loads(run.stdout), run.stderr


def by_repo(report: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["town"], r["repo"]): r for r in report["repos"]}


@pytest.fixture
def every_minute(lab: Lab) -> Iterator[Path]:
    """A copy of the lab's inventory whose towns back up every minute."""
    copy = lab.base / "inventory-every-minute"
    shutil.copytree(lab.inventory, copy)
    consortium = copy / "consortium.yaml"
    text = consortium.read_text(encoding="utf-8")
    assert 'backup_schedule: "0 2 * * *"' in text
    consortium.write_text(text.replace('backup_schedule: "0 2 * * *"', 'backup_schedule: "* * * * *"'), "utf-8")
    yield copy
    shutil.rmtree(copy)


def test_verify_passes_on_the_healthy_lab_and_is_audited(lab: Lab) -> None:
    code, report, stderr = verify(lab)
    assert code == 0, stderr
    assert report["verdict"] == "pass"
    repos = by_repo(report)
    # (The shared lab may hold towns other tests onboarded: the lab towns' repos are all there.)
    assert [r for r in sorted(repos) if r[0] in LAB_TOWNS] == [(t, n) for t in LAB_TOWNS for n in (1, 2)]
    for repo in repos.values():
        assert repo["status"] == "ok", repo
        assert "status: ok" in repo["verify_report"] and "status: valid" in repo["verify_report"]
        assert repo["newest"]["type"] == "full" and repo["archive_max"]
    evidence = Path(report["evidence"])
    assert evidence.parent == lab.state_dir / "evidence" / "backup-verify"
    assert json.loads(evidence.read_text(encoding="utf-8"))["repos"] == report["repos"]
    audit = lab.kumiai("audit", "log", "--json", timeout=60)
    assert audit.code == 0, audit
    runs = [r for r in json.loads(audit.stdout) if r["operation"] == "backup verify"]
    assert runs and runs[-1]["result"] == "ok" and runs[-1]["target"]["verdict"] == "pass", runs[-1:]
    # every step of the runbook, in its order, is a step of the audit record
    book = yaml.safe_load((ROOT / "dr-runbooks" / "backup-verify.yaml").read_text(encoding="utf-8"))
    assert [s["name"] for s in runs[-1]["steps"]] == [f"backup-verify: {step['id']}" for step in book["steps"]]
    assert all(s["status"] == "ok" for s in runs[-1]["steps"]), runs[-1]["steps"]


def test_status_reports_every_town_within_its_targets(lab: Lab) -> None:
    for town in lab.status().values():
        assert town["alerts"] == [], town["alerts"]
        assert set(town["backups"]) == {"repo1", "repo2"} and town["healthy"]


def test_backup_run_takes_the_chosen_type_into_the_chosen_repos(lab: Lab) -> None:
    before = {b["label"] for b in backups(lab, "kiyokawa")}
    run = lab.kumiai("backup", "run", "--town", "kiyokawa", "--type", "diff", "--json", timeout=600)
    assert run.code == 0, run
    made = json.loads(run.stdout)["backups"]
    assert [(b["repo"], b["type"], b["ok"]) for b in made] == [(1, "diff", True), (2, "diff", True)]
    after = backups(lab, "kiyokawa")
    new = [(b["repo"], b["type"], b["label"]) for b in after if b["label"] not in before]
    assert sorted(new) == sorted((b["repo"], "diff", b["label"]) for b in made)
    run = lab.kumiai("backup", "run", "--town", "kiyokawa", "--type", "incr", "--repo", "2", timeout=600)
    assert run.code == 0, run
    newest = {b["repo"]: b for b in backups(lab, "kiyokawa")}
    assert newest[2]["type"] == "incr" and newest[1]["type"] == "diff"
    refused = lab.kumiai("backup", "run", "--town", "kiyokawa", "--repo", "3", timeout=60)
    assert refused.code == 2 and "--repo" in refused.stderr and "allowed: all, 1, 2" in refused.stderr, refused


def test_verify_fails_on_a_stale_town_naming_it_and_each_repo(lab: Lab, every_minute: Path) -> None:
    # Every minute and no grace: the newest backup must have finished in this minute. Wait out the minute of
    # manazuru's newest backup (untouched by the other tests) so that it is older than the last firing.
    newest = max(datetime.fromisoformat(b["stopped"]) for b in backups(lab, "manazuru"))
    wait = 61 - (datetime.now(UTC) - newest.replace(second=0)).total_seconds()
    time.sleep(max(wait, 0))
    code, report, stderr = verify(lab, "--town", "manazuru", "--grace", "0", inventory=every_minute)
    assert code == 1
    assert report["verdict"] == "fail"
    for n in (1, 2):
        repo = by_repo(report)[("manazuru", n)]
        assert repo["status"] == "stale" and repo["broken"] == [], repo
        assert "'* * * * *'" in repo["stale"]
        assert f"manazuru repo{n} at site-{'ab'[n - 1]} (stale:" in stderr
    # with the lab's own schedule (daily at 02:00) the same backups are recent enough
    code, report, stderr = verify(lab, "--town", "manazuru")
    assert code == 0, stderr


def test_verify_fails_on_a_broken_repo_naming_the_town_and_the_repo(lab: Lab) -> None:
    newest = [b for b in backups(lab, "nakai") if b["repo"] == 2 and b["type"] == "full"][-1]
    # nakai's repo2 is its bucket at site-b; a file of the backup's data, damaged with the town's own keys (a new
    # version of the object: the one pgBackRest wrote stays locked underneath).
    repo = lab.topology().towns["nakai"].repo("site-b")
    assert repo.number == 2 and repo.bucket is not None
    s3 = lab.town_s3("nakai", "site-b")
    prefix = f"pgbackrest/backup/nakai/{newest['label']}/pg_data/base/"
    objects = [
        o
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    victim = next(o["Key"] for o in sorted(objects, key=lambda o: o["Key"]) if o["Size"] > 4096)
    original = s3.get_object(Bucket=repo.bucket, Key=victim)["Body"].read()
    damage = b"not what pgBackRest wrote"
    try:
        s3.put_object(Bucket=repo.bucket, Key=victim, Body=original[:100] + damage + original[100 + len(damage) :])
        code, report, stderr = verify(lab, "--town", "nakai")
        assert code == 1
        assert "nakai repo2 at site-b (broken:" in stderr and "repo1" not in stderr, stderr
        repos = by_repo(report)
        assert repos[("nakai", 1)]["status"] == "ok", repos[("nakai", 1)]
        broken = repos[("nakai", 2)]
        assert broken["status"] == "broken"
        assert f"backup {newest['label']}: checksum invalid 1" in broken["broken"], broken
        assert "status: error" in broken["verify_report"]
    finally:
        s3.put_object(Bucket=repo.bucket, Key=victim, Body=original)
    code, _report, stderr = verify(lab, "--town", "nakai")
    assert code == 0, stderr


def test_scheduled_backups_appear_in_each_repo(lab: Lab, every_minute: Path) -> None:
    jobs_dir = lab.lab_dir / "site-a" / "backup-jobs"
    bad_job = jobs_dir / "zz-not-a-job.json"
    before = {b["label"] for b in backups(lab, "nakai")}
    try:
        onboard = lab.kumiai("onboard", "nakai", inventory=every_minute)
        assert onboard.code == 0, onboard
        job = json.loads((jobs_dir / "nakai-site-a-1.json").read_text(encoding="utf-8"))
        assert job["schedule"] == "* * * * *" and job["repos"] == [1, 2]
        # the scheduler re-reads its directory: a file it cannot use is logged and skipped, the rest still runs
        bad_job.write_text("{ not json", encoding="utf-8")
        deadline = time.monotonic() + SCHEDULED_WAIT_S
        new: dict[int, str] = {}
        while time.monotonic() < deadline and len(new) < 2:
            time.sleep(5)
            new = {b["repo"]: b["label"] for b in backups(lab, "nakai") if b["label"] not in before}
        assert sorted(new) == [1, 2], f"no new scheduled backup in every repo within {SCHEDULED_WAIT_S} s: {new}"
        log = (lab.lab_dir / "site-a" / "supervisor" / "log" / "backup-scheduler-site-a.log").read_text("utf-8")
        assert f"skipping job file {bad_job}" in log
        assert f"nakai repo1: full backup {new[1]}" in log and f"nakai repo2: full backup {new[2]}" in log
        # the DR site's scheduler fires too, and leaves the backup to the primary site
        dr_log = (lab.lab_dir / "site-b" / "supervisor" / "log" / "backup-scheduler-site-b.log").read_text("utf-8")
        assert "nakai: nakai-site-b-1 is not the leader of a primary cluster" in dr_log
        assert "nakai repo" not in dr_log
    finally:
        bad_job.unlink(missing_ok=True)
        restored = lab.kumiai("onboard", "nakai")
        assert restored.code == 0, restored
    job = json.loads((jobs_dir / "nakai-site-a-1.json").read_text(encoding="utf-8"))
    assert job["schedule"] == "0 2 * * *"

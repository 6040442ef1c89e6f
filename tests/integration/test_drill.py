"""Given a lab of its own (the lab towns on 127.0.31/32 unless KUMIAI_TEST_DRILL_NETWORKS says otherwise): restore
drills of every town pass and leave evidence; a damaged backup file gives a failing verdict, never a crash."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Lab, build_lab, networks

from support.browser import rendered_dom, screenshot

pytestmark = pytest.mark.integration

LAB_TOWNS = ["kiyokawa", "manazuru", "nakai"]
ROWS = 2000
DRILL_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def drill_lab() -> Iterator[Lab]:
    with build_lab(networks("KUMIAI_TEST_DRILL_NETWORKS", "127.0.31.0/24,127.0.32.0/24"), posix=True) as lab:
        for town in LAB_TOWNS:
            # Each town gets data of its own, so the drill has rows and checksums to compare.
            sql = (
                "CREATE TABLE IF NOT EXISTS juminhyo (id serial PRIMARY KEY, name text, born date);"
                f"INSERT INTO juminhyo (name, born) SELECT '{town} ' || g, date '1950-01-01' + g"
                f" FROM generate_series(1, {ROWS}) g;"
            )
            run = lab.kumiai("psql", town, "--", "-v", "ON_ERROR_STOP=1", "-c", sql, timeout=60)
            assert run.code == 0, run
        yield lab


def drill(lab: Lab, *args: str) -> tuple[Any, dict[str, Any]]:
    run = lab.kumiai("drill", *args, "--json", timeout=DRILL_TIMEOUT_S)
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run
    return run, json.loads(run.stdout)


def answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def scratch_of(town: dict[str, Any]) -> tuple[str, int, Path]:
    """The evidence's "address:port directory" of the scratch instance."""
    where, directory = town["scratch"].split(" ", 1)
    address, port = where.rsplit(":", 1)
    return address, int(port), Path(directory)


def assert_scratch_gone(lab: Lab, town: dict[str, Any]) -> None:
    address, port, directory = scratch_of(town)
    assert not directory.exists(), directory
    assert not answers(address, port), town["scratch"]


def assert_production_healthy(lab: Lab) -> None:
    status = lab.status()
    assert all(status[t]["healthy"] for t in LAB_TOWNS), status


def audit_ends(lab: Lab, operation: str) -> list[dict[str, Any]]:
    log = lab.state_dir / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r.get("event") == "end" and r.get("operation") == operation]


def test_a_drill_of_every_lab_town_passes_and_writes_its_evidence(drill_lab: Lab) -> None:
    run, result = drill(drill_lab, "--all")
    assert run.code == 0, run
    assert result["verdict"] == "pass"
    assert [t["town"] for t in result["towns"]] == LAB_TOWNS
    for town in result["towns"]:
        assert town["verdict"] == "pass", town["reasons"]
        assert town["repo"] == 2 and town["repo_site"] == "site-b"  # the DR site's repo by default
        assert town["marker_recovered"]
        assert 0 <= town["rpo_s"] <= town["rpo_target_s"]
        assert 0 < town["rto_s"] <= town["rto_target_s"]
        assert town["restore_s"] > 0 and town["restored_bytes"] > 0
        tables = {t["table"]: t for t in town["comparison"]["tables"]}
        # Compared with the primary, and the primary's figures are the data the fixture wrote.
        assert tables["public.juminhyo"]["rows_primary"] == ROWS == tables["public.juminhyo"]["rows_recovered"]
        assert tables["public.juminhyo"]["checksum_primary"] == tables["public.juminhyo"]["checksum_recovered"]
        names = [s["name"].split(": ", 2)[-1] for s in town["steps"]]
        assert names == ["preflight", "write-marker", "archive-marker", "restore", "start", "verify", "remove-scratch"]
        assert all(s["status"] == "ok" for s in town["steps"])
        where = Path(town["evidence"])
        assert {p.name for p in where.iterdir()} == {"drill.json", "drill.md", "drill.html"}
        assert json.loads((where / "drill.json").read_text(encoding="utf-8"))["verdict"] == "pass"
        assert_scratch_gone(drill_lab, town)
        # The copy promoted itself to timeline 2 but never archived: no second timeline in the town's repos.
        for site in ("site-a", "site-b"):
            archive = drill_lab.lab_dir / site / "backup" / town["town"] / "archive" / town["town"]
            assert archive.is_dir() and not list(archive.glob("*/00000002.history*")), archive
    assert_production_healthy(drill_lab)
    ends = audit_ends(drill_lab, "drill")
    assert ends[-1]["result"] == "ok" and ends[-1]["target"]["verdict"] == "pass"
    assert ends[-1]["target"]["verdicts"] == dict.fromkeys(LAB_TOWNS, "pass")

    index = Path(result["summary"])
    assert index == drill_lab.state_dir / "evidence" / "drills" / "index.html"
    dom = rendered_dom(index)
    assert "3 of 3 towns passed their newest drill" in dom
    for name in ("清川村", "真鶴町", "中井町"):
        assert name in dom
    assert dom.count('class="measured"') == 2 * len(LAB_TOWNS)  # an RPO and an RTO bar per town
    screenshot(index, "drill-summary")
    screenshot(Path(result["towns"][0]["evidence"]) / "drill.html", "drill-town")


def test_a_drill_from_the_primary_sites_repo(drill_lab: Lab) -> None:
    run, result = drill(drill_lab, "--town", "nakai", "--repo", "1")
    assert run.code == 0, run
    town = result["towns"][0]
    assert town["verdict"] == "pass" and town["repo"] == 1 and town["repo_site"] == "site-a"
    sites = yaml.safe_load((drill_lab.inventory / "consortium.yaml").read_text(encoding="utf-8"))["sites"]
    site_a = ipaddress.ip_network(next(s["db_network"] for s in sites if s["id"] == "site-a"))
    address, _port, directory = scratch_of(town)
    assert ipaddress.ip_address(address) in site_a and "site-a" in directory.parts
    assert_scratch_gone(drill_lab, town)


def test_bad_drill_input_changes_nothing(drill_lab: Lab) -> None:
    for args in ((), ("--all", "--town", "nakai"), ("--town", "nakai", "--repo", "7"), ("--town", "atlantis")):
        run = drill_lab.kumiai("drill", *args, timeout=60)
        assert run.code == 2, run
        assert "Nothing was changed." in run.stderr


def newest_backup_file(lab: Lab, town: str, repo_site: str) -> Path:
    """The largest file of the newest backup of the town in a site's repo: a relation's data."""
    backups = lab.lab_dir / repo_site / "backup" / town / "backup" / town
    newest = max((p for p in backups.iterdir() if p.is_dir() and p.name[:8].isdigit()), key=lambda p: p.name)
    return max((p for p in (newest / "pg_data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_a_drill_against_a_corrupted_backup_file_fails_clearly(drill_lab: Lab) -> None:
    damaged = newest_backup_file(drill_lab, "kiyokawa", "site-b")
    original = damaged.read_bytes()
    middle = len(original) // 2
    try:
        damaged.write_bytes(
            original[:middle] + bytes(b ^ 0xFF for b in original[middle : middle + 64]) + original[middle + 64 :]
        )
        run, result = drill(drill_lab, "--town", "kiyokawa")
    finally:
        damaged.write_bytes(original)
    assert run.code == 1, run
    assert "drill failed for kiyokawa" in run.stderr
    assert result["verdict"] == "fail"
    town = result["towns"][0]
    assert town["verdict"] == "fail"
    failed = [s for s in town["steps"] if s["status"] == "failed"]
    assert [s["name"].split(": ", 2)[-1] for s in failed] == ["restore"], town["steps"]
    assert "pgbackrest restore from repo2 failed" in failed[0]["detail"]
    assert any(r.startswith("step failed: kiyokawa: drill: restore") for r in town["reasons"])
    assert town["rto_s"] is None and not town["marker_recovered"]
    # The scratch instance is removed after the failure too, and the evidence says FAIL.
    assert (
        town["steps"][-1]["name"].endswith("remove-scratch (after a failure)") and town["steps"][-1]["status"] == "ok"
    )
    assert_scratch_gone(drill_lab, town)
    page = (Path(town["evidence"]) / "drill.html").read_text(encoding="utf-8")
    assert '<span id="verdict" class="verdict-fail">FAIL</span>' in page
    ends = audit_ends(drill_lab, "drill")
    assert ends[-1]["result"] == "failed" and ends[-1]["target"]["verdict"] == "fail"
    assert_production_healthy(drill_lab)
    # With the file put back, the same drill passes again.
    run, result = drill(drill_lab, "--town", "kiyokawa")
    assert run.code == 0 and result["verdict"] == "pass", run

"""Offboarding's pure parts: what is removed where, the crypto-shredding of the key files, the evidence as people
read it, and the command's refusal without --yes (the lab test, tests/integration/test_offboard.py, runs it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import LAB, kumiai_in_process, snapshot

from kumiai.datalayer.etcd import range_end
from kumiai.datalayer.offboard import dcs_prefix, removal_plan, remove_paths
from kumiai.datalayer.secrets import shred_town_key, town_key_file
from kumiai.dr.evidence import StepRecord
from kumiai.dr.offboard import (
    BucketRecord,
    OffboardEvidence,
    SiteRecord,
    describe,
    from_json,
    git_commands,
    last_expiry,
    to_html,
    to_json,
    to_markdown,
)
from kumiai.errors import KumiaiError
from kumiai.inventory import load_inventory
from kumiai.lab.layout import build_layout
from kumiai.lab.slots import assign_slots, read_slots, release_slot
from kumiai.lab.supervisor import remove_programs
from support.lab_inventory import posix_lab_inventory, s3_lab_inventory


def test_the_plan_lists_every_piece_of_the_town_at_both_sites_and_nothing_of_another(tmp_path: Path) -> None:
    inv = load_inventory(posix_lab_inventory(tmp_path / "inv"))
    lab = tmp_path / "lab"
    topology = build_layout(lab, inv, {"nakai": 0, "kiyokawa": 1})
    removal = removal_plan(topology, "nakai", ["site-a", "site-b"], "kumiai-town-nakai")
    assert [s.site for s in removal.sites] == ["site-a", "site-b"]
    for s in removal.sites:
        assert s.programs == (f"patroni-nakai-{s.site}-1", f"patroni-nakai-{s.site}-2")
        assert [p.name for p in s.job_files] == [f"nakai-{s.site}-1.json", f"nakai-{s.site}-2.json"]
        assert s.dcs_prefix == f"/kumiai/{s.site}/nakai/"
        assert s.directories == (lab / s.site / "towns" / "nakai", lab / s.site / "drills" / "nakai")
        # Posix repos: the town's own repo directory, not the site's (which holds the other towns').
        assert s.posix_repo == (lab / s.site / "backup" / "nakai",)
        assert s.bucket is None
    assert removal.s3_user is None
    assert removal.key_files[0] == lab / "secrets" / "nakai.vault.yml"
    assert removal.key_files[1] == town_key_file("nakai")
    assert {p.name for p in removal.key_files[2:]} == {"pgbackrest.conf"} and len(removal.key_files) == 6
    assert all("kiyokawa" not in str(p) for p in removal.key_files)
    # Lines for the confirmation name every site and the key.
    lines = describe(removal, LAB / "towns" / "nakai.yaml")
    assert any("crypto-shredding" in line and "nakai.vault.yml" in line for line in lines)


def test_s3_repos_are_left_to_age_out_and_the_towns_user_is_disabled(tmp_path: Path) -> None:
    inv = load_inventory(s3_lab_inventory(tmp_path / "inv"))
    topology = build_layout(tmp_path / "lab", inv, {"nakai": 0})
    removal = removal_plan(topology, "nakai", ["site-a", "site-b"], "kumiai-town-nakai")
    assert [(s.bucket, s.posix_repo) for s in removal.sites] == [("lab-site-a-nakai", ()), ("lab-site-b-nakai", ())]
    assert removal.s3_user == "kumiai-town-nakai"
    assert any("disable S3 user kumiai-town-nakai" in line for line in describe(removal, Path("towns/nakai.yaml")))


def test_a_town_without_its_slot_still_has_its_site_wide_pieces_removed(tmp_path: Path) -> None:
    """A run interrupted after the slot was released: the members are gone, the keys, repo and vault may not be."""
    topology = build_layout(tmp_path, load_inventory(posix_lab_inventory(tmp_path / "inv")), {"kiyokawa": 0})
    removal = removal_plan(topology, "nakai", ["site-a", "site-b"], "kumiai-town-nakai")
    assert all(s.programs == () and s.directories == () and s.posix_repo for s in removal.sites)
    assert removal.key_files == (tmp_path / "secrets" / "nakai.vault.yml", town_key_file("nakai"))


def test_a_towns_dcs_range_never_reaches_a_town_whose_id_it_prefixes() -> None:
    start = dcs_prefix("site-a", "naka")
    end = range_end(start)
    assert (start, end) == ("/kumiai/site-a/naka/", "/kumiai/site-a/naka0")
    assert not start <= "/kumiai/site-a/nakai/leader" < end
    assert start <= "/kumiai/site-a/naka/leader" < end


def test_shredding_destroys_each_key_file_once_and_follows_no_link(tmp_path: Path) -> None:
    vault, conf, other = tmp_path / "t.vault.yml", tmp_path / "pgbackrest.conf", tmp_path / "other.conf"
    vault.write_bytes(b"$ANSIBLE_VAULT;1.1;AES256\n0123")
    conf.write_text("repo1-cipher-pass=secret\n")
    other.write_text("repo1-cipher-pass=another town\n")
    link = tmp_path / "link.conf"
    link.symlink_to(other)
    assert shred_town_key([vault, conf, link, tmp_path / "missing"]) == [vault, conf, link]
    assert not vault.exists() and not conf.exists() and not link.is_symlink()
    assert other.read_text() == "repo1-cipher-pass=another town\n"  # only the link went, not its target
    assert shred_town_key([vault, conf, link]) == []  # again: nothing left to destroy


def test_removing_paths_twice_removes_them_once(tmp_path: Path) -> None:
    town = tmp_path / "towns" / "nakai"
    (town / "member1" / "data").mkdir(parents=True)
    job = tmp_path / "job.json"
    job.write_text("{}")
    assert remove_paths((town, job)) == [str(town), str(job)]
    assert remove_paths((town, job)) == []


def test_slots_are_released_once_and_the_freed_slot_is_taken_next(tmp_path: Path) -> None:
    assign_slots(tmp_path, ["nakai", "kiyokawa"])
    assert release_slot(tmp_path, "nakai") is True
    assert release_slot(tmp_path, "nakai") is False
    assert read_slots(tmp_path) == {"kiyokawa": 1}
    assert assign_slots(tmp_path, ["manazuru"])["manazuru"] == 0


def test_programs_are_not_forgotten_while_their_supervisor_is_down(tmp_path: Path) -> None:
    """Deleting the program files with supervisord down would leave the programs running: refused."""
    site = build_layout(tmp_path, load_inventory(LAB), {}).site("site-a")
    remove_programs(site, ["patroni-nakai-site-a-1"])  # nothing there: nothing to do
    (site.supervisor_dir / "programs").mkdir(parents=True)
    (site.supervisor_dir / "programs" / "patroni-nakai-site-a-1.conf").write_text("[program:x]\n")
    with pytest.raises(KumiaiError, match="supervisord of site-a is not running"):
        remove_programs(site, ["patroni-nakai-site-a-1"])


def evidence(**changes: object) -> OffboardEvidence:
    data: dict[str, object] = {
        "offboard_id": "20261127T120000Z-nakai-abc123",
        "town": "nakai",
        "town_name": "中井町",
        "target": "lab",
        "started_at": "2026-11-27T12:00:00+00:00",
        "finished_at": "2026-11-27T12:00:30+00:00",
        "sites": [SiteRecord(site="site-a", programs=["patroni-nakai-site-a-1"], dcs_prefix="/kumiai/site-a/nakai/")],
        "s3_user": "kumiai-town-nakai",
        "buckets": [
            BucketRecord(
                site="site-a",
                bucket="lab-site-a-nakai",
                exists=True,
                user_disabled=True,
                versions=40,
                locked_versions=40,
                last_retain_until="2026-11-28T11:59:00+00:00",
                noncurrent_days=1,
                gone_by="2026-11-28T12:00:10+00:00",
            ),
            BucketRecord(
                site="site-b",
                bucket="lab-site-b-nakai",
                exists=True,
                user_disabled=True,
                versions=38,
                locked_versions=38,
                last_retain_until="2026-11-28T11:59:30+00:00",
                noncurrent_days=1,
                gone_by="2026-11-28T12:00:10+00:00",
            ),
        ],
        "key_files_destroyed": ["/lab/secrets/nakai.vault.yml"],
        "inventory_file": "inventories/lab/towns/nakai.yaml",
        "inventory_file_removed": True,
        "steps": [StepRecord(name="crypto-shredding", status="ok", seconds=0.01, detail="5 files destroyed")],
        "tools": {"kumiai": "0"},
    }
    data.update(changes)
    return OffboardEvidence.model_validate(data)


def test_the_evidence_says_when_the_last_locked_object_expires_and_who_still_holds_keys() -> None:
    ev = evidence()
    assert last_expiry(ev) == "2026-11-28T11:59:30+00:00"
    assert from_json(to_json(ev)) == ev
    markdown = to_markdown(ev)
    assert "| Last locked object expires | 2026-11-28T11:59:30+00:00 |" in markdown
    assert "escrow" in markdown and "lab-site-b-nakai" in markdown
    page = to_html(ev)
    assert '<p id="escrow">' in page and "2026-11-28T11:59:30+00:00" in page
    assert "<script" not in page and "http" not in page.replace('lang="ja"', "")  # self-contained
    assert last_expiry(evidence(buckets=[])) is None
    assert "no locked object" in to_markdown(evidence(buckets=[]))


def test_the_evidence_escapes_what_it_quotes() -> None:
    page = to_html(evidence(town_name="<script>alert(1)</script>町"))
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "| a\\|b |" in to_markdown(evidence(steps=[StepRecord(name="a|b", status="ok", seconds=0)]))


def test_the_git_commands_record_the_removal_with_quoted_paths() -> None:
    root = Path("/srv/inv with space")
    rm, commit = git_commands(root, root / "towns" / "nakai.yaml")
    assert rm == "git -C '/srv/inv with space' rm -q --cached --ignore-unmatch -- towns/nakai.yaml"
    assert commit.startswith("git -C '/srv/inv with space' commit -m 'Offboard nakai: ") and commit.endswith(
        "-- towns/nakai.yaml"
    )


def test_offboard_without_yes_shows_the_plan_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = tmp_path / "inv"
    shutil.copytree(LAB, inv)
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KUMIAI_INVENTORY", str(inv))
    monkeypatch.delenv("KUMIAI_LAB_DIR", raising=False)
    before = snapshot(tmp_path)
    asked = kumiai_in_process("offboard", "nakai")
    assert asked.code == 2, asked
    assert "--yes: offboarding destroys nakai's clusters" in asked.stderr and "Nothing was changed" in asked.stderr
    assert "crypto-shredding" in asked.stdout and "etcd keys under /kumiai/site-a/nakai/" in asked.stdout
    assert snapshot(tmp_path) == before
    unknown = kumiai_in_process("offboard", "nosuch", "--yes")
    assert unknown.code == 2 and f"{inv / 'towns'}: id: no town 'nosuch'" in unknown.stderr, unknown
    assert "Traceback" not in asked.stderr + unknown.stderr


def test_offboard_of_a_town_offboarded_before_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    where = state / "evidence" / "offboards" / "20261127T120000Z-gone-abc123"
    where.mkdir(parents=True)
    (where / "offboard.json").write_text(to_json(evidence(town="gone")), encoding="utf-8")
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(state))
    monkeypatch.setenv("KUMIAI_INVENTORY", str(LAB))
    monkeypatch.delenv("KUMIAI_LAB_DIR", raising=False)
    again = kumiai_in_process("offboard", "gone", "--yes")
    assert again.code == 0 and "gone is offboarded already" in again.stdout, again
    assert json.loads((where / "offboard.json").read_text())["town"] == "gone"

"""The evidence bucket without a store: which site gets the copies, the bucket's spec, the controller's files, and
the audit trail checked against a remote anchor (an in-memory one here; the real bucket is in
tests/integration/test_object_store.py)."""

from __future__ import annotations

import dataclasses
import json
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kumiai.audit.chain import head_of
from kumiai.audit.trail import Trail, append, verify
from kumiai.datalayer.topology import Topology
from kumiai.errors import KumiaiError
from kumiai.inventory import load_inventory
from kumiai.lab.layout import build_layout
from kumiai.models import TOWN_ID_PATTERN
from kumiai.objectstore.evidence import (
    CONFIG_FILE,
    EVIDENCE_RETENTION_DAYS,
    EVIDENCE_USER,
    ensure_credentials,
    evidence_bucket,
    evidence_key,
    evidence_site,
    head_key,
    load_store,
    mirror_for,
    newest_anchored,
    publish_evidence,
    save_store,
    store_of,
)
from kumiai.objectstore.provision import evidence_spec
from support.lab_inventory import posix_lab_inventory, s3_lab_inventory

ROOT = Path(__file__).resolve().parents[2]


def s3_topology(tmp_path: Path, **consortium: object) -> Topology:
    inv = load_inventory(s3_lab_inventory(tmp_path / "inv", **consortium))
    return build_layout(tmp_path / "lab", inv, {})


# --- which site, which bucket


def test_copies_go_to_the_dr_site_whatever_the_order_in_consortium_yaml(tmp_path: Path) -> None:
    topology = s3_topology(tmp_path)
    assert [s.role for s in topology.sites] == ["primary", "dr"]
    site = evidence_site(topology.sites)
    assert site is not None and site.id == "site-b"
    assert evidence_site(tuple(reversed(topology.sites))) == site


def test_without_an_object_store_at_the_dr_site_nothing_is_copied(tmp_path: Path) -> None:
    posix = build_layout(tmp_path / "lab", load_inventory(posix_lab_inventory(tmp_path / "posix")), {})
    assert evidence_site(posix.sites) is None
    # Only the primary site with a store: that is where the controller is, so still nothing.
    topology = s3_topology(tmp_path)
    only_primary = tuple(
        s if s.role == "primary" else dataclasses.replace(s, object_store=None) for s in topology.sites
    )
    assert evidence_site(only_primary) is None


def test_the_evidence_bucket_is_locked_as_the_consortium_says_and_its_user_cannot_delete(tmp_path: Path) -> None:
    topology = s3_topology(tmp_path, object_lock_mode="GOVERNANCE")
    store = topology.site("site-b").object_store
    assert store is not None
    spec = evidence_spec(store)
    assert spec.name == "lab-site-b.evidence"
    assert spec.lock_configuration() == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": EVIDENCE_RETENTION_DAYS}},
    }
    statements = spec.policy()["Statement"]
    assert {p for s in statements for p in s["Principal"]["AWS"]} == {f"arn:aws:iam:::user/{EVIDENCE_USER}"}
    actions = {a for s in statements for a in s["Action"]}
    assert "s3:PutObject" in actions and "s3:ListBucketVersions" in actions
    assert not {a for a in actions if "Delete" in a or a == "s3:PutObjectRetention"}, actions


def test_no_town_can_be_given_the_evidence_bucket(tmp_path: Path) -> None:
    store = s3_topology(tmp_path).site("site-a").object_store
    assert store is not None
    for town in ("evidence", "kumiai-evidence", "lab-site-a"):
        assert re.fullmatch(TOWN_ID_PATTERN, town)
        assert store.bucket(town) != evidence_bucket(store)  # '-' after the prefix, never the '.' it has


# --- the controller's files


def test_the_store_is_recorded_once_and_forgotten_with_none(tmp_path: Path) -> None:
    topology = s3_topology(tmp_path)
    site = evidence_site(topology.sites)
    assert site is not None
    state = tmp_path / "state"
    assert load_store(state) is None and mirror_for(state) is None
    assert save_store(state, store_of(site)) is True
    assert save_store(state, store_of(site)) is False  # a re-run changes nothing
    assert load_store(state) == store_of(site)
    assert stat.S_IMODE((state / CONFIG_FILE).stat().st_mode) == 0o600
    assert "secret" not in (state / CONFIG_FILE).read_text(encoding="utf-8")
    assert save_store(state, None) is True
    assert load_store(state) is None and save_store(state, None) is False


def test_a_damaged_store_file_is_named(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(KumiaiError, match=str(tmp_path / CONFIG_FILE)):
        load_store(tmp_path)


def test_the_evidence_users_keys_are_made_once_and_private(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path)
    assert ensure_credentials(tmp_path) == first
    path = tmp_path / "secrets" / "evidence-s3.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.secret_key not in repr(first)


def test_evidence_keys_follow_the_evidence_directory(tmp_path: Path) -> None:
    where = tmp_path / "evidence"
    assert evidence_key(where / "drills" / "d1" / "drill.json", where) == "evidence/drills/d1/drill.json"
    assert head_key(42) == "audit/heads/000000000042.json"


def test_without_a_store_evidence_stays_local_as_before(tmp_path: Path) -> None:
    (tmp_path / "evidence").mkdir()
    path = tmp_path / "evidence" / "x.json"
    path.write_text("{}", encoding="utf-8")
    assert publish_evidence([path], tmp_path, tmp_path / "evidence") == []
    assert Trail.for_log(tmp_path / "audit" / "audit.jsonl").remote is None


# --- reading the anchor back


def version(key: str, vid: str, minutes: int) -> dict[str, object]:
    return {"Key": key, "VersionId": vid, "LastModified": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)}


def test_the_highest_head_wins_and_its_first_version_is_read() -> None:
    found = newest_anchored(
        [version(head_key(1), "a", 0), version(head_key(3), "later", 9), version(head_key(3), "c", 2)], []
    )
    assert (found.key, found.version_id, found.problems, found.later_versions) == (head_key(3), "c", [], ("later",))


def test_delete_markers_and_foreign_keys_are_signs_of_tampering_not_hiding_places() -> None:
    found = newest_anchored(
        [version(head_key(2), "a", 0), version(head_key(5), "b", 1), version("audit/heads/x", "c", 2)],
        [{"Key": head_key(5), "VersionId": "m"}],
    )
    assert found.key == head_key(5)
    assert any("delete marker" in p for p in found.problems) and any("audit/heads/x" in p for p in found.problems)
    assert newest_anchored([], []).key is None


# --- the trail against a remote anchor


@dataclasses.dataclass
class MemoryAnchor:
    """Heads by sequence number, as a locked bucket keeps them: a put never removes an earlier one."""

    heads: dict[int, bytes] = dataclasses.field(default_factory=dict)
    down: bool = False
    where: str = "memory://evidence"

    def put_head(self, seq: int, body: bytes) -> None:
        if self.down:
            raise KumiaiError("the store is down")
        self.heads.setdefault(seq, body)

    def newest_head(self) -> tuple[bytes | None, list[str]]:
        return (self.heads[max(self.heads)] if self.heads else None), []


def remote_trail(tmp_path: Path, remote: MemoryAnchor, records: int = 5) -> Trail:
    trail = Trail.for_log(tmp_path / "state" / "audit" / "audit.jsonl")
    trail = dataclasses.replace(trail, remote=remote)
    for n in range(records):
        append(trail, {"event": "begin", "operation": f"op{n}", "time": f"t{n}"})
    return trail


def test_every_head_is_copied_and_the_log_verifies_against_both_anchors(tmp_path: Path) -> None:
    remote = MemoryAnchor()
    trail = remote_trail(tmp_path, remote)
    assert sorted(remote.heads) == [1, 2, 3, 4, 5]
    check = verify(trail)
    assert check.ok, check.problems
    assert check.as_dict()["remote_anchor"] == "memory://evidence"


def test_newest_records_deleted_and_the_local_anchor_rewritten_are_found_against_the_remote(tmp_path: Path) -> None:
    remote = MemoryAnchor()
    trail = remote_trail(tmp_path, remote)
    kept = trail.log.read_bytes().splitlines(keepends=True)[:-2]
    trail.log.write_bytes(b"".join(kept))
    trail.anchor.write_text(head_of(json.loads(kept[-1])).model_dump_json() + "\n", encoding="utf-8")
    # The control: this machine's anchor alone is fooled.
    assert verify(dataclasses.replace(trail, remote=None)).ok
    check = verify(trail)
    assert [str(p) for p in check.problems] == [
        "seq 4: the anchor in memory://evidence: the newest 2 record(s) are missing: the log ends at seq 3, "
        "the anchor's head is seq 5, written t4"
    ]


def test_a_store_that_is_down_is_a_warning_and_the_next_copy_catches_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = MemoryAnchor()
    trail = remote_trail(tmp_path, remote, records=2)
    remote.down = True
    append(trail, {"event": "begin", "operation": "while-down", "time": "t2"})
    assert "warning: the audit anchor (seq 3) was not copied: the store is down" in capsys.readouterr().err
    behind = verify(trail)
    assert [p.seq for p in behind.problems] == [3] and "is behind the log" in str(behind.problems[0])
    remote.down = False
    append(trail, {"event": "begin", "operation": "after", "time": "t3"})
    assert verify(trail).ok


def test_a_remote_without_any_head_confirms_nothing(tmp_path: Path) -> None:
    trail = remote_trail(tmp_path, MemoryAnchor(), records=1)
    check = verify(dataclasses.replace(trail, remote=MemoryAnchor()))
    assert [str(p) for p in check.problems] == [
        "the anchor in memory://evidence holds no head: the newest record cannot be confirmed there"
    ]


def test_unreadable_store_settings_warn_on_every_copy_and_fail_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / CONFIG_FILE).write_text("{not json", encoding="utf-8")
    trail = Trail.for_log(state / "audit" / "audit.jsonl")
    append(trail, {"event": "begin", "operation": "op", "time": "t0"})  # recorded all the same
    assert f"{state / CONFIG_FILE} is damaged" in capsys.readouterr().err
    check = verify(trail)
    assert len(check.problems) == 1 and f"{state / CONFIG_FILE} is damaged" in str(check.problems[0])

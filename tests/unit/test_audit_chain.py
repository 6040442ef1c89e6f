"""The keyed, anchored chain: every way of tampering with the log is caught and the first bad record named."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import kumiai_in_process

from kumiai.audit.chain import GENESIS, canonical, head_of, seal
from kumiai.audit.trail import Trail, append, read_anchor, verify
from kumiai.errors import InputError, KumiaiError

RECORDS = 5


@pytest.fixture
def trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trail:
    monkeypatch.delenv("KUMIAI_AUDIT_ANCHOR", raising=False)
    trail = Trail.for_log(tmp_path / "state" / "audit" / "audit.jsonl")
    for n in range(RECORDS):
        append(trail, {"event": "begin", "operation": f"op{n}", "target": {"town": "中井町"}, "time": f"t{n}"})
    return trail


def lines(trail: Trail) -> list[bytes]:
    return trail.log.read_bytes().splitlines(keepends=True)


def write(trail: Trail, new: list[bytes]) -> None:
    trail.log.write_bytes(b"".join(new))


def first_bad(trail: Trail) -> dict:
    check = verify(trail)
    assert not check.ok, "tampering went undetected"
    return check.as_dict()["first_bad"]


def test_an_untouched_log_verifies(trail: Trail) -> None:
    check = verify(trail)
    assert check.ok, check.problems
    assert check.checked.records == RECORDS
    assert check.checked.head is not None and check.checked.head.seq == RECORDS
    assert read_anchor(trail) == check.checked.head
    assert check.warnings == []


def test_no_log_and_no_anchor_verifies_empty(tmp_path: Path) -> None:
    check = verify(Trail.for_log(tmp_path / "state" / "audit" / "audit.jsonl"))
    assert check.ok and check.checked.records == 0


def test_any_byte_changed_in_any_record_is_caught_at_that_record(trail: Trail) -> None:
    original = lines(trail)
    for index, line in enumerate(original):
        for pos in range(len(line)):
            changed = bytearray(line)
            changed[pos] ^= 0x01
            write(trail, [*original[:index], bytes(changed), *original[index + 1 :]])
            bad = first_bad(trail)
            assert bad["line"] == index + 1, (index, pos, bad)


@pytest.mark.parametrize("index", range(RECORDS))
def test_any_deleted_record_is_caught(trail: Trail, index: int) -> None:
    original = lines(trail)
    write(trail, original[:index] + original[index + 1 :])
    bad = first_bad(trail)
    if index == RECORDS - 1:  # the newest: only the anchor knows it existed
        assert bad["seq"] == RECORDS and "the newest 1 record(s) are missing" in bad["problem"]
    else:
        assert (bad["line"], bad["seq"]) == (index + 1, index + 2)
        assert "out of sequence" in bad["problem"]


def test_the_deleted_log_is_caught(trail: Trail) -> None:
    trail.log.unlink()
    bad = first_bad(trail)
    assert f"the log is missing: the anchor's head is seq {RECORDS}" in bad["problem"]


def test_an_emptied_log_is_caught(trail: Trail) -> None:
    trail.log.write_bytes(b"")
    assert f"the newest {RECORDS} record(s) are missing" in first_bad(trail)["problem"]


@pytest.mark.parametrize("index", range(RECORDS - 1))
def test_two_records_swapped_are_caught(trail: Trail, index: int) -> None:
    original = lines(trail)
    swapped = list(original)
    swapped[index], swapped[index + 1] = original[index + 1], original[index]
    write(trail, swapped)
    assert first_bad(trail)["line"] == index + 1


def test_a_record_removed_and_its_successor_relinked_is_caught(trail: Trail) -> None:
    original = [json.loads(line) for line in lines(trail)]
    relinked = dict(original[3], prev=original[1]["mac"], seq=3)  # record 3 gone, 4 made to follow 2
    write(trail, [(canonical(r) + "\n").encode() for r in (original[0], original[1], relinked, original[4])])
    bad = first_bad(trail)
    assert bad["line"] == 3 and "its MAC does not match" in bad["problem"]


def _plain_chain(records: list[dict]) -> list[bytes]:
    """What someone without the key can do: recompute an unkeyed SHA-256 chain in the same fields."""
    prev, out = GENESIS, []
    for record in records:
        body = {k: v for k, v in record.items() if k != "mac"} | {"prev": prev}
        body["mac"] = hashlib.sha256(canonical(body).encode()).hexdigest()
        out.append((canonical(body) + "\n").encode())
        prev = body["mac"]
    return out


def test_a_log_rewritten_with_a_recomputed_plain_chain_is_caught(trail: Trail) -> None:
    records = [json.loads(line) for line in lines(trail)]
    records[1]["target"] = {"town": "oi"}
    write(trail, _plain_chain(records))
    bad = first_bad(trail)
    assert bad["line"] == 1 and "its MAC does not match" in bad["problem"]


def test_a_plain_chain_without_macs_is_named_as_such(trail: Trail) -> None:
    records = [{k: v for k, v in json.loads(line).items() if k not in ("mac", "key_id")} for line in lines(trail)]
    write(trail, [(canonical(r) + "\n").encode() for r in records])
    assert "not sealed with the audit key" in first_bad(trail)["problem"]


def test_a_rewrite_with_the_key_itself_is_caught_by_the_anchor(trail: Trail) -> None:
    """An insider holding this site's key can re-seal an edited log, but not change the anchor at the other site."""
    key = bytes.fromhex(trail.key.read_text().strip())
    records = [json.loads(line) for line in lines(trail)]
    records[2]["target"] = {"town": "oi"}
    head, resealed = None, []
    for record in records:
        sealed = seal({k: v for k, v in record.items() if k not in ("seq", "prev", "key_id", "mac")}, key, head)
        resealed.append((canonical(sealed) + "\n").encode())
        head = head_of(sealed)
    write(trail, resealed)
    bad = first_bad(trail)
    assert bad["seq"] == RECORDS and "not the one anchored" in bad["problem"]


def test_a_replaced_key_is_caught(trail: Trail) -> None:
    trail.key.write_text("ab" * 32 + "\n")
    bad = first_bad(trail)
    assert bad["line"] == 1 and "sealed with another key" in bad["problem"]


def test_a_missing_key_is_caught_and_never_silently_remade(trail: Trail) -> None:
    trail.key.unlink()
    assert "audit key" in first_bad(trail)["problem"]
    before = trail.log.read_bytes()
    with pytest.raises(KumiaiError, match="restore the key from escrow"):
        append(trail, {"event": "begin", "operation": "next"})
    assert not trail.key.exists() and trail.log.read_bytes() == before


def test_a_missing_anchor_is_caught(trail: Trail) -> None:
    trail.anchor.unlink()
    assert "no anchor" in first_bad(trail)["problem"]


def test_an_anchor_left_one_behind_by_a_killed_write_catches_up(trail: Trail) -> None:
    """Killed between appending to the log and rewriting the anchor: verify says so, the next record repairs it."""
    behind = read_anchor(trail)
    append(trail, {"event": "begin", "operation": "op5"})
    assert behind is not None
    trail.anchor.write_text(behind.model_dump_json())
    assert "the anchor is behind the log" in first_bad(trail)["problem"]
    append(trail, {"event": "begin", "operation": "op6"})
    assert verify(trail).ok


def test_appending_after_a_damaged_last_record_is_refused(trail: Trail) -> None:
    write(trail, [*lines(trail), b'{"operation": "half-writ'])
    before = trail.log.read_bytes()
    with pytest.raises(KumiaiError, match="ends with a damaged record"):
        append(trail, {"event": "begin", "operation": "next"})
    assert trail.log.read_bytes() == before


def test_appending_after_the_log_was_deleted_is_refused(trail: Trail) -> None:
    trail.log.unlink()
    with pytest.raises(KumiaiError, match="the log is missing but its anchor"):
        append(trail, {"event": "begin", "operation": "next"})
    assert not trail.log.exists()


def test_loose_file_modes_are_warned_about(trail: Trail) -> None:
    trail.log.chmod(0o644)
    check = verify(trail)
    assert check.ok and check.warnings == [f"{trail.log} is mode 0644; it should be 0600"]


# --- through the command line: every tamper case fails, also with --json

Tamper = Callable[[Trail], None]


def _change_a_byte(trail: Trail) -> None:
    data = bytearray(trail.log.read_bytes())
    data[data.index(b"op2") + 2] = ord("9")
    trail.log.write_bytes(bytes(data))


def _delete(index: int) -> Tamper:
    return lambda trail: write(trail, [line for i, line in enumerate(lines(trail)) if i != index])


def _swap(trail: Trail) -> None:
    original = lines(trail)
    write(trail, [original[0], original[2], original[1], *original[3:]])


def _plain_rewrite(trail: Trail) -> None:
    write(trail, _plain_chain([json.loads(line) for line in lines(trail)]))


def _relink(trail: Trail) -> None:
    records = [json.loads(line) for line in lines(trail)]
    records[2] |= {"prev": records[0]["mac"], "seq": 2}
    write(trail, [(canonical(r) + "\n").encode() for r in (records[0], *records[2:])])


TAMPERS: dict[str, tuple[Tamper, str]] = {
    "byte": (_change_a_byte, "line 3, seq 3: changed after it was written"),
    "first": (_delete(0), "line 1, seq 2: out of sequence"),
    "middle": (_delete(2), "line 3, seq 4: out of sequence"),
    "newest": (_delete(RECORDS - 1), f"seq {RECORDS}: the newest 1 record(s) are missing"),
    "log": (lambda trail: trail.log.unlink(), "seq 1: the log is missing"),
    "swap": (_swap, "line 2, seq 3: out of sequence"),
    "relink": (_relink, "line 2, seq 2: changed after it was written"),
    "plain": (_plain_rewrite, "line 1, seq 1: changed after it was written"),
}


@pytest.mark.parametrize("case", TAMPERS, ids=list(TAMPERS))
def test_audit_verify_fails_and_names_the_first_bad_record(
    trail: Trail, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tamper, named = TAMPERS[case]
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(trail.log.parent.parent))
    assert kumiai_in_process("audit", "verify", "--json").code == 0
    tamper(trail)

    text = kumiai_in_process("audit", "verify")
    assert text.code == 1
    assert named in text.stderr
    as_json = kumiai_in_process("audit", "verify", "--json")
    assert as_json.code == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False
    assert str(named).split(": ", 1)[1] in data["first_bad"]["problem"]


def test_an_anchor_in_the_logs_own_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "state" / "audit" / "audit.jsonl"
    monkeypatch.setenv("KUMIAI_AUDIT_ANCHOR", str(log.parent))
    with pytest.raises(InputError, match=r"KUMIAI_AUDIT_ANCHOR: .* is the log's own directory"):
        append(Trail.for_log(log), {"event": "begin", "operation": "op"})
    assert not log.exists()


def test_an_anchor_set_elsewhere_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other_site = tmp_path / "site-b" / "kumiai-anchor"
    monkeypatch.setenv("KUMIAI_AUDIT_ANCHOR", str(other_site))
    trail = Trail.for_log(tmp_path / "state" / "audit" / "audit.jsonl")
    append(trail, {"event": "begin", "operation": "op"})
    assert trail.anchor == other_site / "audit-head.json" and trail.anchor.exists()
    assert not (tmp_path / "state" / "anchor").exists()
    assert verify(trail).ok

"""Operations: timed steps, results, and the hash-chained audit log that detects tampering."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kumiai.errors import KumiaiError
from kumiai.ops import GENESIS, Operation, append_record, verify_chain


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_lines(log: Path, lines: list[str]) -> None:
    log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


def three_records(log: Path) -> list[str]:
    for n in range(3):
        append_record(log, {"operation": f"op{n}", "target": {"town": "nakai"}, "result": "ok"})
    return log.read_text(encoding="utf-8").splitlines()


# --- operations and steps


def test_steps_are_timed_and_recorded(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMIAI_ACTOR", "tanaka")
    monkeypatch.setenv("KUMIAI_APPROVED_BY", "suzuki")
    with Operation("onboard", target={"town": "nakai"}, log_path=log) as op:
        with op.step("render") as step:
            time.sleep(0.05)
            step.detail = "3 namespaces"
        with op.step("apply"):
            pass
        op.skip("restore-test", "no backup yet")

    assert op.result == "ok"
    (rec,) = records(log)
    assert rec == op.record | {"prev": GENESIS, "hash": rec["hash"]}
    assert rec["operation"] == "onboard"
    assert rec["target"] == {"town": "nakai"}
    assert rec["actor"] == "tanaka"
    assert rec["approved_by"] == "suzuki"
    assert rec["result"] == "ok"
    assert rec["error"] is None
    assert rec["tools"]["kumiai"]
    steps = rec["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [("render", "ok"), ("apply", "ok"), ("restore-test", "skipped")]
    assert steps[0]["detail"] == "3 namespaces"
    assert 0.05 <= steps[0]["seconds"] < 1.0
    assert steps[2]["detail"] == "no backup yet"
    assert rec["seconds"] >= steps[0]["seconds"]
    assert verify_chain(log) == []


def test_a_failed_step_fails_the_operation_and_is_recorded(log: Path) -> None:
    with pytest.raises(RuntimeError, match="disk full"), Operation("backup", target={"town": "oi"}, log_path=log) as op:
        with op.step("stanza"):
            pass
        with op.step("full backup"):
            raise RuntimeError("disk full")
        with op.step("never reached"):
            pass

    (rec,) = records(log)
    assert rec["result"] == "failed"
    assert rec["error"] == "disk full"
    assert [(s["name"], s["status"]) for s in rec["steps"]] == [("stanza", "ok"), ("full backup", "failed")]
    assert rec["steps"][1]["detail"] == "RuntimeError"


def test_an_interrupted_operation_is_recorded_as_such(log: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Operation("restore", log_path=log) as op, op.step("fetch"):
        raise KeyboardInterrupt

    (rec,) = records(log)
    assert rec["result"] == "interrupted"
    assert rec["error"] is None
    assert rec["steps"][0]["status"] == "failed"
    assert rec["steps"][0]["detail"] == "KeyboardInterrupt"


def test_a_dry_run_writes_nothing(log: Path) -> None:
    with Operation("onboard", target={"town": "nakai"}, dry_run=True, log_path=log) as op, op.step("render"):
        pass
    assert op.result == "ok"
    assert op.record is None
    assert not log.exists()
    assert not log.parent.exists()


def test_the_default_log_is_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    with Operation("noop"):
        pass
    assert len(records(tmp_path / "state" / "audit" / "audit.jsonl")) == 1


# --- the hash chain


def test_the_chain_links_each_record_to_the_one_before(log: Path) -> None:
    three_records(log)
    recs = records(log)
    assert recs[0]["prev"] == GENESIS
    assert [r["prev"] for r in recs[1:]] == [r["hash"] for r in recs[:-1]]
    assert len({r["hash"] for r in recs}) == 3
    assert verify_chain(log) == []


def test_a_missing_log_verifies_empty(log: Path) -> None:
    assert verify_chain(log) == []


def test_an_edited_field_is_detected(log: Path) -> None:
    lines = three_records(log)
    rec = json.loads(lines[1])
    rec["result"] = "failed"
    lines[1] = json.dumps(rec, ensure_ascii=False, sort_keys=True)
    write_lines(log, lines)
    assert verify_chain(log) == [f"{log}:2: record was changed after it was written"]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(log: Path) -> None:
    """Whoever edits a record and recomputes its hash still has to rewrite every record after it."""
    from kumiai.ops import _digest

    lines = three_records(log)
    rec = json.loads(lines[0])
    rec["target"] = {"town": "oi"}
    rec["hash"] = _digest(rec)
    lines[0] = json.dumps(rec, ensure_ascii=False, sort_keys=True)
    write_lines(log, lines)
    assert verify_chain(log) == [f"{log}:2: does not follow the record before it"]


def test_a_deleted_record_is_detected(log: Path) -> None:
    lines = three_records(log)
    write_lines(log, [lines[0], lines[2]])
    assert verify_chain(log) == [f"{log}:2: does not follow the record before it"]


def test_a_deleted_first_record_is_detected(log: Path) -> None:
    lines = three_records(log)
    write_lines(log, lines[1:])
    assert verify_chain(log) == [f"{log}:1: does not follow the record before it"]


def test_reordered_records_are_detected(log: Path) -> None:
    lines = three_records(log)
    write_lines(log, [lines[1], lines[0], lines[2]])
    problems = verify_chain(log)
    assert f"{log}:1: does not follow the record before it" in problems
    assert f"{log}:2: does not follow the record before it" in problems


def test_a_line_that_is_not_a_record_is_detected(log: Path) -> None:
    lines = three_records(log)
    write_lines(log, [lines[0], "[1, 2]", *lines[1:]])
    problems = verify_chain(log)
    assert problems[0] == f"{log}:2: not a JSON record"
    assert f"{log}:3: does not follow the record before it" in problems


def test_undecodable_bytes_are_reported_not_raised(log: Path) -> None:
    lines = three_records(log)
    log.write_bytes("\n".join(lines).encode().replace(b"op1", b"op\xff", 1) + b"\n")
    assert verify_chain(log) == [f"{log}:2: record was changed after it was written"]


def test_appending_after_a_damaged_last_record_is_refused(log: Path) -> None:
    lines = three_records(log)
    write_lines(log, [*lines, '{"operation": "half-writ'])
    before = log.read_bytes()
    with pytest.raises(KumiaiError, match="ends with a damaged record"):
        append_record(log, {"operation": "next"})
    assert log.read_bytes() == before


# --- concurrent writers

WRITER = """
import sys, time
from pathlib import Path
from kumiai.ops import append_record
log, who, n, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # all writers begin together, so their appends really overlap
for i in range(n):
    append_record(log, {"operation": "concurrent", "target": {"writer": who, "n": i}})
"""


def test_concurrent_appends_from_several_processes_keep_the_chain(log: Path) -> None:
    """Without the file lock the same run breaks the chain (in a trial, 25 of 200 links)."""
    writers, each = 4, 50
    start = time.time() + 1.0  # after every interpreter has started
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log), f"w{w}", str(each), str(start)])
        for w in range(writers)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * writers

    recs = records(log)
    assert len(recs) == writers * each
    assert verify_chain(log) == []
    # Every writer's records are all there, in its own order.
    for w in range(writers):
        mine = [r["target"]["n"] for r in recs if r["target"]["writer"] == f"w{w}"]
        assert mine == list(range(each))

"""Operations: timed steps, a begin and an end record per run, each sealed into the audit trail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import pytest
import typer

from kumiai.audit.runs import NOT_ENDED, runs_of
from kumiai.audit.trail import Trail, verify
from kumiai.ops import Operation
from support.operations import kill_inside_an_operation


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("KUMIAI_ACTOR", "KUMIAI_APPROVED_BY", "KUMIAI_AUDIT_ANCHOR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "state" / "audit" / "audit.jsonl"


def test_steps_are_timed_and_recorded_between_a_begin_and_an_end(log: Path) -> None:
    with Operation("onboard", target={"town": "nakai"}, log_path=log) as op:
        with op.step("render") as step:
            time.sleep(0.05)
            step.detail = "3 namespaces"
        with op.step("apply"):
            pass
        op.skip("restore-test", "no backup yet")
        op.target["changed"] = 2

    assert op.result == "ok"
    begin, end = records(log)
    assert begin == op.begin_record and end == op.record
    assert (begin["event"], end["event"]) == ("begin", "end")
    assert begin["run"] == end["run"] == op.run_id
    assert (begin["seq"], end["seq"]) == (1, 2)
    assert begin["operation"] == end["operation"] == "onboard"
    assert begin["target"] == {"town": "nakai"}
    assert end["target"] == {"town": "nakai", "changed": 2}  # what the run found out, at its end
    assert begin["who"]["os_user"] and begin["who"]["uid"] == os.getuid()
    assert begin["tools"]["kumiai"]
    assert end["result"] == "ok" and end["error"] is None
    steps = end["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [("render", "ok"), ("apply", "ok"), ("restore-test", "skipped")]
    assert steps[0]["detail"] == "3 namespaces"
    assert 0.05 <= steps[0]["seconds"] < 1.0
    assert steps[2]["detail"] == "no backup yet"
    assert end["seconds"] >= steps[0]["seconds"]
    assert verify(Trail.for_log(log)).ok


def test_claims_are_recorded_as_claims_never_as_the_actor(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMIAI_ACTOR", "tanaka")
    monkeypatch.setenv("KUMIAI_APPROVED_BY", "suzuki")
    with Operation("onboard", target={"town": "nakai"}, log_path=log):
        pass
    begin, _ = records(log)
    who = begin["who"]
    assert who["claimed_actor"] == "tanaka" and who["claimed_approver"] == "suzuki"
    assert who["os_user"] != "tanaka"
    assert begin["approval"] is None  # only a verified signature is an approval
    assert "actor" not in begin and "approved_by" not in begin


def test_plan_and_approval_known_at_the_start_or_found_during_the_run_are_recorded(log: Path) -> None:
    approval = {"approver": "suzuki", "role": "監査", "key": "SHA256:abc", "verified": True}
    with Operation("apply", target={"town": "nakai"}, plan_hash="f" * 64, approval=approval, log_path=log):
        pass
    with Operation("apply", target={"town": "nakai"}, log_path=log) as op:
        op.plan_hash, op.approval = "e" * 64, approval  # read from the plan file and verified by this run
    known, _, found_begin, found_end = records(log)
    assert (known["plan_hash"], known["approval"]) == ("f" * 64, approval)
    assert (found_begin["plan_hash"], found_begin["approval"]) == (None, None)
    assert (found_end["plan_hash"], found_end["approval"]) == ("e" * 64, approval)
    assert [r.as_dict()["plan_hash"] for r in runs_of(records(log))] == ["f" * 64, "e" * 64]


def test_the_inventory_is_recorded_by_its_git_tree(log: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    inv = repo / "inventories" / "lab"
    inv.mkdir(parents=True)
    (inv / "consortium.yaml").write_text("name: lab\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "inventory"], check=True)
    tree = subprocess.run([*git, "rev-parse", "HEAD:inventories/lab"], check=True, capture_output=True, text=True)

    with Operation("onboard", inventory=inv, log_path=log):
        pass
    (inv / "consortium.yaml").write_text("name: changed\n")
    with Operation("onboard", inventory=inv, log_path=log):
        pass
    clean, _, dirty, _ = records(log)
    assert clean["inventory"]["tree"] == tree.stdout.strip() and clean["inventory"]["dirty"] is False
    assert dirty["inventory"]["tree"] == tree.stdout.strip() and dirty["inventory"]["dirty"] is True
    assert clean["inventory"]["path"] == str(inv)


def test_without_an_inventory_argument_the_command_lines_inventory_is_recorded(log: Path, tmp_path: Path) -> None:
    """Commands do not pass their inventory: the global --inventory option the CLI parsed is found and recorded."""
    from typer.testing import CliRunner

    from kumiai.main import AppState

    app = typer.Typer()

    @app.callback()
    def main(ctx: typer.Context, inventory: Annotated[Path, typer.Option()]) -> None:
        ctx.obj = AppState(inventory_path=inventory)

    @app.command()
    def change() -> None:
        with Operation("change", log_path=log):
            pass

    result = CliRunner().invoke(app, ["--inventory", str(tmp_path), "change"])
    assert result.exit_code == 0, result.output
    begin, _ = records(log)
    assert begin["inventory"]["path"] == str(tmp_path)


def test_the_command_line_is_recorded_with_secrets_masked(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["kumiai", "onboard", "nakai", "--password", "hunter2", "s3://ops:s3cret@rgw.example/bucket"]
    monkeypatch.setattr(sys, "argv", argv)
    with Operation("onboard", target={"town": "nakai"}, log_path=log):
        pass
    text = log.read_text(encoding="utf-8")
    assert "hunter2" not in text and "s3cret" not in text
    begin, _ = records(log)
    assert begin["command"] == [
        "kumiai",
        "onboard",
        "nakai",
        "--password",
        "[secret]",
        "s3://ops:[secret]@rgw.example/bucket",
    ]


def test_a_failed_step_fails_the_operation_and_is_recorded(log: Path) -> None:
    with pytest.raises(RuntimeError, match="disk full"), Operation("backup", target={"town": "oi"}, log_path=log) as op:
        with op.step("stanza"):
            pass
        with op.step("full backup"):
            raise RuntimeError("disk full")
        with op.step("never reached"):
            pass

    _, end = records(log)
    assert end["result"] == "failed"
    assert end["error"] == "disk full"
    assert [(s["name"], s["status"]) for s in end["steps"]] == [("stanza", "ok"), ("full backup", "failed")]
    assert end["steps"][1]["detail"] == "RuntimeError"


def test_secrets_in_an_error_message_are_masked(log: Path) -> None:
    with pytest.raises(RuntimeError), Operation("backup", log_path=log):
        raise RuntimeError("connect to postgresql://app:hunter2@127.0.1.11/db failed, password=hunter2")
    _, end = records(log)
    assert end["error"] == "connect to postgresql://app:[secret]@127.0.1.11/db failed, password=[secret]"


def test_an_interrupted_operation_is_recorded_as_such(log: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Operation("restore", log_path=log) as op, op.step("fetch"):
        raise KeyboardInterrupt

    _, end = records(log)
    assert end["result"] == "interrupted"
    assert end["error"] is None
    assert end["steps"][0]["status"] == "failed"
    assert end["steps"][0]["detail"] == "KeyboardInterrupt"


def test_a_dry_run_writes_nothing(log: Path) -> None:
    with Operation("onboard", target={"town": "nakai"}, dry_run=True, log_path=log) as op, op.step("render"):
        pass
    assert op.result == "ok"
    assert op.record is None and op.begin_record is None
    assert not log.parent.parent.exists()  # no log, no key, no anchor


def test_the_default_trail_is_under_the_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("KUMIAI_AUDIT_ANCHOR", raising=False)
    with Operation("noop"):
        pass
    state = tmp_path / "state"
    assert len(records(state / "audit" / "audit.jsonl")) == 2
    assert (state / "secrets" / "audit.key").exists()
    assert json.loads((state / "anchor" / "audit-head.json").read_text())["seq"] == 2


def test_log_key_and_anchor_are_private(log: Path) -> None:
    with Operation("noop", log_path=log):
        pass
    trail = Trail.for_log(log)
    for path in (trail.log, trail.key, trail.anchor):
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert path.parent.stat().st_mode & 0o777 == 0o700, path.parent
    assert trail.key.parent != trail.log.parent and trail.anchor_dir != trail.log.parent


def test_a_tampered_trail_refuses_to_run_the_operation(log: Path) -> None:
    """A command that cannot leave a trustworthy record does not change anything."""
    with Operation("first", log_path=log):
        pass
    lines = log.read_text(encoding="utf-8").splitlines()
    log.write_text(lines[0] + "\n", encoding="utf-8")  # the newest record removed
    ran = []
    with pytest.raises(Exception, match="does not match the anchor"), Operation("second", log_path=log):
        ran.append(True)
    assert ran == []


# --- kill -9 and concurrent writers: real processes


def test_kill_9_inside_an_operation_leaves_a_begin_without_an_end(log: Path, tmp_path: Path) -> None:
    kill_inside_an_operation(log, tmp_path, "onboard", "nakai")

    (run,) = runs_of(records(log))
    assert run.operation == "onboard" and not run.ended and run.result == NOT_ENDED
    assert verify(Trail.for_log(log)).ok  # an interrupted run is not a damaged log
    with Operation("onboard", target={"town": "nakai"}, log_path=log):
        pass  # and the next run chains on
    assert [r.result for r in runs_of(records(log))] == [NOT_ENDED, "ok"]


WRITER = """
import sys, time
from pathlib import Path
from kumiai.ops import Operation
log, who, n, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))  # all writers begin together, so their appends really overlap
for i in range(n):
    with Operation("concurrent", target={"writer": who, "n": i}, log_path=log):
        pass
"""


def test_eight_concurrent_writers_leave_a_log_that_verifies(log: Path) -> None:
    writers, each = 8, 15
    start = time.time() + 1.5  # after every interpreter has started
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log), f"w{w}", str(each), str(start)])
        for w in range(writers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * writers

    recs = records(log)
    assert len(recs) == writers * each * 2
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    check = verify(Trail.for_log(log))
    assert check.ok, check.problems
    runs = runs_of(recs)
    assert all(r.ended for r in runs)
    for w in range(writers):
        mine = [r.target["n"] for r in runs if r.target["writer"] == f"w{w}"]
        assert mine == list(range(each))

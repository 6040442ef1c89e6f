"""`kumiai audit log | verify | report` over a real trail, masking of command lines, and `town new` recorded."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_helpers import clean_env, copy_inventory, kumiai, kumiai_in_process

from kumiai.audit.context import MASK, mask_argv
from kumiai.audit.runs import parse_since
from kumiai.audit.trail import Trail, verify
from kumiai.errors import InputError
from kumiai.ops import Operation
from support.browser import rendered_dom, screenshot
from support.lab_inventory import posix_lab_inventory, s3_lab_inventory
from support.operations import kill_inside_an_operation

APPROVAL = {"approver": "suzuki", "role": "監査", "key": "SHA256:q1w2e3", "verified": True}


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A trail with a change approved by a signed plan, a passed drill, a failed failover, a killed failback."""
    for name in ("KUMIAI_ACTOR", "KUMIAI_APPROVED_BY", "KUMIAI_AUDIT_ANCHOR"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(state))
    log = state / "audit" / "audit.jsonl"
    monkeypatch.setenv("KUMIAI_ACTOR", "田中")
    with Operation("apply", target={"town": "nakai"}, plan_hash="ab" * 32, approval=APPROVAL) as op, op.step("up"):
        pass
    monkeypatch.delenv("KUMIAI_ACTOR")
    with Operation("drill", target={"town": "nakai"}) as op, op.step("measure RPO/RTO"):
        op.target["verdict"] = "pass: RPO 0 s ≤ 300 s, RTO 41 s ≤ 3600 s"
    with pytest.raises(RuntimeError), Operation("failover", target={"towns": ["oi", "nakai"]}) as op:
        op.target["verdict"] = "fail: RTO 4000 s > 3600 s"
        raise RuntimeError("standby did not promote")
    kill_inside_an_operation(log, tmp_path, "failback", "oi")
    return state


def test_log_json_pairs_begin_and_end_and_shows_the_killed_run(state: Path) -> None:
    result = kumiai_in_process("audit", "log", "--json")
    assert result.code == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [(r["operation"], r["result"]) for r in runs] == [
        ("apply", "ok"),
        ("drill", "ok"),
        ("failover", "failed"),
        ("failback", "not ended"),
    ]
    apply, _, failover, failback = runs
    assert apply["plan_hash"] == "ab" * 32 and apply["approval"] == APPROVAL
    assert apply["who"]["claimed_actor"] == "田中" and apply["who"]["os_user"] != "田中"
    assert failover["error"] == "standby did not promote"
    assert failback["ended"] is None and failback["steps"] == [] and failback["seq"][1] is None


def test_log_filters_by_town_operation_and_time(state: Path) -> None:
    def ops(*args: str) -> list[str]:
        result = kumiai_in_process("audit", "log", "--json", *args)
        assert result.code == 0, result.stderr
        return [r["operation"] for r in json.loads(result.stdout)]

    assert ops("--town", "oi") == ["failover", "failback"]
    assert ops("--town", "nakai") == ["apply", "drill", "failover"]
    assert ops("--operation", "drill") == ["drill"]
    assert ops("--since", "1h") == ["apply", "drill", "failover", "failback"]
    assert ops("--since", (datetime.now(UTC) + timedelta(minutes=5)).isoformat()) == []
    assert ops("--last", "1") == ["failback"]


def test_log_for_people_flags_runs_that_never_ended(state: Path) -> None:
    result = kumiai_in_process("audit", "log")
    assert result.code == 0, result.stderr
    assert "not ended" in result.stdout
    assert "1 run(s) began and never ended" in result.stdout


def test_a_bad_since_is_an_input_error(state: Path) -> None:
    result = kumiai_in_process("audit", "log", "--since", "last tuesday")
    assert result.code == 2
    assert "--since: 'last tuesday' is not a time" in result.stderr


def test_log_of_a_tampered_trail_still_shows_it_but_fails(state: Path) -> None:
    log = state / "audit" / "audit.jsonl"
    log.write_text(log.read_text(encoding="utf-8").replace('"drill"', '"drall"', 1), encoding="utf-8")
    result = kumiai_in_process("audit", "log", "--json")
    assert result.code == 1
    assert len(json.loads(result.stdout)) == 4
    assert "does not verify (line 3, seq 3: changed after it was written" in result.stderr


def test_verify_json_through_the_console_script(state: Path) -> None:
    env = clean_env(KUMIAI_STATE_DIR=str(state))
    ok = kumiai("audit", "verify", "--json", env=env)
    assert ok.code == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["records"] == 7 and data["head"]["seq"] == 7 and data["first_bad"] is None
    (state / "audit" / "audit.jsonl").unlink()
    gone = kumiai("audit", "verify", "--json", env=env)
    assert gone.code == 1
    assert json.loads(gone.stdout)["first_bad"]["problem"].startswith("the log is missing")


def test_report_markdown_lists_changes_approvals_verdicts_and_runs_never_ended(state: Path) -> None:
    result = kumiai_in_process("audit", "report", "--since", "1d")
    assert result.code == 0, result.stderr
    md = result.stdout
    assert "The log verifies: 7 records" in md
    assert "- changes (runs): 4" in md and "- with a verified approval: 1" in md
    assert "- begun, not ended: 1" in md
    changes = md.split("## Changes")[1]
    apply_row = next(line for line in changes.splitlines() if "| apply |" in line)
    assert "approver=suzuki, key=SHA256:q1w2e3, role=監査, verified=True" in apply_row
    assert "claims to be 田中 (unverified)" in apply_row
    assert "ab" * 32 in apply_row
    drill_row = next(line for line in changes.splitlines() if "| drill |" in line)
    assert "none (no signed plan)" in drill_row
    assert "| failed: standby did not promote |" in changes
    verdicts = md.split("## Drills and failovers")[1].split("##")[0]
    assert "| drill | nakai | pass: RPO 0 s ≤ 300 s, RTO 41 s ≤ 3600 s | ok |" in verdicts
    assert "| failover | oi, nakai | fail: RTO 4000 s > 3600 s | failed |" in verdicts
    never = md.split("## ⚠ Begun, not ended (1)")[1].split("##")[0]
    assert "| failback |" in never and "| not ended |" in never


def test_report_json_names_the_runs_of_each_section(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = kumiai_in_process("audit", "report", "--json", "--out", str(out))
    assert result.code == 0, result.stderr
    assert result.stdout == ""  # the report went to --out; only a note on stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    ops = {r["run"]: r["operation"] for r in data["runs"]}
    assert [ops[i] for i in data["approved"]] == ["apply"]
    assert [ops[i] for i in data["verdicts"]] == ["drill", "failover"]
    assert [ops[i] for i in data["not_ended"]] == ["failback"]
    assert data["integrity"]["ok"] is True and data["since"] is None


def test_report_of_a_tampered_trail_says_so_and_fails(state: Path, tmp_path: Path) -> None:
    log = state / "audit" / "audit.jsonl"
    log.write_text("".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    out = tmp_path / "report.md"
    result = kumiai_in_process("audit", "report", "--out", str(out))
    assert result.code == 1
    assert "THE LOG DOES NOT VERIFY. First bad: seq 7: the newest 1 record(s) are missing" in out.read_text()


def test_report_html_is_self_contained_and_renders_japanese(state: Path, tmp_path: Path) -> None:
    page = tmp_path / "audit-report.html"
    result = kumiai_in_process("audit", "report", "--format", "html", "--out", str(page))
    assert result.code == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in text
    assert "<link" not in text and "src=" not in text and "http" not in text  # nothing fetched from anywhere
    dom = rendered_dom(page)
    for expected in ("kumiai 監査報告", "claims to be 田中 (unverified)", "role=監査", "Begun, not ended (1)"):
        assert expected in dom
    assert 'class="not-ended"' in dom and 'class="failed"' in dom
    assert screenshot(page, "audit-report").stat().st_size > 10_000


def test_report_refuses_an_unknown_format(state: Path) -> None:
    result = kumiai_in_process("audit", "report", "--format", "pdf")
    assert result.code == 2
    assert "--format: 'pdf' is not a format: md or html" in result.stderr


def test_town_new_is_recorded_with_its_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = copy_inventory(tmp_path / "inv")
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("KUMIAI_AUDIT_ANCHOR", raising=False)
    args = ("town", "new", "yamakita", "--name", "山北町", "--code", "143642")
    assert kumiai_in_process("--inventory", inv, *args).code == 0
    assert kumiai_in_process("--inventory", inv, *args).code == 2  # refused: exists, so not recorded
    (run,) = json.loads(kumiai_in_process("audit", "log", "--json").stdout)
    assert run["operation"] == "town new" and run["result"] == "ok"
    assert run["target"] == {"town": "yamakita", "file": str(inv / "towns" / "yamakita.yaml")}
    assert run["inventory"]["path"] == str(inv)
    assert run["command"] == ["kumiai", "--inventory", str(inv), *args]
    assert [s["name"] for s in run["steps"]] == ["write"]


# --- masking


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--password", "hunter2", "nakai"], ["--password", MASK, "nakai"]),
        (["--db-password=hunter2"], [f"--db-password={MASK}"]),
        (["--passphrase", "x y", "--town", "oi"], ["--passphrase", MASK, "--town", "oi"]),
        (["--api-key", "AKIA123"], ["--api-key", MASK]),
        (["PGPASSWORD=hunter2", "psql"], [f"PGPASSWORD={MASK}", "psql"]),
        (["host=a user=b password=hunter2 dbname=c"], [f"host=a user=b password={MASK} dbname=c"]),
        (["aws_secret_access_key=abc/def"], [f"aws_secret_access_key={MASK}"]),
        (["token: abc"], [f"token: {MASK}"]),
        (["postgresql://app:hunter2@127.0.1.11:5432/db"], [f"postgresql://app:{MASK}@127.0.1.11:5432/db"]),
        (["--key", "~/.ssh/id_ed25519", "plan.json"], ["--key", "~/.ssh/id_ed25519", "plan.json"]),
        (["--town", "nakai", "--since", "90d"], ["--town", "nakai", "--since", "90d"]),
        (["--password"], ["--password"]),
        (
            ["kumiai", "psql", "nakai", "--", "-c", "SELECT * FROM 住民"],
            ["kumiai", "psql", "nakai", "--", "[2 argument(s) passed on, not recorded]"],
        ),
    ],
    ids=[
        "option",
        "inline",
        "spaces",
        "api-key",
        "env",
        "dsn",
        "aws",
        "colon",
        "url",
        "key-path",
        "plain",
        "last",
        "passed-on",
    ],
)
def test_secrets_are_masked_in_the_command_line(argv: list[str], expected: list[str]) -> None:
    assert mask_argv(argv) == expected


def test_since_takes_dates_times_and_ages() -> None:
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert parse_since("90d", now) == now - timedelta(days=90)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2026-10-01", now) == datetime(2026, 10, 1, tzinfo=UTC)
    assert parse_since("2026-10-01T09:00+09:00", now) == datetime(2026, 10, 1, 0, 0, tzinfo=UTC)
    with pytest.raises(InputError, match="--since"):
        parse_since("yesterday", now)


def test_an_empty_trail_verifies_and_reports_no_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("KUMIAI_AUDIT_ANCHOR", raising=False)
    verified = kumiai_in_process("audit", "verify")
    assert verified.code == 0 and "no records yet" in verified.stdout
    report = kumiai_in_process("audit", "report")
    assert report.code == 0 and "No records: nothing has been recorded" in report.stdout
    assert json.loads(kumiai_in_process("audit", "log", "--json").stdout) == []
    assert not (tmp_path / "state").exists()  # reading never creates a trail


@dataclass(frozen=True)
class ElsewhereAnchor:
    """A remote anchor in some other bucket, holding this log's newest head (so only its place is wrong)."""

    where: str
    head: bytes

    def put_head(self, seq: int, body: bytes) -> None:
        raise AssertionError("verify writes nothing")

    def newest_head(self) -> tuple[bytes | None, list[str]]:
        return self.head, []


def test_verify_requires_the_remote_anchor_the_inventory_keeps(
    state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = tmp_path / "lab"
    monkeypatch.setenv("KUMIAI_LAB_DIR", str(lab))
    monkeypatch.setenv("KUMIAI_INVENTORY", str(s3_lab_inventory(tmp_path / "inv")))
    # The control: a lab whose object stores were never built (or were purged) has no remote anchor to require.
    assert kumiai_in_process("audit", "verify", "--json").code == 0
    (lab / "site-b" / "objectstore").mkdir(parents=True)
    expected = "https://127.0.2.3:7443/lab-site-b.evidence (site-b)"
    # Built, and this machine's record of the store deleted: the remote check must not silently turn off.
    for command in (("verify", "--json"), ("log", "--json"), ("report", "--json")):
        run = kumiai_in_process("audit", *command)
        assert run.code == 1, (command, run.stdout, run.stderr)
    run = kumiai_in_process("audit", "verify", "--json")
    problems = [p["problem"] for p in json.loads(run.stdout)["problems"]]
    assert problems == [
        f"the inventory keeps the audit anchor in {expected}, but this machine has no record of that store "
        f"({state / 'evidence-store.json'} is missing): the log is not checked against it; `kumiai onboard` "
        "writes the record again"
    ]
    # A record pointing at another bucket is found too, even when that bucket agrees with the log.
    head = Trail.default().anchor.read_bytes()
    elsewhere = ElsewhereAnchor("https://127.0.9.3:7443/other.evidence (site-x)", head)
    checked = verify(dataclasses.replace(Trail.default(), remote=elsewhere), expected)
    assert [p.message for p in checked.problems] == [
        f"this machine reads the audit anchor from {elsewhere.where}, but the inventory keeps it in {expected}; "
        "`kumiai onboard` writes the record again"
    ]
    assert verify(dataclasses.replace(Trail.default(), remote=elsewhere), elsewhere.where).ok
    # A posix inventory keeps no remote anchor.
    monkeypatch.setenv("KUMIAI_INVENTORY", str(posix_lab_inventory(tmp_path / "posix")))
    assert kumiai_in_process("audit", "verify", "--json").code == 0

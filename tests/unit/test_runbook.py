"""Runbooks: dr-runbooks/*.yaml validated like the inventory, their Markdown never stale, the engine's order of
steps, skips, checks and failures, and `kumiai runbook list|show|render`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import ROOT, clean_env, kumiai
from typer.testing import CliRunner

from kumiai.commands import runbook as runbook_cmd
from kumiai.dr import runbook
from kumiai.dr.runbook import RunContext, StepFailed, load_all, load_runbook, render_markdown, run
from kumiai.errors import InputError, KumiaiError
from kumiai.main import app
from kumiai.ops import Operation

OURS = ("planned-failover", "emergency-failover", "failback")


def test_every_runbook_loads_and_names_only_known_actions_and_checks() -> None:
    books = load_all()
    assert set(OURS) <= set(books)
    for book in books.values():
        for step in book.steps:
            assert step.action in runbook.ACTIONS
            assert step.check is None or step.check in runbook.CHECKS


@pytest.mark.parametrize("path", sorted((ROOT / "dr-runbooks").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_markdown_next_to_each_runbook_is_generated_from_it(path: Path) -> None:
    book = load_runbook(path)
    page = path.with_suffix(".md")
    assert page.exists(), f"{page.name} is missing: run `kumiai runbook render`"
    assert page.read_text(encoding="utf-8") == render_markdown(book, f"dr-runbooks/{path.name}"), (
        f"{page.name} is stale: run `kumiai runbook render`"
    )


def test_a_planned_failover_demotes_before_it_promotes_and_writes_the_placement_first() -> None:
    steps = [s.action for s in load_all()["planned-failover"].steps]
    assert steps.index("write-placement") < steps.index("demote-old-site") < steps.index("promote-new-site")
    emergency = [s.action for s in load_all()["emergency-failover"].steps]
    assert emergency.index("assess-old-site") < emergency.index("fence-old-site") < emergency.index("promote-new-site")
    assert emergency.index("measure-loss-window") < emergency.index("promote-new-site")


GOOD = """\
id: {id}
title: A procedure
description: what it does
steps:
  - id: first
    title: First
    action: wait
    timeout_s: 5
    retry_safe: true
"""


def _write(tmp_path: Path, text: str, name: str = "proc") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_runbook_loads(tmp_path: Path) -> None:
    runbook.register_actions()
    book = load_runbook(_write(tmp_path, GOOD.format(id="proc")))
    assert [s.id for s in book.steps] == ["first"]


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda t: t.replace("id: proc", "id: other"), "id", "file name"),
        (lambda t: t.replace("action: wait", "action: nope"), "steps[0].action", "unknown action 'nope'"),
        (lambda t: t + "    check: nope\n", "steps[0].check", "unknown check 'nope'"),
        (lambda t: t + "    when: nope\n", "steps[0].when", "unknown check 'nope'"),
        (lambda t: t.replace("timeout_s: 5", "timeout_s: 0"), "steps[0].timeout_s", ""),
        (lambda t: t.replace("timeout_s: 5", 'timeout_s: "5"'), "steps[0].timeout_s", ""),
        (lambda t: t.replace("    retry_safe: true\n", ""), "steps[0].retry_safe", ""),
        (lambda t: t + "    colour: red\n", "steps[0].colour", ""),
        (lambda t: t + t[t.index("  - id") :], "steps[1].id", "used twice"),
    ],
)
def test_a_bad_runbook_is_refused_naming_the_file_and_field(tmp_path: Path, edit, field: str, words: str) -> None:
    runbook.register_actions()
    path = _write(tmp_path, edit(GOOD.format(id="proc")))
    with pytest.raises(InputError) as exc:
        load_runbook(path)
    message = exc.value.message
    assert str(path) in message
    assert f"{field}:" in message, message
    assert words in message


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Actions and checks of a test runbook that record what ran."""
    ran: list[str] = []
    polls = {"n": 0}

    def record(name: str):
        def act(ctx: RunContext) -> str:
            ran.append(name)
            return f"did {name}"

        return act

    def fail(ctx: RunContext) -> None:
        ran.append("fail")
        raise KumiaiError("the site did not answer")

    def third_time(ctx: RunContext) -> bool:
        polls["n"] += 1
        return polls["n"] >= 3

    monkeypatch.setitem(runbook.ACTIONS, "t-one", record("one"))
    monkeypatch.setitem(runbook.ACTIONS, "t-two", record("two"))
    monkeypatch.setitem(runbook.ACTIONS, "t-fail", fail)
    monkeypatch.setitem(runbook.CHECKS, "t-never", lambda ctx: False)
    monkeypatch.setitem(runbook.CHECKS, "t-third-time", third_time)
    return ran


def _book(tmp_path: Path, steps: str) -> runbook.Runbook:
    text = f"id: proc\ntitle: T\ndescription: d\nsteps:\n{steps}"
    return load_runbook(_write(tmp_path, text))


def _step(sid: str, act: str, extra: str = "", timeout: int = 5) -> str:
    return (
        f"  - id: {sid}\n    title: {sid}\n    action: {act}\n    timeout_s: {timeout}\n    retry_safe: true\n{extra}"
    )


def test_steps_run_in_order_skips_are_recorded_and_checks_are_polled(tmp_path: Path, engine: list[str]) -> None:
    book = _book(
        tmp_path,
        _step("one", "t-one", "    check: t-third-time\n")
        + _step("skipped", "t-fail", "    when: t-never\n")
        + _step("two", "t-two"),
    )
    with Operation("test", dry_run=True) as op:
        run(book, RunContext(params={}), op, prefix="nakai: ")
    assert engine == ["one", "two"]
    assert [(s.name, s.status, s.detail) for s in op.steps] == [
        ("nakai: proc: one", "ok", "did one"),
        ("nakai: proc: skipped", "skipped", "t-never does not hold"),
        ("nakai: proc: two", "ok", "did two"),
    ]


def test_a_failing_action_stops_the_runbook_naming_the_step(tmp_path: Path, engine: list[str]) -> None:
    book = _book(tmp_path, _step("one", "t-one") + _step("broken", "t-fail") + _step("two", "t-two"))
    with pytest.raises(StepFailed) as exc, Operation("test", dry_run=True) as op:
        run(book, RunContext(params={}), op)
    assert "step broken" in exc.value.message and "the site did not answer" in exc.value.message
    assert engine == ["one", "fail"]
    assert [s.status for s in op.steps] == ["ok", "failed"]


def test_a_check_that_never_holds_fails_the_step_at_its_timeout(tmp_path: Path, engine: list[str]) -> None:
    book = _book(tmp_path, _step("one", "t-one", "    check: t-never\n", timeout=1))
    with pytest.raises(StepFailed) as exc, Operation("test", dry_run=True) as op:
        run(book, RunContext(params={}), op)
    assert "t-never did not hold within 1 s" in exc.value.message
    assert op.steps[0].status == "failed" and 1.0 <= op.steps[0].seconds < 3.0


def test_runbook_list_and_show_offer_json() -> None:
    listed = kumiai("runbook", "list", "--json", env=clean_env())
    assert listed.code == 0, listed
    steps = {b["id"]: b["steps"] for b in json.loads(listed.stdout)}
    for book_id in OURS:
        assert steps[book_id] == len(load_all()[book_id].steps)
    shown = kumiai("runbook", "show", "failback", "--json", env=clean_env())
    assert json.loads(shown.stdout)["steps"][0]["action"] == "failback-preflight"
    unknown = kumiai("runbook", "show", "nope", env=clean_env())
    assert unknown.code == 2 and "no runbook 'nope'" in unknown.stderr


def test_render_rewrites_a_stale_page_and_check_says_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    books = tmp_path / "dr-runbooks"
    shutil.copytree(ROOT / "dr-runbooks", books)
    monkeypatch.setattr(runbook, "runbooks_dir", lambda: books)
    monkeypatch.setattr(runbook_cmd, "runbooks_dir", lambda: books)
    page = books / "failback.md"
    page.write_text(page.read_text(encoding="utf-8").replace("切り戻し", "edited by hand"), encoding="utf-8")
    runner = CliRunner()
    stale = runner.invoke(app, ["runbook", "render", "--check"])
    assert stale.exit_code == 1 and "failback.md" in str(stale.exception)
    assert "edited by hand" in page.read_text(encoding="utf-8")  # --check writes nothing
    written = runner.invoke(app, ["runbook", "render"])
    assert written.exit_code == 0 and "failback.md" in written.stdout
    current = runner.invoke(app, ["runbook", "render", "--check", "--json"])
    assert current.exit_code == 0 and json.loads(current.stdout) == {"stale": []}
    assert page.read_text(encoding="utf-8") == (ROOT / "dr-runbooks" / "failback.md").read_text(encoding="utf-8")

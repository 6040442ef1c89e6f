"""Drills: the scratch instance's settings, the runbook, and the evidence (the verdict against a town's
targets; the JSON, Markdown and HTML an auditor reads)."""

from __future__ import annotations

import math
import shlex
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import pytest

from kumiai.datalayer.target import ScratchLayout
from kumiai.datalayer.topology import TownLayout
from kumiai.dr import evidence
from kumiai.dr.drill import Drill, checksum_hex, start_options
from kumiai.dr.evidence import CHART_W, LABEL_W, Comparison, DrillEvidence, StepRecord, TableCheck
from kumiai.dr.runbook import load_runbook, register_actions, runbooks_dir

SVG = "{http://www.w3.org/2000/svg}"


def record(**changes: Any) -> DrillEvidence:
    base = DrillEvidence(
        drill_id="20261127T101500Z-kiyokawa-abc123",
        town="kiyokawa",
        town_name="清川村",
        target="lab",
        started_at="2026-11-27T10:15:00.000+00:00",
        finished_at="2026-11-27T10:15:20.000+00:00",
        repo=2,
        repo_site="site-b",
        scratch="127.0.2.2:25432 /lab/site-b/drills/kiyokawa",
        backup_label="20261127-101000F",
        rpo_target_s=300,
        rto_target_s=3600,
        marker_written_at="2026-11-27T10:15:01.000+00:00",
        marker_xid="739",
        cutoff_at="2026-11-27T10:15:01.500+00:00",
        newest_recovered_marker_at="2026-11-27T10:15:01.000+00:00",
        marker_recovered=True,
        rpo_s=0.5,
        rto_s=12.0,
        restore_s=4.0,
        restored_bytes=40_000_000,
        comparison=Comparison(
            method="row counts and checksums",
            caveat="exact when quiet",
            tables=[
                TableCheck(
                    table="public.juminhyo",
                    rows_primary=5,
                    rows_recovered=5,
                    checksum_primary="ab",
                    checksum_recovered="ab",
                )
            ],
        ),
        steps=[StepRecord(name="kiyokawa: drill: restore", status="ok", seconds=4.0, detail="40 MB")],
        tools={"pgbackrest": "pgBackRest 2.45"},
        verdict="pass",
    )
    return base.model_copy(update=changes)


def test_a_drill_within_its_targets_with_matching_tables_passes() -> None:
    assert evidence.verdict_reasons(record()) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"rpo_s": 300.5}, "RPO 300.5 s exceeds the target 300 s"),
        ({"rto_s": 3601.0}, "RTO 3601.0 s exceeds the target 3600 s"),
        ({"rto_s": None}, "RTO not measured: no writable copy"),
        ({"rpo_s": None}, "RPO not measured"),
        ({"marker_recovered": False}, "the drill's marker is not in the recovered copy"),
    ],
)
def test_each_shortfall_is_a_reason_to_fail(changes: dict[str, Any], expected: str) -> None:
    assert evidence.verdict_reasons(record(**changes)) == [expected]


def test_the_limits_themselves_pass() -> None:
    assert evidence.verdict_reasons(record(rpo_s=300.0, rto_s=3600.0)) == []


@pytest.mark.parametrize(
    ("rows", "checksum"), [(4, "ab"), (5, "ac"), (None, None)], ids=["rows", "checksum", "table missing"]
)
def test_a_table_that_differs_fails_and_is_named(rows: int | None, checksum: str | None) -> None:
    tables = [
        TableCheck(table="public.a", rows_primary=5, rows_recovered=5, checksum_primary="ab", checksum_recovered="ab"),
        TableCheck(
            table="public.b", rows_primary=5, rows_recovered=rows, checksum_primary="ab", checksum_recovered=checksum
        ),
    ]
    ev = record(comparison=Comparison(method="m", caveat="c", tables=tables))
    assert evidence.verdict_reasons(ev) == ["tables differ from the primary: public.b"]


def test_json_round_trips_and_carries_the_throughput() -> None:
    ev = record()
    text = evidence.to_json(ev)
    assert '"restore_mb_s": 10.0' in text
    assert "清川村" in text  # not \\u-escaped: an auditor greps for the town's name
    assert evidence.from_json(text) == ev


def test_throughput_is_unknown_without_a_restore() -> None:
    assert record(restore_s=None).restore_mb_s is None
    assert record(restored_bytes=None).restore_mb_s is None


def test_markdown_has_the_facts_tables_and_steps() -> None:
    md = evidence.to_markdown(record(verdict="fail", reasons=["RPO 400.0 s exceeds the target 300 s"]))
    assert md.startswith("# Restore drill 復元訓練: 清川村 (kiyokawa) — FAIL")
    assert "| RPO measured / target | 0.50 s / 300 s |" in md
    assert "| RTO measured / target | 12.00 s / 3600 s |" in md
    assert "| Restore | 4.00 s, 10.0 MB/s (40.0 MB) |" in md
    assert "- RPO 400.0 s exceeds the target 300 s" in md
    assert "| public.juminhyo | 5 | 5 | ab | ab | yes |" in md
    assert "| kiyokawa: drill: restore | ok | 4.000 | 40 MB |" in md


def test_a_pipe_in_a_detail_does_not_break_the_markdown_table() -> None:
    md = evidence.to_markdown(record(steps=[StepRecord(name="s", status="failed", seconds=1, detail="a | b\nc")]))
    assert "| s | failed | 1.000 | a \\| b c |" in md


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and "://" in value:
                self.external.append(value)


def test_html_is_escaped_and_self_contained() -> None:
    ev = record(town_name="<script>alert(1)</script>", tools={"x": '"><img src=http://evil/>'})
    page = evidence.to_html(ev)
    parsed = _Collect()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert parsed.external == []
    assert "&lt;script&gt;" in page


def test_newest_drill_per_town_wins() -> None:
    old = record(drill_id="a", started_at="2026-11-01T00:00:00+00:00", verdict="fail")
    new = record(drill_id="b", started_at="2026-11-27T00:00:00+00:00")
    other = record(drill_id="c", town="nakai", town_name="中井町")
    assert [e.drill_id for e in evidence.newest_per_town([new, other, old])] == ["b", "c"]


def _bars(svg: str) -> dict[str, list[float]]:
    """Title of each measured bar -> its width, and each target line's x, by panel order."""
    root = ET.fromstring(svg)
    widths = [float(r.get("width", "0")) for r in root.iter(f"{SVG}rect") if r.get("class") == "measured"]
    targets = [float(line.get("x1", "0")) for line in root.iter(f"{SVG}line") if line.get("class") == "target"]
    return {"widths": widths, "targets": targets}


def test_chart_places_bars_and_targets_on_a_log_scale() -> None:
    # RPO 1 s against 100 s: the panel spans 1..100 s, the target at its right end, the bar at zero width (2 px).
    # RTO 10 s against 1000 s: the panel spans 10..1000 s likewise; a failing town's bar is red.
    ok = record(rpo_s=1.0, rpo_target_s=100, rto_s=10.0, rto_target_s=1000)
    bars = _bars(evidence.summary_svg([ok]))
    assert bars["widths"] == [2.0, 2.0]
    assert bars["targets"] == [LABEL_W + CHART_W, LABEL_W + CHART_W]
    late = record(rpo_s=1000.0, rpo_target_s=100, rto_s=100.0, rto_target_s=1000)
    svg = evidence.summary_svg([late])
    bars = _bars(svg)
    # RPO panel 100..1000: bar full width, target at 0; RTO panel 100..1000: bar 0, target full width.
    assert bars["widths"] == [CHART_W, 2.0]
    assert bars["targets"] == [LABEL_W, LABEL_W + CHART_W]
    assert svg.count('fill="#b00020"') == 1  # only the RPO bar overshoots its target


def test_log_scale_spans_whole_decades() -> None:
    assert evidence.log_scale(0.3, 300) == (0.1, 1000)
    assert evidence.log_scale(5, 5) == (1, 10)
    assert math.isclose(evidence.log_scale(0.0, 1)[0], 0.01)


def test_an_unmeasured_town_is_shown_as_such() -> None:
    svg = evidence.summary_svg([record(rto_s=None, verdict="fail")])
    ET.fromstring(svg)
    assert "not measured" in svg


def test_summary_page_counts_links_and_marks_failures(tmp_path: Path) -> None:
    runs = [
        record(drill_id="k1", started_at="2026-11-01T00:00:00+00:00", verdict="fail"),
        record(drill_id="k2", started_at="2026-11-27T00:00:00+00:00"),
        record(drill_id="n1", town="nakai", town_name="中井町", verdict="fail", reasons=["x"]),
    ]
    page = evidence.summary_html(runs, {"k1": "k1/drill.html", "k2": "k2/drill.html"}, "lab")
    assert '<p id="tally">1 of 2 towns passed their newest drill; 3 drills on record.</p>' in page
    assert '<a href="k2/drill.html">' in page and '<a href="k1/drill.html">' in page
    assert page.count('<tr class="fail">') == 1  # nakai's newest; kiyokawa's failure is older than its pass


def test_summary_without_drills_says_so() -> None:
    assert "No drill on record yet." in evidence.summary_html([], {}, "lab")


def test_checksums_are_sixteen_hex_digits_of_the_sum_modulo_two_to_the_64() -> None:
    assert checksum_hex("0") == "0000000000000000"
    assert checksum_hex(str(2**64 + 255)) == "00000000000000ff"
    assert checksum_hex(str(-1)) == "ffffffffffffffff"


def test_the_drill_runbook_loads_and_ends_by_removing_the_scratch_instance() -> None:
    register_actions()
    book = load_runbook(runbooks_dir() / "drill.yaml")
    assert [s.id for s in book.steps][-1] == "remove-scratch"
    assert next(s for s in book.steps if s.id == "restore").retry_safe is False


def test_the_scratch_instance_starts_apart_from_production() -> None:
    """Its own address, port, socket and access rules; no archiving, no replication, nothing synchronous."""
    scratch = ScratchLayout(address="127.0.2.2", port=25433, dir=Path("/lab/site-b/drills/kiyokawa"))
    town = TownLayout(id="kiyokawa", slot=1, primary_site="site-a", dr_site="site-b", members=(), repos=())
    fake = cast(Any, None)
    drill = Drill(
        target=fake,
        town=town,
        town_name="清川村",
        rpo_target_s=300,
        rto_target_s=3600,
        repo=fake,
        scratch=scratch,
        secrets=fake,
        run_as=[],
        drill_id="d",
    )
    words = shlex.split(start_options(drill))
    assert words[::2] == ["-c"] * (len(words) // 2)
    settings = dict(w.split("=", 1) for w in words[1::2])
    assert settings == {
        "listen_addresses": "127.0.2.2",
        "port": "25433",
        "unix_socket_directories": "/lab/site-b/drills/kiyokawa",
        "hba_file": "/lab/site-b/drills/kiyokawa/pg_hba.conf",
        "ident_file": "/lab/site-b/drills/kiyokawa/pg_ident.conf",
        "archive_mode": "off",
        "archive_command": "",
        "synchronous_standby_names": "",
        "primary_conninfo": "",
        "primary_slot_name": "",
        "cluster_name": "kumiai-drill-kiyokawa",
    }

"""The pure parts of the failure-test helpers: outage and loss arithmetic, table names, the partition's rules."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from support.faults import descendants, kill, naming
from support.partition import drop_rules
from support.writer import Commit, WriterResult, longest_outage, lost_commits, table_name


def commits(*times: float) -> list[Commit]:
    return [Commit(seq=i + 1, at=t, host="127.0.1.11") for i, t in enumerate(times)]


def test_longest_outage_is_the_widest_gap_between_acknowledged_commits() -> None:
    outage = longest_outage(commits(1.0, 1.5, 9.0, 9.2), started=0.5, stopped=10.0)
    assert (outage.seconds, outage.after, outage.before) == (7.5, 1.5, 9.0)


def test_longest_outage_counts_the_start_and_the_stop_as_edges() -> None:
    assert longest_outage(commits(5.0, 5.1), started=0.0, stopped=5.5).seconds == 5.0
    assert longest_outage(commits(1.0, 1.1), started=0.9, stopped=8.1).seconds == pytest.approx(7.0)
    assert longest_outage([], started=2.0, stopped=3.5).seconds == 1.5


def test_longest_outage_does_not_depend_on_the_order_of_the_records() -> None:
    assert longest_outage(commits(9.0, 1.0, 1.5), 0.5, 10.0) == longest_outage(commits(1.0, 1.5, 9.0), 0.5, 10.0)


def test_lost_commits_are_the_acknowledged_ones_a_server_lacks() -> None:
    acked = commits(1.0, 2.0, 3.0, 4.0)
    assert [c.seq for c in lost_commits(acked, {1, 2, 4, 99})] == [3]
    assert lost_commits(acked, {1, 2, 3, 4}) == []


def test_writer_result_groups_acknowledged_commits_by_host() -> None:
    a = Commit(1, 1.0, "127.0.1.11")
    b = Commit(2, 2.0, "127.0.2.11")
    result = WriterResult("kumiai_writer_x", 0.0, 3.0, [a, b], [Commit(3, 2.5, "127.0.2.11")], Counter())
    assert result.by_host() == {"127.0.1.11": [a], "127.0.2.11": [b]}
    assert result.summary()["ambiguous"] == 1 and result.summary()["acknowledged"] == 2
    assert table_name("part_old") == "kumiai_writer_part_old"


@pytest.mark.parametrize("bad", ["Upper", "semi;colon", "has space", "x" * 40, "drop table"])
def test_table_names_refuse_anything_but_lower_case_words(bad: str) -> None:
    with pytest.raises(ValueError):
        table_name(bad)


def test_partition_rules_drop_each_sites_group_towards_every_other_site_only() -> None:
    rules = drop_rules(
        "kumiai_partition_7",
        {"site-a": ("unified/kumiai-partition-7/site-a", 2), "site-b": ("unified/kumiai-partition-7/site-b", 2)},
        {"site-a": "127.0.1.0/24", "site-b": "127.0.2.0/24"},
    )
    assert rules[0] == "add table inet kumiai_partition_7"
    assert "hook output" in rules[1] and "policy accept" in rules[1]
    rule = "add rule inet kumiai_partition_7 out ip daddr {} socket cgroupv2 level 2 {} drop"
    assert rules[2:] == [
        rule.format("127.0.2.0/24", '"unified/kumiai-partition-7/site-a"'),
        rule.format("127.0.1.0/24", '"unified/kumiai-partition-7/site-b"'),
    ]


def test_a_process_tree_is_found_by_parentage_and_by_the_directory_its_arguments_name(tmp_path: Path) -> None:
    # A shell (the tree's root) with a child, and a detached process that only names the directory, as a
    # postmaster started by Patroni does; all of them this test's own.
    root = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    detached = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(61)", f"--pg1-path={tmp_path}/data"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 5
        while len(descendants([root.pid])) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        tree = descendants([root.pid])
        assert root.pid in tree and len(tree) == 2
        assert naming(tmp_path) == {detached.pid}
        assert naming(tmp_path / "elsewhere") == set()
        assert naming(Path(str(tmp_path)[:-1])) == set()  # a directory whose name is a prefix is another one
        kill(tree | naming(tmp_path))
        assert root.wait(timeout=5) == -signal.SIGKILL
        assert detached.wait(timeout=5) == -signal.SIGKILL
    finally:
        for proc in (root, detached):
            if proc.poll() is None:
                proc.kill()

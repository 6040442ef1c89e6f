"""Given a town at its primary site under a continuous writer, when its leader is SIGKILLed, then no acknowledged
commit is lost and a leader accepts writes again within Patroni's ttl window.

Two faults, each on the real processes of the shared lab, which each scenario leaves as it found it (the killed
member back as a replica, the town healthy):
- the leader's PostgreSQL is SIGKILLed (postmaster and backends; Patroni lives on and recovers it or hands over);
- the leader member's whole process tree (Patroni, postmaster, every descendant) is SIGKILLed and kept down, as
  when its host is lost: the synchronous standby must take over.
The measured outage (the writer's longest stretch without an acknowledged commit) is reported in the test's
properties and in out/dr-tests/.
"""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, Lab

from support.scenarios import InSiteOutcome, in_site_failover

pytestmark = pytest.mark.integration

REPORTS = ROOT / "out" / "dr-tests"


def report(outcome: InSiteOutcome, record_property: pytest.RecordProperty) -> None:
    for key, value in outcome.as_dict().items():
        record_property(key, value)
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / f"inside_site-{outcome.town}-{outcome.fault}.json"
    path.write_text(json.dumps(outcome.as_dict(), indent=1) + "\n", encoding="utf-8")
    print(f"\n{outcome.town} {outcome.fault}: {json.dumps(outcome.as_dict())}")


def ttl_window(outcome: InSiteOutcome) -> float:
    """The leader key expires at most ttl after its last renewal; a survivor sees that on its next loop and
    promotes, and the writer reconnects within its retry interval: about one more loop."""
    return outcome.ttl_s + 2 * outcome.loop_wait_s


def test_sigkill_of_the_leaders_postgresql_loses_no_acknowledged_commit(
    lab: Lab, record_property: pytest.RecordProperty
) -> None:
    outcome = in_site_failover(lab, "kiyokawa", "postmaster")
    report(outcome, record_property)
    assert outcome.acknowledged > 0 and outcome.lost == 0, outcome
    assert outcome.writable_after_s <= ttl_window(outcome), outcome
    assert outcome.outage_s <= ttl_window(outcome), outcome


def test_loss_of_the_leaders_whole_process_tree_hands_over_to_the_synchronous_standby(
    lab: Lab, record_property: pytest.RecordProperty
) -> None:
    outcome = in_site_failover(lab, "manazuru", "member_tree")
    report(outcome, record_property)
    assert outcome.killed_pids >= 3, outcome  # Patroni, the postmaster, its auxiliary processes at least
    assert outcome.leader_after != outcome.leader_before, outcome
    assert outcome.acknowledged > 0 and outcome.lost == 0, outcome
    assert outcome.writable_after_s <= ttl_window(outcome), outcome
    assert outcome.outage_s <= ttl_window(outcome), outcome

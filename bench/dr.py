"""Benchmark failover on the embedded lab: in-site failover, planned failover, emergency failover of every town.

It builds its own lab of the three lab towns (tests/integration/conftest.py's build_lab) on networks of its own
(default 127.0.35.0/24 and 127.0.36.0/24, `--networks A,B` to move it; nothing else may run there) and removes it
at the end. Every phase runs under continuous writers (tests/support/writer.py: one transaction per row, every
acknowledged commit recorded), so each figure is what clients saw, next to what kumiai reported:
- in-site: the primary-site leader's PostgreSQL SIGKILLed (Patroni recovers it), then a leader member's whole
  process tree SIGKILLed and kept down (the synchronous standby takes over): seconds from the kill to the first
  acknowledged commit, the longest outage, lost commits;
- planned: `kumiai failover --planned --to <DR site>` for each town, one at a time, then `kumiai failback`:
  command time, kumiai's writes-stopped and seconds-to-writable, the writer's outage, lost commits;
- emergency: every process of the primary site SIGKILLed, then `kumiai failover --all --to <DR site>`: per town,
  seconds from the command's start to the first acknowledged commit at the DR site, kumiai's loss window, and the
  acknowledged commits the DR site lacks.
Aims (issue 6): every lab town writable at the DR site within 30 s of an emergency failover; planned failover
under 10 s per town.
Usage: .venv/bin/python bench/dr.py [--networks A,B | --lab DIR] [--json FILE] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from report import publish

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from conftest import Lab, build_lab  # noqa: E402

from kumiai.inventory import load_inventory  # noqa: E402
from kumiai.lab.target import LabTarget  # noqa: E402
from support import faults  # noqa: E402
from support.scenarios import in_site_failover, wait_healthy  # noqa: E402
from support.writer import Writer, held_seqs, lab_town, town_endpoint  # noqa: E402

TOWNS = ["kiyokawa", "manazuru", "nakai"]
LAB_NETWORKS = ("127.0.1.0/24", "127.0.2.0/24")


def kumiai_json(lab: Lab, *args: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    run = lab.kumiai(*args, "--yes", "--json", timeout=900)
    seconds = time.perf_counter() - t0
    if run.code != 0:
        sys.exit(f"kumiai {' '.join(args)} failed: {run}")
    return seconds, json.loads(run.stdout)


def writers(lab: Lab, towns: list[str], name: str) -> dict[str, Writer]:
    """One writer per town over both sites' members (libpq picks whichever is read-write)."""
    started = {}
    for tid in towns:
        town, secrets = lab_town(lab.inventory, lab.lab_dir, lab.vault_keys, tid)
        started[tid] = Writer(town_endpoint(town, secrets), name).start()
        started[tid].wait_for(20)
    return started


def lost_after(lab: Lab, tid: str, writer: Writer) -> int:
    """Acknowledged commits the town's current primary does not hold."""
    assert writer.result is not None
    town, secrets = lab_town(lab.inventory, lab.lab_dir, lab.vault_keys, tid)
    return len(writer.result.lost(held_seqs(town_endpoint(town, secrets), writer.name, read_write=True)))


def in_site(lab: Lab) -> list[dict[str, Any]]:
    return [
        in_site_failover(lab, "kiyokawa", "postmaster").as_dict(),
        in_site_failover(lab, "manazuru", "member_tree").as_dict(),
    ]


def dr_site_of(lab: Lab, tid: str) -> str:
    """The town's DR site for its placement now (a failover rewrites the placement)."""
    return LabTarget(load_inventory(lab.inventory), lab.lab_dir).topology().towns[tid].dr_site


def planned(lab: Lab) -> list[dict[str, Any]]:
    rows = []
    for tid in TOWNS:
        wait_healthy(lab, tid)
        to_site = dr_site_of(lab, tid)
        writer = writers(lab, [tid], "bench_planned")[tid]
        try:
            over_s, over = kumiai_json(lab, "failover", "--planned", "--to", to_site, "--town", tid)
            writer.wait_for(20)
        finally:
            over_result = writer.stop()
        row = {
            "town": tid,
            "command_s": round(over_s, 2),
            "writes_stopped_s": over["towns"][0].get("writes_stopped_s"),
            "seconds_to_writable": over["towns"][0].get("seconds_to_writable"),
            "writer_outage_s": round(over_result.outage().seconds, 2),
            "acknowledged": len(over_result.acknowledged),
            "ambiguous": len(over_result.ambiguous),
            "lost": lost_after(lab, tid, writer),
        }
        back = writers(lab, [tid], "bench_failback")[tid]
        try:
            row["failback_command_s"] = round(kumiai_json(lab, "failback", "--town", tid)[0], 2)
            back.wait_for(20)
        finally:
            back_result = back.stop()
        row["failback_writer_outage_s"] = round(back_result.outage().seconds, 2)
        row["failback_lost"] = lost_after(lab, tid, back)
        rows.append(row)
    return rows


def emergency(lab: Lab) -> dict[str, Any]:
    for tid in TOWNS:
        wait_healthy(lab, tid)
    topology = LabTarget(load_inventory(lab.inventory), lab.lab_dir).topology()
    to_site = topology.towns[TOWNS[0]].dr_site
    old_site = topology.site(topology.towns[TOWNS[0]].primary_site)
    running = writers(lab, TOWNS, "bench_emergency")
    killed = faults.kill_site(old_site)
    try:
        started = time.time()
        command_s, result = kumiai_json(lab, "failover", "--all", "--to", to_site)
        for writer in running.values():
            writer.wait_for(20, timeout_s=60)
    finally:
        results = {tid: w.stop() for tid, w in running.items()}
    towns = []
    new_hosts = {m.address for t in topology.towns.values() for m in t.at(to_site)}
    records = {r["town"]: r for r in result["towns"]}
    for tid in TOWNS:
        record = records[tid]
        first_new = next(c for c in results[tid].acknowledged if c.host in new_hosts)
        towns.append(
            {
                "town": tid,
                "writable_after_command_s": round(first_new.at - started, 2),
                "writable_after_kill_s": round(first_new.at - killed.at, 2),
                "seconds_to_writable": record.get("seconds_to_writable"),
                "loss_window": record.get("loss_window"),
                "acknowledged": len(results[tid].acknowledged),
                "lost": lost_after(lab, tid, running[tid]),
            }
        )
    return {"killed_processes": len(killed.pids), "command_s": round(command_s, 2), "towns": towns}


def existing_lab(base: Path) -> Lab:
    """A lab already up (`kumiai lab up` with KUMIAI_INVENTORY, KUMIAI_LAB_DIR, KUMIAI_STATE_DIR under `base`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUMIAI_")}
    env.update({"KUMIAI_LAB_DIR": str(base / "lab"), "KUMIAI_STATE_DIR": str(base / "state"), "NO_COLOR": "1"})
    return Lab(base=base, inventory=base / "inventory", lab_dir=base / "lab", state_dir=base / "state", env=env)


def measure(lab: Lab, results: dict[str, Any]) -> None:
    """Each phase's figures go into `results` as soon as it ends: a later phase failing keeps the earlier ones."""
    results["in_site"] = in_site(lab)
    results["planned"] = planned(lab)
    results["emergency"] = emergency(lab)


def bench(test_networks: list[str], base: Path | None, results: dict[str, Any]) -> None:
    results |= {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
        }
    }
    if base is not None:
        measure(existing_lab(base), results)
    else:
        with build_lab(dict(zip(LAB_NETWORKS, test_networks, strict=True))) as lab:
            measure(lab, results)
    results["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)


IN_SITE_COLUMNS = (
    "town",
    "fault",
    "leader",
    "kill → first acknowledged commit",
    "longest outage",
    "ttl / loop_wait",
    "acknowledged",
    "lost",
)
PLANNED_COLUMNS = (
    "town",
    "`failover --planned`",
    "writes stopped (kumiai)",
    "to writable (kumiai)",
    "writer's outage",
    "acknowledged",
    "lost",
    "`failback`",
    "writer's outage",
    "lost",
)
EMERGENCY_COLUMNS = (
    "town",
    "command start → writable at the DR site",
    "kill → writable",
    "to writable (kumiai)",
    "loss window (kumiai)",
    "acknowledged",
    "lost",
)


def num(value: float | None, unit: str = " s") -> str:
    """A figure kumiai may not have reported (None)."""
    return "–" if value is None else f"{value:.1f}{unit}"


def header(columns: tuple[str, ...]) -> str:
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def markdown(r: dict[str, Any]) -> str:
    in_site_rows = "\n".join(
        f"| {x['town']} | {x['fault'].replace('_', ' ')} | {x['leader_before']} → {x['leader_after']} "
        f"| **{x['writable_after_s']:.1f} s** | {x['outage_s']:.1f} s | {x['ttl_s']} s / {x['loop_wait_s']} s "
        f"| {x['acknowledged']} | {x['lost']} |"
        for x in r["in_site"]
    )
    planned_rows = "\n".join(
        f"| {x['town']} | **{x['command_s']:.1f} s** | {num(x['writes_stopped_s'])} | {num(x['seconds_to_writable'])} "
        f"| {x['writer_outage_s']:.1f} s | {x['acknowledged']} | {x['lost']} | {x['failback_command_s']:.1f} s "
        f"| {x['failback_writer_outage_s']:.1f} s | {x['failback_lost']} |"
        for x in r["planned"]
    )
    e = r["emergency"]

    def window(x: dict[str, Any]) -> str:
        w = x.get("loss_window") or {}
        if not w:
            return "not reported"
        size = "unknown" if w.get("bytes") is None else f"{w['bytes']:,} B"
        return f"{size}, {'unknown' if w.get('seconds') is None else format(w['seconds'], '.3f') + ' s'}"

    emergency_rows = "\n".join(
        f"| {x['town']} | **{x['writable_after_command_s']:.1f} s** | {x['writable_after_kill_s']:.1f} s "
        f"| {num(x['seconds_to_writable'])} | {window(x)} | {x['acknowledged']} | {x['lost']} |"
        for x in e["towns"]
    )
    worst_emergency = max(x["writable_after_command_s"] for x in e["towns"])
    own = [x["seconds_to_writable"] for x in e["towns"] if x["seconds_to_writable"] is not None] or [float("nan")]
    own_min, own_max = min(own), max(own)
    worst_planned = max(x["command_s"] for x in r["planned"])
    worst_planned_outage = max(x["writer_outage_s"] for x in r["planned"])
    return f"""## DR

`bench/dr.py` on the embedded lab ({r["machine"]["cpus"]} cores, Python {r["machine"]["python"]}) with the three
lab towns, every phase under continuous writers (one transaction per row through libpq's
multi-host `target_session_attrs=read-write`, every acknowledged commit recorded). "Lost" counts acknowledged
commits the town's primary lacks afterwards. One run; the 1-minute load average was
{r["machine"]["loadavg_1min_at_start"]} at the start and {r["loadavg_1min_at_end"]} at the end (other labs ran on
the machine).

### In-site failover (SIGKILL at the primary site)

{header(IN_SITE_COLUMNS)}
{in_site_rows}

- The PostgreSQL kill leaves Patroni running: it restarts PostgreSQL (crash recovery) on the same member. The
  whole-tree kill is held down (the member's host lost): the synchronous standby takes over once the leader key
  expires, so the outage is about Patroni's ttl (Patroni 4 allows no less than 20 s).

### Planned failover and failback, one town at a time

{header(PLANNED_COLUMNS)}
{planned_rows}

- Aim: under 10 s per town. Met by what clients see: the longest stretch without an acknowledged commit was
  {worst_planned_outage:.1f} s. Not met by the whole `failover --planned` command, {worst_planned:.1f} s at worst:
  after the handover it waits for the old site to settle as a standby, checks archiving and the new site's
  health, and it includes kumiai's own start-up (the steps are in each failover's evidence).

### Emergency failover of every town after the primary site is lost

All {e["killed_processes"]} processes of the primary site SIGKILLed (supervisord, etcd, every member), then one
`kumiai failover --all` ({e["command_s"]:.1f} s for the whole command; towns one at a time).

{header(EMERGENCY_COLUMNS)}
{emergency_rows}

- Aim: every lab town writable at the DR site within 30 s of the failover command. Slowest here:
  {worst_emergency:.1f} s. kumiai's own time from a town's step to writable is {own_min:.1f}–{own_max:.1f} s; the
  rest is the command's start and the towns failed over before it (one at a time): with more towns than these
  three the last ones would miss the aim unless towns are failed over a few at a time.
- Cross-site replication is asynchronous: what the killed site acknowledged in its last moments may be missing at
  the DR site; kumiai reports that window (read from the old members' WAL, which the lab's disks still hold).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="127.0.35.0/24,127.0.36.0/24", help="the lab's two site networks")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--write-docs", action="store_true", help="replace the DR section of docs/benchmarks.md")
    parser.add_argument(
        "--lab",
        type=Path,
        help="measure on a lab already up under this directory (inventory/, lab/, state/) instead of building one; "
        "it is left failed over to the DR site, its primary site killed",
    )
    parser.add_argument("--from-json", type=Path, help="format results measured earlier instead of measuring")
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.from_json.read_text()) if args.from_json else {}
    try:
        if not args.from_json:
            bench(args.networks.split(","), args.lab, results)
    except BaseException:
        # The phases measured before one failed are kept (raw, for --from-json).
        print(json.dumps(results, indent=2))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        raise
    publish(results, markdown(results), title="DR", json_path=args.json, write_docs=args.write_docs)


if __name__ == "__main__":
    main()

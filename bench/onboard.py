"""Benchmark onboarding on the embedded lab: one town, an idempotent re-run, five towns at once.

It builds its own lab in a temporary directory below /var/tmp (nothing else may be running on 127.0.1.0/24 and
127.0.2.0/24), with a copy of inventories/lab plus five Kanagawa towns added with `kumiai town new`, and removes
it at the end. Every figure is the wall time of a real `kumiai` command, end to end (validation, credentials,
playbook, checks):
- lab up: `kumiai lab up --towns nakai` (packages check, both sites' services, one town);
- one town: `kumiai onboard ID`, for kiyokawa and then manazuru;
- re-run: the same command again for each (the playbook reports changed=0);
- five towns: `kumiai onboard A B C D E` (one playbook run: Ansible works on the 20 members in parallel), and
  its re-run.
Usage: .venv/bin/python bench/onboard.py [--json FILE] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from report import publish

ROOT = Path(__file__).resolve().parents[1]
KUMIAI = ROOT / ".venv" / "bin" / "kumiai"
SINGLE = ["kiyokawa", "manazuru"]
# Five Kanagawa towns that are not in the lab inventory (DOMAIN.md): id, name, code, population.
FIVE = [
    ("hayama", "葉山町", "143014", 30700),
    ("samukawa", "寒川町", "143219", 48700),
    ("oiso", "大磯町", "143413", 32300),
    ("ninomiya", "二宮町", "143421", 27900),
    ("kaisei", "開成町", "143669", 18800),
]


def run(env: dict[str, str], *args: str, timeout: float = 900) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([str(KUMIAI), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"kumiai {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return seconds, proc.stdout


def changed(stdout: str) -> int:
    m = re.search(r"playbook changed=(\d+)", stdout)
    return int(m.group(1)) if m else -1


def bench() -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="kumiai-bench-", dir="/var/tmp"))
    base.chmod(0o755)
    inventory = base / "inventory"
    shutil.copytree(ROOT / "inventories" / "lab", inventory)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUMIAI_")}
    env.update(
        {
            "KUMIAI_INVENTORY": str(inventory),
            "KUMIAI_LAB_DIR": str(base / "lab"),
            "KUMIAI_STATE_DIR": str(base / "state"),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            # Other work on the machine slows Ansible's workers directly: record how busy it was.
            "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
        }
    }
    try:
        for tid, name, code, population in FIVE:
            run(env, "town", "new", tid, "--name", name, "--code", code, "--population", str(population))
        results["lab_up_one_town_s"], _ = run(env, "lab", "up", "--towns", "nakai")
        results["one_town"] = []
        for tid in SINGLE:
            first, out1 = run(env, "onboard", tid)
            again, out2 = run(env, "onboard", tid)
            results["one_town"].append(
                {
                    "town": tid,
                    "onboard_s": first,
                    "rerun_s": again,
                    "rerun_changed": changed(out2),
                    "first_changed": changed(out1),
                }
            )
        five = [t[0] for t in FIVE]
        results["five_towns_s"], _ = run(env, "onboard", *five)
        results["five_towns_rerun_s"], out = run(env, "onboard", *five)
        results["five_towns_rerun_changed"] = changed(out)
        _, status = run(env, "status", "--json")
        towns = json.loads(status)["towns"]
        results["healthy_towns"] = sum(t["healthy"] for t in towns)
        results["towns"] = len(towns)
    finally:
        subprocess.run([str(KUMIAI), "lab", "down", "--purge"], cwd=ROOT, env=env, capture_output=True, timeout=600)
        shutil.rmtree(base, ignore_errors=True)
    return results


def markdown(r: dict[str, Any]) -> str:
    one = r["one_town"]
    mean_first = sum(x["onboard_s"] for x in one) / len(one)
    mean_again = sum(x["rerun_s"] for x in one) / len(one)
    rows = "\n".join(
        f"| one town ({x['town']}) | {x['onboard_s']:.1f} s | {x['rerun_s']:.1f} s "
        f"({100 * x['rerun_s'] / x['onboard_s']:.0f}%) | {x['rerun_changed']} |"
        for x in one
    )
    five, five_again = r["five_towns_s"], r["five_towns_rerun_s"]
    five_row = (
        f"| five towns at once (20 members, one playbook run) | {five:.1f} s | {five_again:.1f} s "
        f"({100 * five_again / five:.0f}%) | {r['five_towns_rerun_changed']} |"
    )
    lab_up = r["lab_up_one_town_s"]
    return f"""## Onboarding

`bench/onboard.py` on the embedded lab ({r["machine"]["cpus"]} cores, Python {r["machine"]["python"]}), each figure the
wall time of a real `kumiai` command end to end (validation, credentials, `onboard_town.yml`, then the check
that the DR standby streams and both repos hold a full backup). One run of each; the 1-minute load average
when it started was {r["machine"].get("loadavg_1min_at_start", "?")} (other work slows Ansible's workers).

| what | onboarding | idempotent re-run (share) | re-run changed |
|---|---|---|---|
{rows}
{five_row}

- `kumiai lab up --towns nakai` from nothing (both sites' supervisord and etcd, one town): {lab_up:.1f} s.
- One town, mean: {mean_first:.1f} s (aim ≤ 60 s); re-run mean {mean_again:.1f} s =
  {100 * mean_again / mean_first:.0f}% of it (aim ≤ 30%).
- Five towns at once: {r["five_towns_s"]:.1f} s, {r["five_towns_s"] / 5:.1f} s per town.
- At the end {r["healthy_towns"]} of {r["towns"]} towns were healthy (leader with a synchronous replica, DR standby
  streaming, a full backup in each repo).
- Where the time goes: the re-run is Ansible's own cost: about 25 tasks on each of the town's 4 member hosts,
  ≈110 forked workers, of which the ones that run a module (templates, `uri`, `supervisorctl`, the
  PostgreSQL role and database checks, `pgbackrest info`) cost ≈0.3 s of CPU each on 2 cores. The first run
  adds Patroni's bootstrap (≈3 s), the DR clone (overlapping the backups), and two full backups (one per repo,
  ≈3-4 s each, mostly waiting for the backup's WAL to be archived).
- Five towns at once gain little over one after another: on 2 cores the work is CPU-bound (Ansible's workers,
  20 PostgreSQL bootstraps or clones, 10 backups). Ansible's forks were measured for it: 20 forks 137 s,
  8 forks 102 s, 4 forks 117 s; ansible.cfg uses 8. Ansible's `free` strategy changed nothing measurable.
- The re-run misses the 30% aim. What would reach it: fewer host-task executions (one Ansible host per town and
  site looping over its members instead of one host per member, or skipping the app-role and stanza checks
  when the cluster reports them done) — not done yet.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--write-docs", action="store_true", help="replace the Onboarding section of docs/benchmarks.md"
    )
    args = parser.parse_args()
    results = bench()
    publish(results, markdown(results), title="Onboarding", json_path=args.json, write_docs=args.write_docs)


if __name__ == "__main__":
    main()

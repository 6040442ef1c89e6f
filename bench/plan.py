"""Benchmark `kumiai plan` against the straightforward render of the same programs, in one run.

For each size (default 14, 200 and 1,741 generated towns) it measures, each in its own process:
- baseline: one process, one program run per stack (town x site, and each site's platform) under the stock mocked
  runtime, every resource kept in memory, no cache, no workers;
- plan (cold): `kumiai plan --no-validate` with an empty cache (workers, batches, fast runtime, manifests written);
- re-plan, one town changed: the same command after editing one town file (renders that town's two stacks);
- re-plan, nothing changed.
Wall time, CPU time (user + sys of the process and its children) and memory: the peak of the summed RSS of the
process tree, sampled every 20 ms from /proc, and getrusage's ru_maxrss (largest single process).
Validation (kubernetes-validate, checkov) is timed separately at the smallest size: a first validated plan, then
after one town changed (only its stacks are validated again), then unchanged.

Synthetic towns only: ids t0000…, names 合成町N, codes 5 digits + check digit, systems copied from the Kanagawa
examples. Usage: .venv/bin/python bench/plan.py [--sizes 14,200,1741] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KANAGAWA = ROOT / "inventories" / "kanagawa"
KUMIAI = ROOT / ".venv" / "bin" / "kumiai"


def generate(n: int, root: Path) -> Path:
    from kumiai.models import with_check_digit

    if root.exists():
        shutil.rmtree(root)
    (root / "towns").mkdir(parents=True)
    shutil.copy(KANAGAWA / "consortium.yaml", root / "consortium.yaml")
    examples = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted((KANAGAWA / "towns").glob("*.yaml"))]
    for i in range(n):
        town = dict(examples[i % len(examples)])
        town.update(id=f"t{i:04d}", name=f"合成町{i}", code=with_check_digit(f"{10000 + i:05d}"))
        (root / "towns" / f"t{i:04d}.yaml").write_text(yaml.safe_dump(town, allow_unicode=True), encoding="utf-8")
    return root


def _tree_rss(pid: int) -> int:
    """Summed RSS in bytes of a process and all its descendants."""
    total = 0
    stack = [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run cmd; wall and CPU seconds, sampled peak tree RSS and ru_maxrss, from a fresh wrapper process."""
    wrapper = [sys.executable, __file__, "--measure-child", json.dumps(cmd)]
    out = subprocess.run(wrapper, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measurement failed: {cmd}\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _measure_child(cmd: list[str]) -> None:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0,):
        sys.stderr.write(stderr[-3000:])
        raise SystemExit(proc.returncode)
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_tree_rss_mb": round(peak / 2**20),
                "max_single_rss_mb": round(usage.ru_maxrss / 1024),
                "output": stdout.strip(),
            }
        )
    )


def _baseline(inventory: str) -> None:
    """The straightforward render: every stack in turn, stock runtime, everything kept in memory."""
    from kumiai.inventory import load_inventory
    from kumiai.render import render_straightforward
    from kumiai_stacks.spec import platform_spec, tenant_spec

    inv = load_inventory(inventory)
    jobs: list[Any] = []
    for site in inv.consortium.sites:
        jobs.append(platform_spec(inv, site))
        jobs.extend(tenant_spec(inv, t, site) for t in inv.towns.values())
    results = render_straightforward(jobs)
    print(json.dumps({"stacks": len(results), "resources": sum(len(v) for v in results.values())}))


def run(sizes: list[int], work: Path) -> dict[str, Any]:
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        inv = generate(n, work / f"inv{n}")
        state = work / f"state{n}"
        env = {**os.environ, "KUMIAI_STATE_DIR": str(state), "NO_COLOR": "1"}
        plan = [str(KUMIAI), "--inventory", str(inv), "plan", "--no-validate", "--json"]
        plan += ["--manifests", str(work / f"manifests{n}")]
        row: dict[str, Any] = {"towns": n}
        row["baseline"] = measure([sys.executable, __file__, "--baseline-child", str(inv)], env)
        row["plan_cold"] = measure(plan, env)
        _edit_one_town(inv)
        row["replan_one_town"] = measure(plan, env)
        row["replan_unchanged"] = measure(plan, env)
        summary = json.loads(row["plan_cold"].pop("output") or "{}")
        row["resources"] = json.loads(row["baseline"].pop("output") or "{}").get("resources")
        row["plan_resources"] = summary.get("resources")
        row["replan_rendered"] = json.loads(row["replan_one_town"].pop("output") or "{}").get("rendered")
        row["replan_unchanged"].pop("output")
        row["speedup_cold"] = round(row["baseline"]["wall_s"] / row["plan_cold"]["wall_s"], 1)
        row["speedup_cold_cpu"] = round(row["baseline"]["cpu_s"] / row["plan_cold"]["cpu_s"], 1)
        row["load_after"] = os.getloadavg()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    # Validation, timed on its own at the smallest size (cache warm, so this is validation only).
    n = sizes[0]
    env = {**os.environ, "KUMIAI_STATE_DIR": str(work / "state-validate"), "NO_COLOR": "1"}
    cmd = [str(KUMIAI), "--inventory", str(work / f"inv{n}"), "plan", "--json", "--manifests", str(work / "mv")]
    validation: dict[str, Any] = {"towns": n, "cold": measure(cmd, env)}
    _edit_one_town(work / f"inv{n}")
    validation["one_town_changed"] = measure(cmd, env)
    validation["unchanged"] = measure(cmd, env)
    for m in ("cold", "one_town_changed", "unchanged"):
        summary = json.loads(validation[m].pop("output") or "{}")
        validation[m]["rendered"] = summary.get("rendered")
        validation[m]["seconds"] = summary.get("seconds")
    return {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "load_before": load_before},
        "load_after": os.getloadavg(),
        "rows": rows,
        "validation": validation,
    }


def _edit_one_town(inv: Path) -> None:
    town = inv / "towns" / "t0000.yaml"
    text = town.read_text(encoding="utf-8")
    town.write_text(text.replace("tier: m", "tier: l") if "tier: m" in text else text.replace("tier: ", "tier: m #"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="14,200,1741")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure-child", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_child:
        _measure_child(json.loads(args.measure_child))
        return
    if args.baseline_child:
        _baseline(args.baseline_child)
        return
    with tempfile.TemporaryDirectory(prefix="kumiai-bench-") as tmp:
        results = run([int(s) for s in args.sizes.split(",")], Path(tmp))
    text = json.dumps(results, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

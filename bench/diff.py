"""Benchmark `kumiai diff` between two git refs of the 14-town Kanagawa inventory against `kumiai plan`, in one run.

A throwaway git repository holds the inventory at two commits; the second changes one town's tier, adds a town
and removes a segment from another (the change the issue's acceptance test uses). Each command runs in its own
process, measured by bench/plan.py's `measure` (wall, CPU of the process tree, peak RSS):
- plan: `kumiai plan --no-validate` at the newer commit (render and rules: the work diff shares with it);
- plan, validated: `kumiai plan` as a user runs it (kubernetes-validate and checkov too);
- diff: `kumiai diff HEAD~1 --head HEAD --format json` (both sides exported from git, rendered, compared);
each cold (a new state directory: empty render cache) and then warm (the same command again), --repeat times;
the median is reported. Aim (issue 7): diff at most 2x plan.

Usage: .venv/bin/python bench/diff.py [--repeat 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from plan import KANAGAWA, KUMIAI, measure  # bench/plan.py: the same measurement for both benchmarks

GIT = ("git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "-c", "commit.gpgsign=false")


def _git(repo: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=repo, check=True, capture_output=True)


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise SystemExit(f"{path} no longer holds {old!r}: update bench/diff.py")
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def repository(root: Path) -> Path:
    """The Kanagawa inventory committed twice; the inventory's path."""
    inv = root / "kanagawa"
    shutil.copytree(KANAGAWA, inv)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    towns = inv / "towns"
    _replace(towns / "hakone.yaml", "tier: s", "tier: m")
    _replace(towns / "oiso.yaml", "  - {name: 電子申請, segment: internet}\n", "")
    # A fifteenth town: a copy of one, with its own id, name and code (synthetic: no such municipality).
    shutil.copy(towns / "nakai.yaml", towns / "bench-town.yaml")
    for old, new in (("id: nakai", "id: bench-town"), ("中井町", "合成町"), ('"143618"', '"999997"')):
        _replace(towns / "bench-town.yaml", old, new)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "tier, new town, segment removed")
    return inv


def run(repeat: int, work: Path) -> dict[str, Any]:
    inv = repository(work / "repo")
    commands = {
        "plan": [str(KUMIAI), "--inventory", str(inv), "plan", "--no-validate", "--json"],
        "plan_validated": [str(KUMIAI), "--inventory", str(inv), "plan", "--json"],
        "diff": [str(KUMIAI), "--inventory", str(inv), "diff", "HEAD~1", "--head", "HEAD", "--format", "json"],
    }
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"cold": [], "warm": []} for name in commands}
    load_before = os.getloadavg()
    for i in range(repeat):
        for name, cmd in commands.items():
            state = work / f"state-{name}-{i}"
            env = {**os.environ, "KUMIAI_STATE_DIR": str(state), "NO_COLOR": "1"}
            for phase in ("cold", "warm"):
                m = measure([*cmd, "--manifests", str(state / "m")] if name.startswith("plan") else cmd, env)
                m.pop("output")
                samples[name][phase].append(m)
    medians = {
        name: {
            phase: {k: statistics.median(s[k] for s in runs) for k in ("wall_s", "cpu_s", "peak_tree_rss_mb")}
            for phase, runs in phases.items()
        }
        for name, phases in samples.items()
    }
    ratios = {
        phase: {
            "diff_over_plan_wall": round(medians["diff"][phase]["wall_s"] / medians["plan"][phase]["wall_s"], 2),
            "diff_over_plan_cpu": round(medians["diff"][phase]["cpu_s"] / medians["plan"][phase]["cpu_s"], 2),
            "diff_over_validated_plan_wall": round(
                medians["diff"][phase]["wall_s"] / medians["plan_validated"][phase]["wall_s"], 2
            ),
        }
        for phase in ("cold", "warm")
    }
    return {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "load_before": load_before},
        "load_after": os.getloadavg(),
        "repeat": repeat,
        "median": medians,
        "ratios": ratios,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kumiai-bench-diff-") as tmp:
        results = run(args.repeat, Path(tmp))
    text = json.dumps(results, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

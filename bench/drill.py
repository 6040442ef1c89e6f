"""Benchmark restore drills on the embedded lab: drill RTO and restore throughput, next to the disk's read speed.

It builds its own lab in a temporary directory below /var/tmp on networks of its own (default 127.0.33.0/24 and
127.0.34.0/24, `--networks A,B` to move it; nothing else may run there), onboards one lab town (nakai) and
removes the lab at the end:
- a drill of the freshly onboarded town (about 20 MB);
- the town grown to about 1 GB with `pgbench -i` and a new full backup in its DR site's repo, then a drill;
- the disk's sequential read speed, measured in the same run on the filesystem holding the lab: a file of the
  restored size written and read back with O_DIRECT (dd), so the page cache does not answer.
Every drill figure is what `kumiai drill --json` measured and wrote in its evidence: RTO (command start to a
writable copy), the restore step (pgBackRest reading the repo and writing the data directory) and each step.
Usage: .venv/bin/python bench/drill.py [--scale N] [--networks A,B] [--json FILE] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kumiai.datalayer.secrets import load_town_secrets
from kumiai.datalayer.target import as_user
from kumiai.datalayer.topology import os_user
from report import publish

ROOT = Path(__file__).resolve().parents[1]
KUMIAI = ROOT / ".venv" / "bin" / "kumiai"
TOWN = "nakai"
# pgbench's scale 1 is about 15 MB of tables and indexes: 68 makes a town of about 1 GB.
DEFAULT_SCALE = 68
LAB_NETWORKS = ("127.0.1.0/24", "127.0.2.0/24")
AS_TOWN = as_user(os_user(TOWN))


def kumiai(env: dict[str, str], *args: str, timeout: float = 1800) -> str:
    proc = subprocess.run([str(KUMIAI), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"kumiai {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def drill(env: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    town = json.loads(kumiai(env, "drill", "--town", TOWN, "--json"))["towns"][0]
    town["command_s"] = time.perf_counter() - t0
    return town


def disk_read_mb_s(directory: Path, size_mb: int) -> dict[str, float]:
    """Sequential read of a fresh file with O_DIRECT (1 MiB blocks), as dd reports it."""
    probe = directory / "disk-probe"
    try:
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={probe}", "bs=1M", f"count={size_mb}", "oflag=direct", "conv=fsync"],
            capture_output=True,
            check=True,
        )
        t0 = time.perf_counter()
        subprocess.run(["dd", f"if={probe}", "of=/dev/null", "bs=1M", "iflag=direct"], capture_output=True, check=True)
        seconds = time.perf_counter() - t0
    finally:
        probe.unlink(missing_ok=True)
    return {"mb": size_mb * 1.048576, "seconds": seconds, "mb_s": size_mb * 1.048576 / seconds}


def grow(env: dict[str, str], lab_dir: Path, state_dir: Path, scale: int) -> dict[str, float]:
    """pgbench -i at the town's primary, then a full backup into the DR site's repo (repo2)."""
    status = json.loads(kumiai(env, "status", "--json", "--town", TOWN))["towns"][0]
    primary = status["primary"]
    leader = next(m for m in primary["members"] if m["name"] == primary["leader"])
    secrets = load_town_secrets(lab_dir / "secrets" / f"{TOWN}.vault.yml", state_dir / "secrets" / "towns")
    # The superuser connects over verified TLS with the controller's certificate (CN postgres) only.
    controller = lab_dir / "pki" / "controller"
    pg_env = {
        **os.environ,
        "PGPASSWORD": secrets.superuser_password,
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": str(lab_dir / "ca" / "ca.crt"),
        "PGSSLCERT": str(controller / "client.crt"),
        "PGSSLKEY": str(controller / "client.key"),
    }
    t0 = time.perf_counter()
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), "-h", leader["host"], "-U", "postgres", TOWN],
        env=pg_env,
        capture_output=True,
        check=True,
        timeout=3600,
    )
    loaded = time.perf_counter() - t0
    member = lab_dir / "site-a" / "towns" / TOWN / f"member{leader['name'].rsplit('-', 1)[1]}"
    t0 = time.perf_counter()
    subprocess.run(
        [
            *AS_TOWN,
            "pgbackrest",
            f"--config={member / 'pgbackrest.conf'}",
            f"--stanza={TOWN}",
            "--repo=2",
            "--type=full",
            "backup",
        ],
        capture_output=True,
        check=True,
        timeout=3600,
    )
    return {"pgbench_init_s": loaded, "full_backup_repo2_s": time.perf_counter() - t0}


def bench(scale: int, test_networks: list[str]) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="kumiai-bench-drill-", dir="/var/tmp"))
    base.chmod(0o755)
    inventory = base / "inventory"
    shutil.copytree(ROOT / "inventories" / "lab", inventory)
    consortium = inventory / "consortium.yaml"
    text = consortium.read_text(encoding="utf-8")
    for lab_net, net in zip(LAB_NETWORKS, test_networks, strict=True):
        text = text.replace(lab_net, net)
    consortium.write_text(text, encoding="utf-8")
    lab_dir, state_dir = base / "lab", base / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUMIAI_")}
    env.update(
        {
            "KUMIAI_INVENTORY": str(inventory),
            "KUMIAI_LAB_DIR": str(lab_dir),
            "KUMIAI_STATE_DIR": str(state_dir),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "scale": scale,
    }
    try:
        kumiai(env, "lab", "up", "--towns", TOWN)
        results["small"] = drill(env)
        results["grow"] = grow(env, lab_dir, state_dir, scale)
        results["large"] = drill(env)
        restored_mb = (results["large"]["restored_bytes"] or 0) / 1e6
        results["disk"] = disk_read_mb_s(lab_dir, max(int(restored_mb), 256))
        results["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    finally:
        subprocess.run([str(KUMIAI), "lab", "down", "--purge"], cwd=ROOT, env=env, capture_output=True, timeout=600)
        shutil.rmtree(base, ignore_errors=True)
    return results


def step_seconds(town: dict[str, Any]) -> dict[str, float]:
    return {s["name"].rsplit(": ", 1)[-1]: s["seconds"] for s in town["steps"]}


def markdown(r: dict[str, Any]) -> str:
    def row(label: str, t: dict[str, Any]) -> str:
        s = step_seconds(t)
        return (
            f"| {label} | {t['restored_bytes'] / 1e6:.0f} MB | **{t['rto_s']:.1f} s** | {t['rpo_s']:.2f} s "
            f"| {s['write-marker']:.1f} s | {s['archive-marker']:.1f} s | {t['restore_s']:.1f} s "
            f"({t['restore_mb_s']:.0f} MB/s) | {s['start']:.1f} s | {s['verify']:.1f} s | {t['command_s']:.1f} s "
            f"| {t['verdict'].upper()} |"
        )

    small, large, disk, grown = r["small"], r["large"], r["disk"], r["grow"]
    columns = (
        "town",
        "restored",
        "RTO",
        "RPO",
        "marker + checksums",
        "WAL archived",
        "restore (throughput)",
        "start, replay, promote",
        "verify",
        "whole command",
        "verdict",
    )
    table = "\n".join(
        [
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
            row("freshly onboarded", small),
            row(f"pgbench scale {r['scale']}", large),
        ]
    )
    return f"""## Drills

`bench/drill.py` on the embedded lab ({r["machine"]["cpus"]} cores, Python {r["machine"]["python"]}): a lab of
its own with one town ({TOWN}), each figure what `kumiai drill --town {TOWN} --json` measured and wrote in its
evidence (restore from repo2, the DR site's). One run of each. Other labs ran on the machine: the 1-minute load
average was {r["machine"]["loadavg_1min_at_start"]} at the start and {r["loadavg_1min_at_end"]} at the end.

{table}

- Restore throughput {large["restore_mb_s"]:.0f} MB/s, next to the disk's sequential read measured in the same
  run on the filesystem holding the lab (O_DIRECT, 1 MiB blocks): {disk["mb_s"]:.0f} MB/s ({disk["mb"]:.0f} MB in
  {disk["seconds"]:.1f} s); the restore reached {100 * large["restore_mb_s"] / disk["mb_s"]:.0f}% of it.
- Aim: a drill of a 1 GB town within 60 s (RTO {large["rto_s"]:.1f} s here). RTO runs from the command's start
  to the first write the copy commits, so it includes the marker's transaction, which reads every row of every
  table at the primary for the checksums ({step_seconds(large)["write-marker"]:.1f} s here): a recovery without
  a drill would not pay it. Restore plus start, replay and promote, what such a recovery pays:
  {large["restore_s"] + step_seconds(large)["start"]:.1f} s.
- Growing the town: `pgbench -i -s {r["scale"]}` {grown["pgbench_init_s"]:.0f} s (synchronous replica, DR
  standby and archiving to both repos all keep up), a new full backup into repo2 {grown["full_backup_repo2_s"]:.0f} s.
- The restore is pgBackRest reading the encrypted, zstd-compressed backup from the posix repo with one process
  (`process-max=1` in the lab's pgbackrest.conf): CPU, not the disk, sets its pace (one process decrypting and
  decompressing, on 2 cores shared with the other labs; not measured on an idle machine). Start, replay and
  promote replays the WAL from the backup's start to the marker, fetched one segment at a time by archive-get.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE, help="pgbench scale of the large town")
    parser.add_argument("--networks", default="127.0.33.0/24,127.0.34.0/24", help="the lab's two site networks")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--write-docs", action="store_true", help="replace the Drills section of docs/benchmarks.md")
    args = parser.parse_args()
    results = bench(args.scale, args.networks.split(","))
    publish(results, markdown(results), title="Drills", json_path=args.json, write_docs=args.write_docs)


if __name__ == "__main__":
    main()

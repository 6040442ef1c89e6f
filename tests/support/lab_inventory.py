"""Copies of the lab inventory for tests and benchmarks: with both sites' repos in S3 (the lab's own radosgw at host 3
of each site's network, as inventories/lab has it) or in posix directories under the lab directory."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _lab_inventory(dst: Path, storage: str, retention_days: int | None, consortium: dict[str, object]) -> Path:
    shutil.copytree(ROOT / "inventories" / "lab", dst)
    path = dst / "consortium.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for site in data["sites"]:
        if storage == "s3":
            net = ipaddress.ip_network(site["db_network"])
            site["object_storage"] = {
                "type": "s3",
                "endpoint": f"https://{net.network_address + 3}:7443",
                "region": "default",
                "bucket_prefix": f"lab-{site['id']}",
            }
        else:
            site["object_storage"] = {"type": "posix", "path": f"{site['id']}/backup"}
    if retention_days is not None:
        data["defaults"]["protection"]["immutable_days"] = retention_days
    data.update(consortium)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return dst


def s3_lab_inventory(dst: Path, retention_days: int | None = None, **consortium: object) -> Path:
    """Copy inventories/lab to `dst` with `object_storage: type: s3` at every site; `retention_days` replaces the
    towns' default immutable_days; further keyword arguments are set in consortium.yaml."""
    return _lab_inventory(dst, "s3", retention_days, consortium)


def posix_lab_inventory(dst: Path, **consortium: object) -> Path:
    """Copy inventories/lab to `dst` with a posix repo at every site (`<lab dir>/<site>/backup`)."""
    return _lab_inventory(dst, "posix", None, consortium)

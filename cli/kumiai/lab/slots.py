"""The slot of each onboarded town, persisted in the lab directory: assigned once, lowest free first."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from kumiai.lab.layout import lowest_free_slot

SLOTS_FILE = "slots.json"


def read_slots(lab_dir: Path) -> dict[str, int]:
    path = lab_dir / SLOTS_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): int(v) for k, v in data.items()}


@contextlib.contextmanager
def _locked(lab_dir: Path) -> Iterator[None]:
    lab_dir.mkdir(parents=True, exist_ok=True)
    with (lab_dir / f"{SLOTS_FILE}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _write(lab_dir: Path, slots: dict[str, int]) -> None:
    tmp = lab_dir / f"{SLOTS_FILE}.tmp"
    tmp.write_text(json.dumps(slots, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, lab_dir / SLOTS_FILE)


def assign_slots(lab_dir: Path, town_ids: list[str]) -> dict[str, int]:
    """Give each town without a slot the lowest free one; return all slots. Safe for concurrent callers."""
    with _locked(lab_dir):
        slots = read_slots(lab_dir)
        for tid in town_ids:
            if tid not in slots:
                slots[tid] = lowest_free_slot(set(slots.values()))
        _write(lab_dir, slots)
    return slots


def release_slot(lab_dir: Path, town_id: str) -> bool:
    """Free an offboarded town's slot (the next town onboarded may take it); False when it held none."""
    with _locked(lab_dir):
        slots = read_slots(lab_dir)
        if slots.pop(town_id, None) is None:
            return False
        _write(lab_dir, slots)
    return True

"""Reading WAL positions and archiver state: what the loss window and the [045] check are computed from. Pure.

LSNs are PostgreSQL's `X/Y` text (two hexadecimal 32-bit halves); WAL segment names are 24 hexadecimal digits
(timeline, log, segment) with 16 MiB segments, PostgreSQL's default and the only size kumiai creates.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

SEGMENT_BYTES = 16 * 1024 * 1024
SEGMENTS_PER_LOG = 0x100000000 // SEGMENT_BYTES
SEGMENT_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")

# pg_waldump (PostgreSQL 15): "rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/030001B0,
# prev 0/03000178, desc: COMMIT 2026-11-27 14:50:01.123456 UTC"
_RECORD = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+),.*?lsn: ([0-9A-F]+/[0-9A-F]+),.*?desc: (.*)$")
_COMMIT = re.compile(r"^COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (\S+)")


def lsn_int(lsn: str) -> int:
    """'0/3000148' -> 50331976."""
    high, _, low = lsn.partition("/")
    if not low:
        raise ValueError(f"not an LSN: {lsn!r}")
    return (int(high, 16) << 32) + int(low, 16)


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_timeline(name: str) -> int | None:
    """The timeline of a WAL segment file name; None for anything else (history files, .partial, directories)."""
    match = SEGMENT_NAME.match(name)
    return int(match.group(1), 16) if match else None


def newest_timeline(names: list[str]) -> int | None:
    timelines = [t for t in (segment_timeline(n) for n in names) if t is not None]
    return max(timelines) if timelines else None


@dataclass(frozen=True)
class Commit:
    lsn: int
    time: datetime


@dataclass(frozen=True)
class WalTail:
    """What pg_waldump read from a position on: where the WAL ends and the commits on the way."""

    end: int
    commits: tuple[Commit, ...]


def parse_waldump(output: str) -> WalTail | None:
    """pg_waldump's record lines -> the end of the last complete record and every COMMIT; None without records."""
    end = None
    commits = []
    for line in output.splitlines():
        match = _RECORD.search(line)
        if not match:
            continue
        total, lsn, desc = int(match.group(1)), lsn_int(match.group(2)), match.group(3)
        # Records start at 8-byte boundaries, so the next one (the end of this one) is aligned too.
        end = (lsn + total + 7) & ~7
        commit = _COMMIT.match(desc)
        if commit:
            stamp = datetime.fromisoformat(f"{commit.group(1)}+00:00" if commit.group(2) == "UTC" else commit.group(1))
            commits.append(Commit(lsn=lsn, time=stamp))
    return WalTail(end=end, commits=tuple(commits)) if end is not None else None


def nothing_after(stderr: str, start: int) -> WalTail | None:
    """pg_waldump found the segment of `start` but no record from there on: the WAL ends at `start`."""
    if "could not find a valid record after" in stderr:
        return WalTail(end=start, commits=())
    return None


@dataclass
class LossWindow:
    """What the old primary had written that the new one lacks. None means unknown (said so in `basis`)."""

    bytes: int | None
    seconds: float | None
    commits: int | None
    old_end_lsn: str | None
    new_lsn: str
    basis: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        size = f"{self.bytes} B" if self.bytes is not None else "unknown bytes"
        secs = f"{self.seconds:.3f} s" if self.seconds is not None else "unknown seconds"
        commits = f", {self.commits} commits" if self.commits is not None else ""
        return f"{size}, {secs}{commits} ({self.basis})"


def loss_window(new_lsn: int, new_last_commit: datetime | None, tail: WalTail | None, basis: str) -> LossWindow:
    """The window between the new primary's last received position and the old primary's end of WAL.

    `tail` is the old primary's WAL read from `new_lsn` on. Seconds span from the newest commit the new primary
    replayed to the newest commit only the old one has: the writes of that span are the ones lost. A commit
    record is an upper bound of what was acknowledged (its client may not have had the answer yet).
    """
    if tail is None:
        return LossWindow(None, None, None, None, lsn_text(new_lsn), basis)
    lost = [c for c in tail.commits if c.lsn >= new_lsn]
    size = max(tail.end - new_lsn, 0)
    if not lost:
        seconds: float | None = 0.0
    elif new_last_commit is None:
        seconds = (lost[-1].time - lost[0].time).total_seconds()
    else:
        seconds = max((lost[-1].time - new_last_commit).total_seconds(), 0.0)
    return LossWindow(size, seconds, len(lost), lsn_text(tail.end), lsn_text(new_lsn), basis)


@dataclass(frozen=True)
class ArchiverState:
    """One row of pg_stat_archiver."""

    last_archived_wal: str | None
    last_archived_time: datetime | None
    last_failed_wal: str | None
    last_failed_time: datetime | None


def failing_segment(state: ArchiverState) -> str | None:
    """The WAL segment archiving is stuck on now: failed after the last success (None when archiving is fine)."""
    if state.last_failed_wal is None or state.last_failed_time is None:
        return None
    if state.last_archived_time is not None and state.last_archived_time >= state.last_failed_time:
        return None
    return state.last_failed_wal if SEGMENT_NAME.match(state.last_failed_wal) else None


def segment_listed(listing: str, segment: str) -> bool:
    """Whether `pgbackrest repo-ls` of a segment's directory holds the segment (stored as SEGMENT-<sha1>.<ext>)."""
    return any(line.strip().startswith(f"{segment}-") for line in listing.splitlines())


def segment_dir(segment: str) -> str:
    """The archive sub-directory pgBackRest keeps a segment in: its timeline and log (the first 16 digits)."""
    return segment[:16]

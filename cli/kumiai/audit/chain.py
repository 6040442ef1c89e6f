"""The keyed chain of the audit log. Pure: records and bytes in, problems out (the files are in trail.py).

Each record is one line of canonical JSON carrying its sequence number, the MAC of the record before it (`prev`),
the id of the key that sealed it and its own MAC: HMAC-SHA256 over everything else in the record. Without the key
nobody can write a record that verifies, so a log rewritten with a recomputed plain hash chain fails; the head
(sequence number and MAC of the newest record) is also kept in an anchor outside the log's directory, so removing
the newest records, or the whole log, is detected too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GENESIS = "0" * 64
MAC_PATTERN = r"^[0-9a-f]{64}$"


def canonical(record: dict[str, Any]) -> str:
    """The one form a record is written in; any other byte sequence for the same record is an edit."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True)


def key_id(key: bytes) -> str:
    """A short public name for a key (records and the anchor carry it; the key itself never leaves its file)."""
    return hashlib.sha256(b"kumiai-audit-key-id:" + key).hexdigest()[:16]


def mac_of(record: dict[str, Any], key: bytes) -> str:
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, canonical(body).encode(), hashlib.sha256).hexdigest()


class Head(BaseModel):
    """The newest record's place in the chain, as copied to the anchor after every record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    mac: str = Field(pattern=MAC_PATTERN)
    time: str
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")


def seal(record: dict[str, Any], key: bytes, head: Head | None) -> dict[str, Any]:
    """The record chained after `head` (None: the first record) and sealed with the key."""
    link = {"seq": head.seq + 1, "prev": head.mac} if head else {"seq": 1, "prev": GENESIS}
    sealed = {**record, **link, "key_id": key_id(key)}
    sealed["mac"] = mac_of(sealed, key)
    return sealed


def head_of(record: dict[str, Any]) -> Head:
    return Head(seq=record["seq"], mac=record["mac"], time=record.get("time", ""), key_id=record["key_id"])


def parse(raw: bytes) -> dict[str, Any] | None:
    """A line as a record, or None if it is not one (undecodable bytes, not JSON, not an object)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def seal_problem(raw: bytes, record: dict[str, Any], key: bytes) -> str | None:
    """Why a record was not written by kumiai with this key as it stands, or None if it was."""
    if not isinstance(record.get("mac"), str):
        return "not sealed with the audit key: a plain record (a log rewritten with a recomputed unkeyed chain?)"
    if record.get("key_id") != key_id(key):
        return f"sealed with another key (key id {record.get('key_id')}; the audit key is {key_id(key)})"
    if not hmac.compare_digest(record["mac"], mac_of(record, key)):
        return "changed after it was written: its MAC does not match its content"
    if raw != canonical(record).encode():
        return "changed after it was written: its bytes are not the ones kumiai wrote"
    return None


@dataclass(frozen=True)
class Flaw:
    """One thing wrong with the log; `line` and `seq` name the first bad record where there is one."""

    message: str
    line: int | None = None
    seq: int | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}" if self.line else "", f"seq {self.seq}" if self.seq else ""]
        label = ", ".join(w for w in where if w)
        return f"{label}: {self.message}" if label else self.message

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "seq": self.seq, "problem": self.message}


@dataclass(frozen=True)
class Checked:
    records: int
    head: Head | None
    problems: list[Flaw]


def split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """The log's lines, and whether its last line is terminated (a write cut short, or an edit, leaves it not)."""
    lines = data.split(b"\n")
    terminated = lines[-1] == b""
    return (lines[:-1] if terminated else lines), terminated


def check(data: bytes | None, key: bytes | None, anchor: Head | None) -> Checked:
    """Check a log's bytes (None: the log does not exist) against the key and the anchored head.

    Every line is checked on its own (sealed by this key, byte for byte) and against the one before it (next
    sequence number, `prev` is its MAC); then the log's end against the anchor.
    """
    problems: list[Flaw] = []
    lines, terminated = split_lines(data) if data else ([], True)
    if not terminated:
        problems.append(Flaw("the last line is not terminated: a write cut short, or an edit", len(lines)))
    prev_seq, prev_mac = 0, GENESIS
    by_seq: dict[int, dict[str, Any]] = {}
    last: dict[str, Any] | None = None
    count = 0
    for number, raw in enumerate(lines, start=1):
        if not raw:
            problems.append(Flaw("a blank line: kumiai never writes one", number))
            continue
        count += 1
        record = parse(raw)
        if record is None:
            problems.append(Flaw("not a record: unreadable or damaged bytes", number, prev_seq + 1))
            prev_seq, prev_mac = prev_seq + 1, ""
            continue
        seq = record.get("seq") if isinstance(record.get("seq"), int) else None
        why = seal_problem(raw, record, key) if key is not None else None
        if why:
            problems.append(Flaw(why, number, seq))
        if seq != prev_seq + 1:
            what = "removed, inserted or reordered" if seq is not None else "no sequence number"
            problems.append(Flaw(f"out of sequence after seq {prev_seq}: records {what}", number, seq))
        elif prev_mac and record.get("prev") != prev_mac:
            problems.append(Flaw("does not follow the record before it (relinked or reordered)", number, seq))
        prev_seq, prev_mac = seq if seq is not None else prev_seq + 1, str(record.get("mac", ""))
        if seq is not None:
            by_seq[seq] = record
        last = record if key is not None and not why else None  # the head is only what the key vouches for
    if key is not None and anchor is not None and anchor.key_id != key_id(key):
        problems.append(Flaw(f"the anchor was written with another key (key id {anchor.key_id})"))
    problems += _against_anchor(data is not None, count, prev_seq, by_seq, anchor)
    return Checked(count, head_of(last) if last is not None else None, problems)


def _against_anchor(
    log_exists: bool, count: int, last_seq: int, by_seq: dict[int, dict[str, Any]], anchor: Head | None
) -> list[Flaw]:
    if anchor is None:
        if count:
            return [Flaw("no anchor: the newest record cannot be confirmed (the anchor was removed?)")]
        return []
    when = f"the anchor's head is seq {anchor.seq}, written {anchor.time}"
    if not log_exists:
        return [Flaw(f"the log is missing: {when}, so {anchor.seq} records were deleted", None, 1)]
    if last_seq < anchor.seq:
        missing = anchor.seq - last_seq
        return [
            Flaw(
                f"the newest {missing} record(s) are missing: the log ends at seq {last_seq}, {when}",
                None,
                last_seq + 1,
            )
        ]
    anchored = by_seq.get(anchor.seq)
    if anchored is None or anchored.get("mac") != anchor.mac:
        return [Flaw(f"this record is not the one anchored ({when}): the log was rewritten", None, anchor.seq)]
    if last_seq > anchor.seq:
        return [
            Flaw(
                f"the anchor is behind the log ({when}, the log ends at seq {last_seq}): a write cut short "
                "between the log and the anchor, or records added without updating it",
                None,
                anchor.seq + 1,
            )
        ]
    return []

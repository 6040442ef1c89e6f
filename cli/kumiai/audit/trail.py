"""The audit trail on disk: the log, its key and its anchor, and the one way records are appended and checked.

- the log, `<state>/audit/audit.jsonl`: 0600 in a 0700 directory; appends hold an exclusive `flock` on it, so
  concurrent commands (processes) never interleave or fork the chain;
- the key, `<state>/secrets/audit.key` (outside the log's directory): 32 random bytes, 0600 in a 0700 directory,
  made once with the first record and never replaced while a log or an anchor exists (escrow it with the other
  secrets; without it the log cannot be verified);
- the anchor, `$KUMIAI_AUDIT_ANCHOR/audit-head.json` or `<state>/anchor/audit-head.json`: the head of the chain
  (sequence number, MAC, time), rewritten after every record. Production points KUMIAI_AUDIT_ANCHOR at the other
  site's storage, out of reach of whoever can edit this site's log;
- the remote anchor, where the consortium's sites have object stores: every head is also put into the other
  site's locked evidence bucket (kumiai.objectstore.evidence), and `verify` checks the log against the highest
  head ever put there too, so records deleted with this machine's anchor rewritten to match are still found.
  A copy that fails (the other site's store is down) is a warning, never a refused record: the next record's
  copy catches up, and until then `verify` reports the bucket's anchor behind the log.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import ValidationError

from kumiai import paths
from kumiai.audit.chain import Checked, Flaw, Head, canonical, check, head_of, parse, seal, seal_problem
from kumiai.console import err
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.objectstore.evidence import mirror_for, store_file

ANCHOR_FILE = "audit-head.json"
KEY_BYTES = 32


class RemoteAnchor(Protocol):
    """A copy of every head out of reach of this machine (kumiai.objectstore.evidence.EvidenceMirror)."""

    @property
    def where(self) -> str: ...

    def put_head(self, seq: int, body: bytes) -> None: ...

    def newest_head(self) -> tuple[bytes | None, list[str]]: ...


@dataclass(frozen=True)
class _Unusable:
    """A remote anchor whose settings cannot be read: every copy warns, `verify` reports it."""

    why: str

    @property
    def where(self) -> str:
        return "the other site's evidence bucket"

    def put_head(self, seq: int, body: bytes) -> None:
        raise KumiaiError(self.why)

    def newest_head(self) -> tuple[bytes | None, list[str]]:
        raise KumiaiError(self.why)


@dataclass(frozen=True)
class Trail:
    log: Path
    key: Path
    anchor_dir: Path
    remote: RemoteAnchor | None = None

    @property
    def anchor(self) -> Path:
        return self.anchor_dir / ANCHOR_FILE

    @classmethod
    def for_log(cls, log: Path) -> Trail:
        """The key and the default anchor sit in the state directory the log's own directory is in."""
        state = log.parent.parent
        env = os.environ.get("KUMIAI_AUDIT_ANCHOR")
        anchor = Path(env).absolute() if env else state / "anchor"
        try:
            remote: RemoteAnchor | None = mirror_for(state)
        except KumiaiError as exc:
            remote = _Unusable(exc.message)
        return cls(log=log, key=state / "secrets" / "audit.key", anchor_dir=anchor, remote=remote)

    @classmethod
    def default(cls) -> Trail:
        return cls.for_log(paths.audit_log())


def _private_dir(path: Path) -> None:
    """Create the directory 0700; tighten one of ours that is looser (older kumiai made them 0755)."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        path.chmod(0o700)


def _read_key(trail: Trail) -> bytes | None:
    try:
        text = trail.key.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise KumiaiError(f"the audit key {trail.key} cannot be read: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise KumiaiError(f"the audit key {trail.key} is damaged (expected {KEY_BYTES * 2} hex digits)")
    return key


def _key_for_append(trail: Trail, *, in_use: bool) -> bytes:
    """The key, made now if this is the trail's first record; a missing key of a trail in use is never remade."""
    key = _read_key(trail)
    if key is not None:
        return key
    if in_use:
        raise KumiaiError(
            f"the audit key {trail.key} is missing but the audit log or its anchor exists; restore the key from "
            "escrow (a new key would let anyone rewrite the log); nothing was changed"
        )
    _private_dir(trail.key.parent)
    tmp = trail.key.with_name(f".{trail.key.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secrets.token_hex(KEY_BYTES) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, trail.key)  # atomic and never over an existing key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_key(trail) or b""


def read_anchor(trail: Trail) -> Head | None:
    try:
        data = trail.anchor.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KumiaiError(f"the audit anchor {trail.anchor} cannot be read: {exc}") from None
    try:
        return Head.model_validate_json(data)
    except ValidationError:
        raise KumiaiError(f"the audit anchor {trail.anchor} is damaged: not a head kumiai wrote") from None


def _write_anchor(trail: Trail, head: Head) -> None:
    _private_dir(trail.anchor_dir)
    tmp = trail.anchor_dir / f".{ANCHOR_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(head.model_dump_json() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, trail.anchor)
    dir_fd = os.open(trail.anchor_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _last_line(fh: IO[bytes]) -> bytes | None:
    """The last line of the log (with its newline if it has one), read from the end: logs grow for years."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return None
    size = 4096
    while True:
        start = max(0, end - size)
        fh.seek(start)
        tail = fh.read(end - start)
        cut = tail.rfind(b"\n", 0, len(tail) - 1)
        if cut >= 0 or start == 0:
            return tail[cut + 1 :]
        size *= 4


def _refuse(trail: Trail, why: str) -> KumiaiError:
    return KumiaiError(
        f"audit log {trail.log}: {why}, so no record can be chained to it and nothing was changed. Run "
        "`kumiai audit verify`; keep the log and its anchor as evidence (move both aside to start a new trail)"
    )


def _head_to_follow(trail: Trail, last: bytes | None, anchor: Head | None, key: bytes) -> Head | None:
    """The head a new record chains to: the log's last record, which must be sealed and agree with the anchor."""
    if last is None:
        if anchor is not None:
            raise _refuse(trail, f"the log is missing or empty but its anchor {trail.anchor} has seq {anchor.seq}")
        return None
    record = parse(last[:-1]) if last.endswith(b"\n") else None
    if record is None:
        raise _refuse(trail, "it ends with a damaged record")
    why = seal_problem(last[:-1], record, key)
    if why:
        raise _refuse(trail, f"its last record is {why}")
    head = head_of(record)
    if anchor is None:
        raise _refuse(trail, f"its anchor {trail.anchor} is missing")
    # The anchor one record behind is a run killed between writing the log and the anchor; it catches up now.
    behind_by_one = anchor.seq == head.seq - 1 and record.get("prev") == anchor.mac
    if not (anchor.seq == head.seq and anchor.mac == head.mac) and not behind_by_one:
        raise _refuse(trail, f"its last record (seq {head.seq}) does not match the anchor (seq {anchor.seq})")
    return head


@contextlib.contextmanager
def _locked_log(trail: Trail) -> Iterator[IO[bytes]]:
    _private_dir(trail.log.parent)
    fd = os.open(trail.log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as fh:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fh


def append(trail: Trail, record: dict[str, Any]) -> dict[str, Any]:
    """Seal the record after the log's head, append it and copy the new head to the anchor; safe for concurrent
    writers (one flock covers reading the head, appending and anchoring)."""
    if trail.anchor_dir.absolute() == trail.log.parent.absolute():
        raise InputError(
            Problem(
                "KUMIAI_AUDIT_ANCHOR",
                "",
                f"{trail.anchor_dir} is the log's own directory; the anchor must be "
                "kept apart from the log (by default <state>/anchor, in production the other site's storage)",
            )
        )
    if not trail.log.exists() and trail.anchor.exists():
        raise _refuse(trail, f"the log is missing but its anchor {trail.anchor} exists")
    try:
        sealed = _append(trail, record)
    except OSError as exc:
        raise KumiaiError(f"the audit trail cannot be written ({exc}); a change is never made unrecorded") from None
    if trail.remote is not None:
        head = head_of(sealed)
        try:
            trail.remote.put_head(head.seq, (head.model_dump_json() + "\n").encode())
        except KumiaiError as exc:
            err.print(f"warning: the audit anchor (seq {head.seq}) was not copied: {exc.message}", markup=False)
    return sealed


def _append(trail: Trail, record: dict[str, Any]) -> dict[str, Any]:
    with _locked_log(trail) as fh:
        last = _last_line(fh)
        anchor = read_anchor(trail)
        key = _key_for_append(trail, in_use=last is not None or anchor is not None)
        sealed = seal(record, key, _head_to_follow(trail, last, anchor, key))
        fh.write((canonical(sealed) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())
        _write_anchor(trail, head_of(sealed))
    return sealed


@dataclass
class Verification:
    trail: Trail
    checked: Checked
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.checked.problems

    @property
    def problems(self) -> list[Flaw]:
        return self.checked.problems

    def as_dict(self) -> dict[str, Any]:
        first = self.problems[0] if self.problems else None
        head = self.checked.head
        return {
            "ok": self.ok,
            "records": self.checked.records,
            "head": head.model_dump() if head else None,
            "first_bad": first.as_dict() if first else None,
            "problems": [p.as_dict() for p in self.problems],
            "warnings": self.warnings,
            "log": str(self.trail.log),
            "anchor": str(self.trail.anchor),
            "remote_anchor": self.trail.remote.where if self.trail.remote else None,
            "key": str(self.trail.key),
        }


def _loose_modes(trail: Trail) -> list[str]:
    found = []
    for path, mode in (
        (trail.log, 0o600),
        (trail.log.parent, 0o700),
        (trail.key, 0o600),
        (trail.key.parent, 0o700),
        (trail.anchor, 0o600),
        (trail.anchor_dir, 0o700),
    ):
        with contextlib.suppress(FileNotFoundError):
            actual = path.stat().st_mode & 0o777
            if actual & ~mode:
                found.append(f"{path} is mode {actual:04o}; it should be {mode:04o}")
    return found


def verify(trail: Trail, expected_remote: str | None = None) -> Verification:
    """Check the log against its key and anchor, and against the remote anchor. `expected_remote`: where the
    inventory says the remote anchor is; the check then fails when this machine's settings name no remote anchor
    or another one (deleting or editing the state directory's evidence-store.json must not turn the check off)."""
    problems: list[Flaw] = []
    if expected_remote is not None:
        if trail.remote is None:
            problems.append(
                Flaw(
                    f"the inventory keeps the audit anchor in {expected_remote}, but this machine has no record of "
                    f"that store ({store_file(trail.log.parent.parent)} is missing): the log is not checked "
                    "against it; `kumiai onboard` writes the record again"
                )
            )
        elif trail.remote.where != expected_remote and not isinstance(trail.remote, _Unusable):
            problems.append(
                Flaw(
                    f"this machine reads the audit anchor from {trail.remote.where}, but the inventory keeps it in "
                    f"{expected_remote}; `kumiai onboard` writes the record again"
                )
            )
    key = None
    try:
        key = _read_key(trail)
    except KumiaiError as exc:
        problems.append(Flaw(exc.message))
    data, anchor, anchor_problem = read_log(trail)
    if anchor_problem:
        problems.append(Flaw(anchor_problem))
    if key is None and not problems and (data or anchor is not None):
        problems.append(Flaw(f"the audit key {trail.key} is missing: no record can be checked"))
    checked = check(data, key, anchor)
    problems += checked.problems
    if trail.remote is not None:
        problems += [p for p in _against_remote(trail.remote, data, key) if p not in problems]
    return Verification(trail, Checked(checked.records, checked.head, problems), _loose_modes(trail))


def _against_remote(remote: RemoteAnchor, data: bytes | None, key: bytes | None) -> list[Flaw]:
    """The log against the highest head ever copied to the remote anchor (whatever this machine's anchor says)."""
    where = f"the anchor in {remote.where}"
    try:
        body, tampered = remote.newest_head()
    except KumiaiError as exc:
        return [Flaw(exc.message)]
    problems = [Flaw(f"{where}: {t}") for t in tampered]
    try:
        head = Head.model_validate_json(body) if body is not None else None
    except ValidationError:
        return [*problems, Flaw(f"{where} is damaged: not a head kumiai wrote")]
    if head is None:
        if data:
            problems.append(Flaw(f"{where} holds no head: the newest record cannot be confirmed there"))
        return problems
    without = check(data, key, None).problems  # what is wrong whatever the anchor: reported once, above
    against = [p for p in check(data, key, head).problems if p not in without]
    return problems + [Flaw(f"{where}: {p.message}", p.line, p.seq) for p in against]


def read_log(trail: Trail) -> tuple[bytes | None, Head | None, str | None]:
    """The log's bytes (None if there is none) and its anchor (or why it is unreadable), read together under a
    shared lock, so a record being appended meanwhile is neither half-read nor taken for a gap."""
    with contextlib.ExitStack() as stack:
        data = None
        try:
            fh = stack.enter_context(trail.log.open("rb"))
        except FileNotFoundError:
            pass
        else:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            data = fh.read()
        try:
            return data, read_anchor(trail), None
        except KumiaiError as exc:
            return data, None, exc.message

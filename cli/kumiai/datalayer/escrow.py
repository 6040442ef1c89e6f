"""Escrow of the towns' secrets, so that losing the controller does not lose the DR site's backups.

An escrow file holds every town's vault key and credentials (database passwords, backup cipher key, S3 keys), the
audit log's key (kumiai.audit.trail: without it the log can be neither verified nor continued) and the evidence
store's S3 keys (kumiai.objectstore.evidence: without them the anchor at the other site cannot be read), encrypted
with age (X25519, the pyrage library) to one recipient whose identity is kept offline. The file is JSON: in clear
what it is (consortium, towns, when, recipient), and `age`, the sealed payload. The payload repeats the clear
fields, so a changed header is refused like a changed payload (age authenticates the payload). `recover` puts the
keys and vaults back on a controller: never over different secrets, and a second run changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
from pyrage import x25519

from kumiai.datalayer.secrets import (
    TownSecrets,
    check_private,
    decrypt_town_secrets,
    encrypt_town_secrets,
    load_town_secrets,
    read_key,
    town_key_file,
    write_private,
)
from kumiai.datalayer.topology import Topology
from kumiai.errors import InputError, KumiaiError, Problem

FORMAT = "kumiai-secrets-escrow/1"
HEADER_FIELDS = ("format", "consortium", "towns", "created", "recipient")


@dataclass(frozen=True)
class EscrowHeader:
    """What an escrow file says in clear."""

    consortium: str
    towns: tuple[str, ...]
    created: str
    recipient: str
    format: str = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TownEscrow:
    key: bytes
    secrets: TownSecrets = field(repr=False)


@dataclass(frozen=True)
class Contents:
    """What an escrow file holds, once opened."""

    header: EscrowHeader
    towns: dict[str, TownEscrow]
    audit_key: bytes | None = field(default=None, repr=False)
    evidence_keys: bytes | None = field(default=None, repr=False)  # the evidence store's keys file, as it was


@dataclass
class Recovery:
    """What `recover` did for each town: restored (key and vault), key, vault, or unchanged."""

    towns: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def parse_recipient(value: str) -> x25519.Recipient:
    """An age X25519 recipient (age1...), given as the key itself or as a file holding it."""
    text = value.strip()
    path = Path(text)
    if not text.startswith("age1") and path.is_file():
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        found = [ln for ln in lines if ln.startswith("age1")]
        text = found[0] if found else ""
    try:
        return x25519.Recipient.from_str(text)
    except Exception:  # pyrage.RecipientError: bad Bech32 or not X25519
        raise InputError(
            Problem("--to", value, "an age X25519 public key (age1…), or a file holding one (age-keygen -y)")
        ) from None


def load_identity(path: Path) -> x25519.Identity:
    """The age identity (AGE-SECRET-KEY-1…) in a key file readable by its owner only."""
    if not path.is_file():
        raise InputError(Problem(str(path), "--identity", "no such file: the age identity of the escrow's recipient"))
    check_private(path, "an age identity")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    found = [ln for ln in lines if ln.startswith("AGE-SECRET-KEY-1")]
    try:
        return x25519.Identity.from_str(found[0])
    except Exception:  # no line, or pyrage.IdentityError; never echo the line
        raise InputError(
            Problem(str(path), "--identity", "holds no age X25519 identity (a line AGE-SECRET-KEY-1…)")
        ) from None


def generate_identity(path: Path) -> str:
    """Write a new age identity (0600, the age-keygen format) and return its public key."""
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.now(UTC).isoformat(timespec="seconds")
    write_private(path, f"# created: {created}\n# public key: {public}\n{identity}\n".encode())
    return public


def gather(topology: Topology, town_ids: Sequence[str], keys: Path | None = None) -> dict[str, TownEscrow]:
    """Each town's key and secrets, read (and checked) the way kumiai reads them."""
    gathered = {}
    for town_id in town_ids:
        vault = topology.secrets_file(town_id)
        town_secrets = load_town_secrets(vault, keys)
        gathered[town_id] = TownEscrow(key=read_key(town_key_file(town_id, keys)), secrets=town_secrets)
    return gathered


def read_audit_key(path: Path) -> bytes | None:
    """The audit log's key as stored (hex text), checked like a vault key; None when there is none yet."""
    return read_key(path) if path.exists() else None


def read_private_file(path: Path) -> bytes | None:
    """A secret file's bytes after checking that only its owner can read it; None when there is none."""
    if not path.exists():
        return None
    check_private(path, "a secrets file")
    return path.read_bytes()


def seal(
    header: EscrowHeader,
    towns: Mapping[str, TownEscrow],
    recipient: x25519.Recipient,
    audit_key: bytes | None = None,
    evidence_keys: bytes | None = None,
) -> bytes:
    """The escrow file's content."""
    payload = {
        "header": header.as_dict(),
        "audit_key": audit_key.decode() if audit_key else None,
        "evidence_keys": evidence_keys.decode() if evidence_keys else None,
        "towns": {t: {"key": e.key.decode(), "secrets": asdict(e.secrets)} for t, e in sorted(towns.items())},
    }
    sealed = pyrage.encrypt(json.dumps(payload, sort_keys=True).encode(), [recipient])
    document = {**header.as_dict(), "age": base64.b64encode(sealed).decode()}
    return (json.dumps(document, indent=2) + "\n").encode()


def read_header(data: bytes, source: str) -> EscrowHeader:
    """The clear part of an escrow file (InputError naming the file when it is not one)."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError
        return EscrowHeader(
            consortium=str(doc["consortium"]),
            towns=tuple(str(t) for t in doc["towns"]),
            created=str(doc["created"]),
            recipient=str(doc["recipient"]),
        )
    except (ValueError, KeyError, TypeError):
        raise InputError(
            Problem(source, "format", f"not a kumiai secrets escrow (a JSON document with format {FORMAT})")
        ) from None


def unseal(data: bytes, source: str, identity: x25519.Identity) -> Contents:
    """The towns' keys and secrets of an escrow file; InputError when it was altered or is for another key."""
    header = read_header(data, source)
    try:
        sealed = base64.b64decode(json.loads(data)["age"], validate=True)
        plain = pyrage.decrypt(sealed, [identity])
    except (KeyError, binascii.Error, pyrage.DecryptError) as exc:
        raise InputError(
            Problem(
                source,
                "age",
                f"cannot be decrypted with this identity ({exc or type(exc).__name__}): the file was altered, or "
                f"it was sealed to another recipient (it names {header.recipient})",
            )
        ) from None
    payload = json.loads(plain)
    inner = payload["header"]
    changed = [k for k in HEADER_FIELDS if inner.get(k) != header.as_dict().get(k)]
    if changed or sorted(payload["towns"]) != sorted(header.towns):
        raise InputError(
            Problem(
                source,
                ", ".join(changed) or "towns",
                "differs from the sealed copy inside the file: the file was altered; use another escrow",
            )
        )
    towns = {
        t: TownEscrow(key=v["key"].encode(), secrets=TownSecrets(**v["secrets"])) for t, v in payload["towns"].items()
    }
    audit_key, evidence_keys = payload.get("audit_key"), payload.get("evidence_keys")
    return Contents(
        header=header,
        towns=towns,
        audit_key=audit_key.encode() if audit_key else None,
        evidence_keys=evidence_keys.encode() if evidence_keys else None,
    )


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _conflicts(topology: Topology, town_id: str, escrowed: TownEscrow, keys: Path | None) -> list[Problem]:
    """Why restoring this town would overwrite something different (empty: it may be restored)."""
    key_file, vault = town_key_file(town_id, keys), topology.secrets_file(town_id)
    problems = []
    if key_file.exists() and read_key(key_file) != escrowed.key:
        problems.append(Problem(str(key_file), town_id, "a different key exists here: move it away first"))
    if vault.exists():
        try:
            same = decrypt_town_secrets(vault, vault.read_bytes(), escrowed.key) == escrowed.secrets
        except KumiaiError:
            same = False
        if not same:
            problems.append(
                Problem(str(vault), town_id, "different secrets exist here (or another key's): move them away first")
            )
    return problems


def conflicts(
    topology: Topology,
    contents: Contents,
    known: Sequence[str],
    audit_key_file: Path,
    keys: Path | None = None,
    evidence_keys_file: Path | None = None,
) -> list[Problem]:
    """Why recovering would overwrite something different (empty: it may go ahead)."""
    problems = [p for t, e in sorted(contents.towns.items()) if t in known for p in _conflicts(topology, t, e, keys)]
    if contents.audit_key and audit_key_file.exists() and read_key(audit_key_file) != contents.audit_key:
        problems.append(
            Problem(str(audit_key_file), "audit key", "a different audit key exists here: move it away first")
        )
    if (
        contents.evidence_keys
        and evidence_keys_file is not None
        and read_private_file(evidence_keys_file) not in (None, contents.evidence_keys)
    ):
        problems.append(
            Problem(
                str(evidence_keys_file), "evidence keys", "different evidence store keys exist here: move them away"
            )
        )
    return problems


def recover_audit_key(contents: Contents, audit_key_file: Path) -> str:
    """Put the audit log's key back when it is missing (before anything is recorded: the log needs it)."""
    if contents.audit_key is None:
        return "not in the escrow"
    if audit_key_file.exists():
        if read_key(audit_key_file) != contents.audit_key:
            raise InputError(Problem(str(audit_key_file), "audit key", "a different audit key exists here"))
        return "unchanged"
    write_private(audit_key_file, contents.audit_key + b"\n")
    return "restored"


def recover_evidence_keys(contents: Contents, path: Path) -> str:
    """Put the evidence store's keys back when they are missing."""
    if contents.evidence_keys is None:
        return "not in the escrow"
    existing = read_private_file(path)
    if existing is not None:
        if existing != contents.evidence_keys:
            raise InputError(Problem(str(path), "evidence keys", "different evidence store keys exist here"))
        return "unchanged"
    write_private(path, contents.evidence_keys)
    return "restored"


def recover(
    topology: Topology,
    towns: Mapping[str, TownEscrow],
    known: Sequence[str],
    keys: Path | None = None,
) -> Recovery:
    """Put the escrowed keys and vaults of the `known` towns (those of the inventory) back. Checks every town
    before writing anything; writes only what is missing."""
    recovery = Recovery(skipped=sorted(t for t in towns if t not in known))
    chosen = {t: e for t, e in sorted(towns.items()) if t in known}
    problems = [p for t, e in chosen.items() for p in _conflicts(topology, t, e, keys)]
    if problems:
        raise InputError(problems)
    for town_id, escrowed in chosen.items():
        key_file, vault = town_key_file(town_id, keys), topology.secrets_file(town_id)
        wrote = []
        if not key_file.exists():
            write_private(key_file, escrowed.key + b"\n")
            wrote.append("key")
        if not vault.exists():
            write_private(vault, encrypt_town_secrets(town_id, escrowed.key, escrowed.secrets))
            wrote.append("vault")
        recovery.towns[town_id] = " and ".join(wrote) + " restored" if wrote else "unchanged"
    return recovery

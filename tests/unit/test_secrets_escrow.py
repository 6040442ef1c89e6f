"""Per-town vault keys (refused when others can read them, never made anew over a vault) and the escrow of every
town's key and credentials to an offline age recipient: round trip, tampering, recovery."""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
from pathlib import Path

import pytest
from cli_helpers import LAB, kumiai_in_process, snapshot
from pyrage import x25519

from kumiai.datalayer import escrow
from kumiai.datalayer.secrets import (
    TownSecrets,
    check_town_keys,
    ensure_town_secrets,
    load_town_secrets,
    town_key_file,
    town_secret_files,
    vault_id_args,
)
from kumiai.datalayer.topology import Topology
from kumiai.errors import InputError, KumiaiError
from kumiai.inventory import load_inventory

CONSORTIUM = load_inventory(LAB).consortium.name
AUDIT_KEY = b"ab" * 32
EVIDENCE_KEYS = b'{"access_key": "EVIDENCE0123456789AB", "secret_key": "evidence-secret"}\n'


@pytest.fixture(autouse=True)
def no_state_of_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own state directory: a vault key left by a demo in the checkout must not take part."""
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("KUMIAI_VAULT_KEY_FILE", raising=False)


def topology_at(lab_dir: Path) -> Topology:
    return Topology(dir=lab_dir, sites=(), towns={})


def make_towns(tmp_path: Path, *towns: str) -> tuple[Topology, Path, dict[str, TownSecrets]]:
    topology, keys = topology_at(tmp_path / "lab"), tmp_path / "state" / "secrets"
    return topology, keys, {t: ensure_town_secrets(topology.secrets_file(t), keys) for t in towns}


def sealed(tmp_path: Path, *towns: str) -> tuple[bytes, x25519.Identity, dict[str, TownSecrets]]:
    topology, keys, secrets = make_towns(tmp_path, *towns)
    identity = x25519.Identity.generate()
    header = escrow.EscrowHeader(
        consortium=CONSORTIUM, towns=towns, created="2026-11-27T18:00:00+00:00", recipient=str(identity.to_public())
    )
    data = escrow.seal(header, escrow.gather(topology, towns, keys), identity.to_public(), AUDIT_KEY, EVIDENCE_KEYS)
    return data, identity, secrets


# --- the key files


def test_a_key_file_others_can_read_is_refused_with_its_mode_and_the_fix(tmp_path: Path) -> None:
    topology, keys, secrets = make_towns(tmp_path, "nakai")
    key = town_key_file("nakai", keys)
    vault = topology.secrets_file("nakai")
    key.chmod(0o644)
    before = snapshot(tmp_path)
    for attempt in (
        lambda: load_town_secrets(vault, keys),
        lambda: ensure_town_secrets(vault, keys),
        lambda: vault_id_args(["nakai"], keys),
        lambda: check_town_keys([vault], keys),
    ):
        with pytest.raises(InputError) as refused:
            attempt()
        assert refused.value.exit_code == 2
        assert f"{key}: mode: is 0644" in refused.value.message and f"chmod 600 {key}" in refused.value.message
    assert snapshot(tmp_path) == before
    key.chmod(0o600)  # the positive control: the same key, private again
    assert load_town_secrets(vault, keys) == secrets["nakai"]
    assert vault_id_args(["nakai"], keys) == ["--vault-id", f"nakai@{key}"]


def test_a_missing_key_is_never_made_anew_over_an_existing_vault(tmp_path: Path) -> None:
    topology, keys, _ = make_towns(tmp_path, "nakai")
    town_key_file("nakai", keys).unlink()
    before = snapshot(tmp_path)
    with pytest.raises(KumiaiError, match=r"vault key of nakai .* is missing.*kumiai secrets recover"):
        ensure_town_secrets(topology.secrets_file("nakai"), keys)
    with pytest.raises(KumiaiError, match="kumiai secrets recover"):
        load_town_secrets(topology.secrets_file("nakai"), keys)
    with pytest.raises(KumiaiError, match="kumiai secrets recover"):  # onboarding's check of every town, first
        check_town_keys([topology.secrets_file("oiso"), topology.secrets_file("nakai")], keys)
    assert snapshot(tmp_path) == before
    # A town without a vault gets its key: only then is a new one made.
    ensure_town_secrets(topology.secrets_file("oiso"), keys)
    assert stat.S_IMODE(town_key_file("oiso", keys).stat().st_mode) == 0o600
    assert town_secret_files(topology.secrets_file("oiso"), keys) == (
        topology.secrets_file("oiso"),
        keys / "oiso.key",
    )


def test_a_vault_of_the_one_shared_key_moves_to_the_towns_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    legacy = tmp_path / "vault.key"
    legacy.write_text("the one key\n")
    legacy.chmod(0o600)
    monkeypatch.setenv("KUMIAI_VAULT_KEY_FILE", str(legacy))
    old = TownSecrets("su", "repl", "app", "cipher", "AKIA", "s3secret")
    vault = tmp_path / "nakai.vault.yml"
    plain = json.dumps({"kumiai_town_secrets": old.__dict__}).encode()
    vault.write_bytes(VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(b"the one key"))]).encrypt(plain))
    keys = tmp_path / "keys"
    assert load_town_secrets(vault, keys) == old
    # Moved with every secret kept; a vault written before the etcd and Patroni REST passwords gets them.
    moved = ensure_town_secrets(vault, keys)
    added = {"etcd_password": moved.etcd_password, "patroni_rest_password": moved.patroni_rest_password}
    assert all(added.values()) and moved == dataclasses.replace(old, **added)
    assert vault.read_bytes().startswith(b"$ANSIBLE_VAULT;1.2;AES256;nakai\n")
    legacy.unlink()
    assert load_town_secrets(vault, keys) == moved


# --- the escrow


def test_an_escrow_opens_with_the_identity_and_holds_every_towns_key_and_secrets(tmp_path: Path) -> None:
    data, identity, secrets = sealed(tmp_path, "nakai", "oiso")
    doc = json.loads(data)
    assert {k: doc[k] for k in ("format", "consortium", "towns", "recipient")} == {
        "format": escrow.FORMAT,
        "consortium": CONSORTIUM,
        "towns": ["nakai", "oiso"],
        "recipient": str(identity.to_public()),
    }
    for town in secrets.values():
        assert town.backup_cipher_pass.encode() not in data and town.s3_secret_key.encode() not in data
    contents = escrow.unseal(data, "escrow.json", identity)
    header, towns = contents.header, contents.towns
    assert header.towns == ("nakai", "oiso") and contents.audit_key == AUDIT_KEY
    assert contents.evidence_keys == EVIDENCE_KEYS and b"evidence-secret" not in data
    assert {t: e.secrets for t, e in towns.items()} == secrets
    keys = tmp_path / "state" / "secrets"
    assert {t: e.key for t, e in towns.items()} == {t: (keys / f"{t}.key").read_bytes().strip() for t in secrets}
    with pytest.raises(InputError, match="sealed to another recipient"):
        escrow.unseal(data, "escrow.json", x25519.Identity.generate())


def test_a_tampered_escrow_is_refused(tmp_path: Path) -> None:
    data, identity, _ = sealed(tmp_path, "nakai")
    doc = json.loads(data)
    payload = bytearray(base64.b64decode(doc["age"]))
    payload[-20] ^= 1
    flipped = json.dumps({**doc, "age": base64.b64encode(bytes(payload)).decode()}).encode()
    with pytest.raises(InputError, match=r"escrow.json: age: cannot be decrypted.*altered"):
        escrow.unseal(flipped, "escrow.json", identity)
    for field, value in (("towns", ["nakai", "oiso"]), ("consortium", "another"), ("created", "2020-01-01")):
        relabelled = json.dumps({**doc, field: value}).encode()
        with pytest.raises(InputError, match="the file was altered"):
            escrow.unseal(relabelled, "escrow.json", identity)
    with pytest.raises(InputError, match="not a kumiai secrets escrow"):
        escrow.unseal(b"{not json", "escrow.json", identity)
    assert escrow.unseal(data, "escrow.json", identity).header.towns == ("nakai",)  # the untouched file opens


def test_recover_restores_what_is_missing_refuses_different_secrets_and_runs_again_unchanged(tmp_path: Path) -> None:
    data, identity, secrets = sealed(tmp_path / "old", "nakai", "oiso")
    towns = escrow.unseal(data, "escrow.json", identity).towns
    topology, keys = topology_at(tmp_path / "new" / "lab"), tmp_path / "new" / "state" / "secrets"
    recovery = escrow.recover(topology, towns, ["nakai", "oiso"], keys)
    assert recovery.towns == {"nakai": "key and vault restored", "oiso": "key and vault restored"}
    assert load_town_secrets(topology.secrets_file("oiso"), keys) == secrets["oiso"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE(town_key_file("nakai", keys).stat().st_mode) == 0o600
    again = escrow.recover(topology, towns, ["nakai", "oiso"], keys)
    assert again.towns == {"nakai": "unchanged", "oiso": "unchanged"}

    town_key_file("oiso", keys).unlink()  # only a key lost: only the key comes back
    assert escrow.recover(topology, towns, ["nakai", "oiso"], keys).towns["oiso"] == "key restored"

    # A town re-made since the escrow: refused, and nothing written for any town.
    town_key_file("nakai", keys).unlink()
    topology.secrets_file("nakai").unlink()
    ensure_town_secrets(topology.secrets_file("nakai"), keys)
    town_key_file("oiso", keys).unlink()
    before = snapshot(tmp_path / "new")
    with pytest.raises(InputError) as refused:
        escrow.recover(topology, towns, ["nakai", "oiso"], keys)
    assert "nakai.key: nakai: a different key exists here" in refused.value.message
    assert "nakai.vault.yml: nakai: different secrets exist here" in refused.value.message
    assert snapshot(tmp_path / "new") == before
    # A town no longer in the inventory (offboarded) is not brought back.
    skipped = escrow.recover(topology, towns, ["oiso"], keys)
    assert skipped.skipped == ["nakai"] and skipped.towns == {"oiso": "key restored"}


def test_secrets_recover_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, identity, secrets = sealed(tmp_path / "old", "nakai")
    escrow_file, identity_file = tmp_path / "escrow.json", tmp_path / "identity.txt"
    escrow_file.write_bytes(data)
    identity_file.write_text(f"# an age identity\n{identity}\n")
    identity_file.chmod(0o644)
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KUMIAI_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setenv("KUMIAI_INVENTORY", str(LAB))
    monkeypatch.delenv("KUMIAI_VAULT_KEYS_DIR", raising=False)
    args = ("secrets", "recover", "--from", escrow_file, "--identity", identity_file)
    refused = kumiai_in_process(*args)
    assert refused.code == 2, refused
    assert f"{identity_file}: mode: is 0644" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "state" / "secrets" / "towns").exists()
    identity_file.chmod(0o600)
    done = kumiai_in_process(*args, "--json")
    assert done.code == 0, done
    assert json.loads(done.stdout)["result"] == {"nakai": "key and vault restored"}
    assert json.loads(done.stdout)["audit_key"] == json.loads(done.stdout)["evidence_keys"] == "restored"
    assert (tmp_path / "state" / "secrets" / "audit.key").read_bytes().strip() == AUDIT_KEY
    evidence_keys = tmp_path / "state" / "secrets" / "evidence-s3.json"
    assert evidence_keys.read_bytes() == EVIDENCE_KEYS and evidence_keys.stat().st_mode & 0o777 == 0o600
    again = kumiai_in_process(*args, "--json")
    assert again.code == 0 and json.loads(again.stdout)["audit_key"] == "unchanged", again
    assert json.loads(again.stdout)["evidence_keys"] == "unchanged"
    vault = tmp_path / "lab" / "secrets" / "nakai.vault.yml"
    assert load_town_secrets(vault, tmp_path / "state" / "secrets" / "towns") == secrets["nakai"]
    audit = (tmp_path / "state" / "audit" / "audit.jsonl").read_text(encoding="utf-8")
    assert '"secrets recover"' in audit and secrets["nakai"].backup_cipher_pass not in audit
    assert str(identity) not in audit
    (tmp_path / "state" / "secrets" / "audit.key").write_text("cd" * 32 + "\n")
    before = snapshot(tmp_path / "state" / "secrets")
    other = kumiai_in_process(*args)
    assert other.code == 2 and "audit.key: audit key: a different audit key exists here" in other.stderr, other
    assert snapshot(tmp_path / "state" / "secrets") == before
    (tmp_path / "state" / "secrets" / "audit.key").write_bytes(AUDIT_KEY + b"\n")
    evidence_keys.write_bytes(b'{"access_key": "OTHER", "secret_key": "other"}\n')
    before = snapshot(tmp_path / "state" / "secrets")
    other = kumiai_in_process(*args)
    assert other.code == 2 and "evidence-s3.json: evidence keys: different evidence store keys" in other.stderr, other
    assert snapshot(tmp_path / "state" / "secrets") == before
    escrow_file.write_bytes(data.replace(b'"nakai"', b'"oiso"', 1))
    tampered = kumiai_in_process(*args)
    assert tampered.code == 2 and "the file was altered" in tampered.stderr, tampered

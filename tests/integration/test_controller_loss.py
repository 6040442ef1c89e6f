"""Losing the controller loses no town: an escrow taken beforehand brings back every town's vault key and vault,
and a town is then restored from the DR site's repo with its data intact (on the shared lab, left as found)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, run_playbook
from psycopg2 import sql

from kumiai.datalayer.runner import parse_recap
from kumiai.datalayer.secrets import load_town_secrets
from kumiai.datalayer.topology import group_name
from kumiai.errors import KumiaiError
from support.writer import lab_town, superuser_endpoint

pytestmark = pytest.mark.integration

TOWN = "manazuru"
MARKER_TABLE = "escrow_check"


def audit_ends(lab: Lab, operation: str) -> list[dict[str, Any]]:
    lines = (lab.state_dir / "audit" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if r.get("event") == "end" and r.get("operation") == operation]


def test_after_losing_the_controllers_secrets_an_escrow_restores_a_town_from_the_dr_repo(
    lab: Lab, tmp_path: Path
) -> None:
    town, secrets = lab_town(lab.inventory, lab.lab_dir, lab.vault_keys, TOWN)
    su = superuser_endpoint(town, secrets)
    marker = f"written before the controller was lost ({tmp_path.name})"
    conn = su.connect()
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (note text NOT NULL)").format(sql.Identifier(MARKER_TABLE)))
        cur.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(MARKER_TABLE)), (marker,))
    conn.close()

    # What the controller holds of secrets: the state directory's secrets/ (the towns' vault keys, the audit key,
    # the evidence store's S3 keys) and the towns' vaults.
    keys, vaults = lab.state_dir / "secrets", lab.lab_dir / "secrets"
    kept = tmp_path / "kept"  # the lab's own secrets, put back if the test fails before recovering them
    shutil.copytree(keys, kept / "keys")
    shutil.copytree(vaults, kept / "vaults")
    recovered = False
    try:
        identity = tmp_path / "offline" / "escrow-identity.txt"
        keygen = lab.kumiai("secrets", "keygen", "--out", str(identity), timeout=60)
        assert keygen.code == 0, keygen
        public = keygen.stdout.strip()
        assert public.startswith("age1") and identity.stat().st_mode & 0o077 == 0

        escrow_file = tmp_path / "dr-site" / "escrow.json"
        escrow = lab.kumiai("secrets", "escrow", "--to", public, "--out", str(escrow_file), "--json", timeout=120)
        assert escrow.code == 0, escrow
        header = json.loads(escrow_file.read_text(encoding="utf-8"))
        assert header["towns"] == ["kiyokawa", "manazuru", "nakai"] and header["recipient"] == public
        assert secrets.backup_cipher_pass not in escrow_file.read_text(encoding="utf-8")

        # The controller is lost: every key and every town's vault are gone.
        shutil.rmtree(keys)
        shutil.rmtree(vaults)
        with pytest.raises(KumiaiError, match="no credentials for this town"):
            load_town_secrets(vaults / f"{TOWN}.vault.yml", lab.vault_keys)
        repo = town.repo(town.dr_site).number
        refused = lab.kumiai("drill", "--town", TOWN, "--repo", str(repo), "--json", timeout=300)
        assert refused.code == 1 and "audit key" in refused.stderr and "restore the key" in refused.stderr, refused

        recover = lab.kumiai("secrets", "recover", "--from", str(escrow_file), "--identity", str(identity), "--json")
        assert recover.code == 0, recover
        assert json.loads(recover.stdout)["result"] == dict.fromkeys(header["towns"], "key and vault restored")
        assert json.loads(recover.stdout)["audit_key"] == "restored"
        assert json.loads(recover.stdout)["evidence_keys"] == "restored"  # the DR site's anchor is read again
        recovered = True
        again = lab.kumiai("secrets", "recover", "--from", str(escrow_file), "--identity", str(identity), "--json")
        assert again.code == 0 and json.loads(again.stdout)["result"] == dict.fromkeys(header["towns"], "unchanged")
        assert load_town_secrets(vaults / f"{TOWN}.vault.yml", lab.vault_keys) == secrets
        for key in lab.vault_keys.iterdir():
            assert key.stat().st_mode & 0o777 == 0o600, key
        assert lab.vault_keys.stat().st_mode & 0o777 == 0o700 and keys.stat().st_mode & 0o777 == 0o700

        # The DR site's repo restores with the recovered credentials, the marker row in the copy.
        run = lab.kumiai("drill", "--town", TOWN, "--repo", str(repo), "--json", timeout=900)
        assert run.code == 0, run
        evidence = json.loads(run.stdout)["towns"][0]
        assert evidence["verdict"] == "pass" and evidence["repo_site"] == town.dr_site
        checks = {t["table"]: t for t in evidence["comparison"]["tables"]}
        marker_check = checks[f"public.{MARKER_TABLE}"]
        assert marker_check["rows_recovered"] == marker_check["rows_primary"] == 1
        assert marker_check["checksum_recovered"] == marker_check["checksum_primary"]

        # The recovered vaults hold what the members run with: converging the town changes nothing.
        converge = run_playbook(lab, "onboard_town.yml", "--limit", f"town_{group_name(TOWN)}")
        assert converge.returncode == 0, converge.stdout[-3000:]
        recap = parse_recap(converge.stdout)
        assert len(recap) == 4 and sum(h.changed for h in recap.values()) == 0, converge.stdout[-3000:]

        # Both recorded in the audit trail, without a secret.
        assert audit_ends(lab, "secrets escrow")[-1]["target"]["towns"] == header["towns"]
        assert audit_ends(lab, "secrets recover")[-1]["result"] == "ok"
        verified = lab.kumiai("audit", "verify", "--json", timeout=120)
        assert verified.code == 0, verified  # the recovered audit key continues the same chain
        assert json.loads(verified.stdout)["remote_anchor"], verified  # checked against the DR site's anchor too
        log = (lab.state_dir / "audit" / "audit.jsonl").read_text(encoding="utf-8")
        key_text = (lab.vault_keys / f"{TOWN}.key").read_text(encoding="utf-8").strip()
        assert secrets.backup_cipher_pass not in log and key_text not in log
    finally:
        if not recovered:
            for copy, where in ((kept / "keys", keys), (kept / "vaults", vaults)):
                shutil.rmtree(where, ignore_errors=True)
                shutil.copytree(copy, where)
        conn = su.connect()
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(MARKER_TABLE)))
        conn.close()

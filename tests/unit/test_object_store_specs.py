"""Object stores without a store: the towns' bucket specs, the lab's endpoints and certificates, the derived
inventory's S3 repos, and S3 keys added to an older vault."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import botocore.exceptions
import pytest
from cryptography import x509

from kumiai.commands.recover import parse_moment
from kumiai.datalayer.ansible_inventory import build_inventory
from kumiai.datalayer.secrets import TownSecrets, encrypt_town_secrets, ensure_town_secrets, load_town_secrets
from kumiai.errors import InputError
from kumiai.inventory import Inventory, load_inventory
from kumiai.lab.layout import build_layout
from kumiai.objectstore.lab import certificate, ensure_lab_certificates
from kumiai.objectstore.recover import Entry, Step, plan_recovery
from kumiai.objectstore.s3 import BucketSpec, town_user, weaker_than
from kumiai.pki import ensure_ca, ensure_server_cert
from support.lab_inventory import posix_lab_inventory, s3_lab_inventory

ROOT = Path(__file__).resolve().parents[2]


def s3_inventory(tmp_path: Path, **consortium: object) -> Inventory:
    return load_inventory(s3_lab_inventory(tmp_path / "inv", **consortium))


# --- buckets


def test_a_towns_bucket_policy_names_only_its_user_and_its_bucket() -> None:
    spec = BucketSpec(name="lab-site-a-nakai", town_user=town_user("nakai"), lock_mode="COMPLIANCE", retention_days=30)
    statements = spec.policy()["Statement"]
    assert {p for s in statements for p in s["Principal"]["AWS"]} == {"arn:aws:iam:::user/kumiai-town-nakai"}
    assert {r for s in statements for r in s["Resource"]} == {
        "arn:aws:s3:::lab-site-a-nakai",
        "arn:aws:s3:::lab-site-a-nakai/*",
    }
    actions = {a for s in statements for a in s["Action"]}
    # Nothing that weakens the bucket or skips a lock.
    for forbidden in (
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutBucketVersioning",
        "s3:BypassGovernanceRetention",
        "s3:PutBucketPolicy",
        "s3:DeleteBucket",
        "s3:PutLifecycleConfiguration",
    ):
        assert forbidden not in actions
    assert all(s["Effect"] == "Allow" for s in statements)


@pytest.mark.parametrize("mode", ["COMPLIANCE", "GOVERNANCE"])
def test_the_default_retention_is_the_towns_immutable_days(mode: str) -> None:
    spec = BucketSpec(name="b-town", town_user="u", lock_mode=mode, retention_days=12)
    assert spec.lock_configuration() == {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": mode, "Days": 12}},
    }
    (rule,) = spec.lifecycle_rules()
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 12}
    assert rule["Status"] == "Enabled"


def test_no_immutable_days_keeps_the_lock_without_a_default_retention() -> None:
    spec = BucketSpec(name="b-town", town_user="u", lock_mode="COMPLIANCE", retention_days=0)
    assert spec.lock_configuration() == {"ObjectLockEnabled": "Enabled"}
    # S3 refuses a noncurrent expiration of 0 days.
    assert spec.lifecycle_rules()[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}


# --- the lab's endpoints and the derived inventory


def test_s3_sites_give_each_town_a_bucket_per_site(tmp_path: Path) -> None:
    inv = s3_inventory(tmp_path, object_lock_mode="GOVERNANCE")
    topology = build_layout(tmp_path / "lab", inv, {"nakai": 0, "kiyokawa": 1})
    store_a = topology.site("site-a").object_store
    assert store_a is not None
    assert (store_a.host, store_a.port, store_a.lock_mode) == ("127.0.1.3", 7443, "GOVERNANCE")
    assert store_a.run_dir == tmp_path / "lab" / "site-a" / "objectstore"
    buckets = {(t.id, r.number): r.bucket for t in topology.towns.values() for r in t.repos}
    assert buckets == {
        ("nakai", 1): "lab-site-a-nakai",
        ("nakai", 2): "lab-site-b-nakai",
        ("kiyokawa", 1): "lab-site-a-kiyokawa",
        ("kiyokawa", 2): "lab-site-b-kiyokawa",
    }

    data = build_inventory(inv, topology, bin_dir=Path("/b"), python=Path("/b/python"))
    hostvars = data["_meta"]["hostvars"]
    assert hostvars["site-b"]["kumiai_storage_type"] == "s3"
    assert hostvars["site-b"]["kumiai_object_store"]["address"] == "127.0.2.3"
    repo2 = next(r for r in hostvars["nakai-site-a-1"]["kumiai_repos"] if r["number"] == 2)
    assert repo2 == {
        "number": 2,
        "site": "site-b",
        "type": "s3",
        "path": "/pgbackrest",
        "bucket": "lab-site-b-nakai",
        "endpoint": "127.0.2.3",
        "port": 7443,
        "region": "default",
        "ca_file": str(tmp_path / "lab" / "ca" / "ca.crt"),
    }


def test_posix_sites_keep_posix_repos(tmp_path: Path) -> None:
    inv = load_inventory(posix_lab_inventory(tmp_path / "inv"))
    topology = build_layout(tmp_path, inv, {"nakai": 0})
    assert all(s.object_store is None for s in topology.sites)
    data = build_inventory(inv, topology, bin_dir=Path("/b"), python=Path("/b/python"))
    assert "kumiai_object_store" not in data["_meta"]["hostvars"]["site-a"]
    assert {r["type"] for r in data["_meta"]["hostvars"]["nakai-site-a-1"]["kumiai_repos"]} == {"posix"}


def test_a_lab_endpoint_outside_the_sites_network_is_refused(tmp_path: Path) -> None:
    root = s3_lab_inventory(tmp_path / "inv")
    consortium = root / "consortium.yaml"
    text = consortium.read_text(encoding="utf-8")
    consortium.write_text(text.replace("https://127.0.2.3:7443", "https://127.0.1.3:7443"), encoding="utf-8")
    inv = load_inventory(root)  # site-b's store on site-a's network
    with pytest.raises(InputError) as caught:
        build_layout(tmp_path / "lab", inv, {})
    (problem,) = caught.value.problems
    assert problem.file.endswith("consortium.yaml")
    assert problem.field == "sites[1].object_storage.endpoint"
    assert "127.0.2.0/24" in problem.message


# --- certificates


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_lab_certificates_name_the_address_and_chain_to_the_lab_ca(tmp_path: Path) -> None:
    topology = build_layout(tmp_path / "lab", s3_inventory(tmp_path), {})
    ensure_lab_certificates(topology)
    for site in topology.sites:
        assert site.object_store is not None and site.object_store.ca_file is not None
        cert_file, key_file = certificate(site.object_store)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        ca = x509.load_pem_x509_certificate(site.object_store.ca_file.read_bytes())
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        # pgBackRest matches an address against DNS names only, boto3 against IP addresses.
        assert san.get_values_for_type(x509.DNSName) == [site.object_store.host]
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == [site.object_store.host]
        assert _mode(key_file) == 0o600
    assert _mode(tmp_path / "lab" / "ca" / "ca.key") == 0o600


def test_certificates_are_kept_while_good_and_reissued_when_not(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path / "ca", "test CA")
    server = ensure_server_cert(ca, tmp_path / "srv", "127.0.9.3")
    first = server.cert.read_bytes()
    assert ensure_ca(tmp_path / "ca", "test CA").cert.read_bytes() == ca.cert.read_bytes()
    assert ensure_server_cert(ca, tmp_path / "srv", "127.0.9.3").cert.read_bytes() == first

    moved = ensure_server_cert(ca, tmp_path / "srv", "127.0.9.4")
    assert moved.cert.read_bytes() != first

    # A new CA of the same name (its key was lost): the old certificate no longer chains, so it is replaced.
    (tmp_path / "ca" / "ca.key").unlink()
    new_ca = ensure_ca(tmp_path / "ca", "test CA")
    reissued = x509.load_pem_x509_certificate(
        ensure_server_cert(new_ca, tmp_path / "srv", "127.0.9.4").cert.read_bytes()
    )
    reissued.verify_directly_issued_by(x509.load_pem_x509_certificate(new_ca.cert.read_bytes()))
    assert reissued.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)


# --- the town's S3 keys


def test_a_vault_written_before_s3_keys_gets_them_and_keeps_the_rest(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    path = tmp_path / "nakai.vault.yml"
    old = {
        "superuser_password": "su-pass",
        "replication_password": "repl-pass",
        "app_password": "app-pass",
        "backup_cipher_pass": "cipher-pass",
    }
    keys.mkdir(mode=0o700)
    (keys / "nakai.key").write_bytes(b"the town's key\n")
    (keys / "nakai.key").chmod(0o600)
    path.write_bytes(encrypt_town_secrets("nakai", b"the town's key", TownSecrets(**old)))
    secrets = ensure_town_secrets(path, keys)
    assert len(secrets.s3_access_key) == 20 and secrets.s3_access_key.isalnum()
    assert len(secrets.s3_secret_key) >= 40
    stored = load_town_secrets(path, keys)
    assert stored == secrets
    assert {k: getattr(stored, k) for k in old} == old
    assert ensure_town_secrets(path, keys) == stored  # generated once
    assert b"su-pass" not in path.read_bytes()


# --- recovery to a moment


def _at(minute: int) -> datetime.datetime:
    return datetime.datetime(2026, 11, 27, 9, minute, tzinfo=datetime.UTC)


def _history(key: str, *events: tuple[int, str, bool]) -> list[Entry]:
    """(minute, version id, delete marker?) oldest first; the last one is the key's current entry."""
    return [Entry(key, vid, _at(m), marker, i == len(events) - 1) for i, (m, vid, marker) in enumerate(events)]


def test_recovery_undoes_deletions_overwrites_and_later_objects() -> None:
    entries = [
        *_history("kept", (1, "k1", False)),
        *_history("deleted", (1, "d1", False), (20, "dm", True)),
        *_history("overwritten", (1, "o1", False), (5, "o2", False), (20, "o3", False)),
        *_history("overwritten-then-deleted", (1, "x1", False), (20, "x2", False), (21, "xm", True)),
        *_history("planted", (20, "p1", False)),
        *_history("gone-before", (1, "g1", False), (2, "gm", True), (20, "g2", False)),
        *_history("deleted-since-long", (1, "l1", False), (2, "lm", True)),
    ]
    recovery = plan_recovery("b", entries, _at(10))
    assert {s.key: s for s in recovery.steps} == {
        "deleted": Step("unmark", "deleted", markers=("dm",)),
        "overwritten": Step("restore", "overwritten", version_id="o2"),
        "overwritten-then-deleted": Step("restore", "overwritten-then-deleted", version_id="x1"),
        "planted": Step("hide", "planted"),
        "gone-before": Step("hide", "gone-before"),
    }
    assert recovery.counts() == {"restore": 2, "unmark": 1, "hide": 2, "unchanged": 2}


def test_an_entry_written_at_the_moment_itself_counts() -> None:
    entries = _history("k", (1, "v1", False), (10, "v2", False), (11, "v3", False))
    (step,) = plan_recovery("b", entries, _at(10)).steps
    assert step == Step("restore", "k", version_id="v2")
    assert plan_recovery("b", entries, _at(11)).steps == []


def test_recovery_needs_a_moment_with_its_offset() -> None:
    assert parse_moment("2026-11-27T09:30:00+09:00") == _at(30) + datetime.timedelta(hours=-9)
    assert parse_moment("2026-11-27T00:30:00Z") == _at(30) - datetime.timedelta(hours=9)
    for bad in ("2026-11-27T09:30:00", "yesterday", ""):
        with pytest.raises(InputError) as caught:
            parse_moment(bad)
        assert caught.value.problems[0].file == "--as-of"


class _Bucket:
    """The two reads `weaker_than` makes, answered as a store would."""

    def __init__(self, versioning: str | None, lock: dict[str, object] | None) -> None:
        self.versioning, self.lock = versioning, lock

    def get_bucket_versioning(self, Bucket: str) -> dict[str, object]:
        return {"Status": self.versioning} if self.versioning else {}

    def get_object_lock_configuration(self, Bucket: str) -> dict[str, object]:
        if self.lock is None:
            error = {"Error": {"Code": "ObjectLockConfigurationNotFoundError", "Message": ""}}
            raise botocore.exceptions.ClientError(error, "GetObjectLockConfiguration")
        return {"ObjectLockConfiguration": self.lock}


def _lock(mode: str, days: int) -> dict[str, object]:
    return {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}}}


def test_verify_names_every_way_a_bucket_protects_less_than_asked() -> None:
    spec = BucketSpec(name="b-town", town_user="u", lock_mode="COMPLIANCE", retention_days=30)
    assert weaker_than(_Bucket("Enabled", _lock("COMPLIANCE", 30)), spec) == []
    assert weaker_than(_Bucket("Enabled", _lock("COMPLIANCE", 45)), spec) == []
    assert weaker_than(_Bucket("Suspended", _lock("COMPLIANCE", 30)), spec) == ["versioning is not enabled"]
    assert weaker_than(_Bucket("Enabled", None), spec) == ["object lock is not enabled"]
    assert weaker_than(_Bucket("Enabled", _lock("GOVERNANCE", 7)), spec) == [
        "default retention 7 days, less than 30",
        "lock mode GOVERNANCE, not COMPLIANCE",
    ]
    governance = BucketSpec(name="b-town", town_user="u", lock_mode="GOVERNANCE", retention_days=30)
    assert weaker_than(_Bucket("Enabled", _lock("COMPLIANCE", 30)), governance) == []


def test_client_certificates_name_their_identity_and_rotate_when_forced(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from kumiai.pki import ensure_cert

    ca = ensure_ca(tmp_path / "ca", "test CA")
    files = ensure_cert(ca, tmp_path / "c", "replicator", common_name="nakai-site-a-1", client=True)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "nakai-site-a-1"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert files.key.stat().st_mode & 0o777 == 0o600
    first = files.cert.read_bytes()
    assert (
        ensure_cert(ca, tmp_path / "c", "replicator", common_name="nakai-site-a-1", client=True).cert.read_bytes()
        == first
    )
    renamed = ensure_cert(ca, tmp_path / "c", "replicator", common_name="nakai-site-a-2", client=True)
    assert renamed.cert.read_bytes() != first
    again = renamed.cert.read_bytes()
    forced = ensure_cert(ca, tmp_path / "c", "replicator", common_name="nakai-site-a-2", client=True, force=True)
    assert forced.cert.read_bytes() != again

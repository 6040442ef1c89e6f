"""The etcd identities and certificates kumiai derives and issues: names, key prefixes, who gets which file. Pure
apart from writing certificates into a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kumiai.datalayer.ansible_inventory import build_inventory
from kumiai.datalayer.etcd import ensure_etcd_certificates, etcd_pki, namespace, range_end, town_prefix, town_user
from kumiai.inventory import load_inventory
from kumiai.lab.layout import build_layout

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "inventories" / "lab"


def test_town_prefix_is_patronis_namespace_and_scope_with_a_slash() -> None:
    assert town_prefix("site-a", "nakai") == "/kumiai/site-a/nakai/"
    # A town whose id starts another's never reaches the other's keys.
    naka, nakai = town_prefix("site-a", "naka"), "/kumiai/site-a/nakai/leader"
    assert not nakai.startswith(naka)
    assert range_end(naka) == "/kumiai/site-a/naka0"
    assert not naka <= nakai < range_end(naka)
    assert naka <= naka + "leader" < range_end(naka)


def test_range_end_refuses_what_has_no_end() -> None:
    with pytest.raises(ValueError):
        range_end("")


def test_user_names_are_per_town() -> None:
    assert town_user("nakai") == "kumiai-town-nakai"
    assert town_user("nakai") != town_user("kiyokawa")


def test_patroni_namespace_comes_from_the_derivation() -> None:
    """The playbooks take Patroni's namespace from the inventory, so the roles' prefixes and Patroni's keys agree."""
    member_vars = yaml.safe_load((ROOT / "playbooks" / "vars" / "town_member.yml").read_text(encoding="utf-8"))
    assert member_vars["patroni_cluster_namespace"] == "{{ kumiai_etcd_namespace }}"
    assert namespace("site-b") == "/kumiai/site-b/"


def test_inventory_hands_each_town_its_identity_and_the_sites_their_certificates(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    layout = build_layout(tmp_path, inv, {"nakai": 0})
    data = build_inventory(inv, layout, bin_dir=Path("/venv/bin"), python=Path("/venv/bin/python"))
    hv = data["_meta"]["hostvars"]
    pki = etcd_pki(layout)
    standby = hv["nakai-site-b-2"]
    assert standby["kumiai_etcd_user"] == "kumiai-town-nakai"
    assert standby["kumiai_etcd_prefix"] == "/kumiai/site-b/nakai/"
    assert standby["kumiai_etcd_namespace"] == "/kumiai/site-b/"
    assert standby["kumiai_etcd_client_cert"] == str(pki.town("nakai").cert)
    assert hv["nakai-site-a-1"]["kumiai_etcd_prefix"] == "/kumiai/site-a/nakai/"
    assert hv["site-a"]["kumiai_etcd_cert_file"] == str(pki.site("site-a").cert)
    assert hv["site-a"]["kumiai_etcd_tls_dir"] == str(tmp_path / "site-a" / "etcd-tls")
    assert data["all"]["vars"]["kumiai_etcd_root_cert"] == str(pki.root.cert)
    # Root's identity is not handed to any host: members and sites get their own files only.
    assert not any("root" in k for h in hv.values() for k in h)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certificates_name_root_only_and_rotate_when_forced(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    layout = build_layout(tmp_path, inv, {"nakai": 0})
    pki = etcd_pki(layout)
    ensure_etcd_certificates(layout)
    root = _cert(pki.root.cert)
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "root"
    # etcd 3.4's JSON gateway refuses a certificate naming a user: members and towns name none.
    member, town = _cert(pki.site("site-a").cert), _cert(pki.town("nakai").cert)
    assert list(member.subject) == list(town.subject) == []
    san = member.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.1.1"]
    usages = set(member.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    for files in (pki.root, pki.site("site-b"), pki.town("nakai")):
        assert files.key.stat().st_mode & 0o777 == 0o600
    # Kept while valid; all reissued when forced (kumiai certs rotate).
    ensure_etcd_certificates(layout)
    assert _cert(pki.root.cert).serial_number == root.serial_number
    ensure_etcd_certificates(layout, force=True)
    assert _cert(pki.root.cert).serial_number != root.serial_number
    assert _cert(pki.town("nakai").cert).serial_number != town.serial_number

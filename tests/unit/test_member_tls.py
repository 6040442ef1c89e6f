"""The pure parts of TLS on the PostgreSQL and Patroni channels: the members' certificates (who they name), the
Patroni configuration the role renders (pg_hba, REST API, the members' logins) and the roles made at bootstrap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from cryptography import x509
from cryptography.x509.oid import NameOID

from kumiai.datalayer.certs import ensure_town_certificates, member_dir, serial
from kumiai.datalayer.topology import SUPERUSER
from kumiai.inventory import load_inventory
from kumiai.lab.layout import build_layout

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "roles" / "patroni_cluster" / "templates"
MEMBERS = ["nakai-site-a-1", "nakai-site-a-2", "nakai-site-b-1", "nakai-site-b-2"]


def role_vars(**changes: Any) -> dict[str, Any]:
    defaults = yaml.safe_load((ROOT / "roles" / "patroni_cluster" / "defaults" / "main.yml").read_text())
    return {
        **defaults,
        "ansible_managed": "managed by kumiai",
        "inventory_hostname": "nakai-site-a-1",
        "patroni_cluster_scope": "nakai",
        "patroni_cluster_member_name": "nakai-site-a-1",
        "patroni_cluster_member_dir": "/var/lib/kumiai/nakai/member1",
        "patroni_cluster_tls_dir": "/var/lib/kumiai/nakai/member1/tls",
        "patroni_cluster_dcs_hosts": ["127.0.1.1:2379"],
        "patroni_cluster_superuser_password": "su-pw",
        "patroni_cluster_replication_password": "repl-pw",
        "patroni_cluster_rest_password": "rest-pw",
        "patroni_cluster_database": "nakai",
        "patroni_cluster_app_user": "nakai_app",
        "patroni_cluster_user": "kumiai-nakai",
        "patroni_cluster_app_password": "app'pw",
        "patroni_cluster_member_roles": MEMBERS,
        **changes,
    }


def render(template: str, variables: dict[str, Any]) -> str:
    templar = Templar(loader=DataLoader(), variables=variables)
    text = trust_as_template((TEMPLATES / template).read_text(encoding="utf-8"))
    return str(
        templar.template(text, escape_backslashes=False, overrides={"trim_blocks": True, "lstrip_blocks": False})
    )


def test_postgres_accepts_only_tls_and_scram_and_members_and_superuser_only_with_certificates() -> None:
    config = yaml.safe_load(render("patroni.yml.j2", role_vars()))
    hba = config["postgresql"]["pg_hba"]
    members = ",".join(MEMBERS)
    assert hba == [
        "local all postgres peer map=kumiai",
        "hostnossl all all 127.0.0.0/8 reject",
        f"hostssl replication {members} 127.0.0.0/8 scram-sha-256 clientcert=verify-full",
        f"hostssl postgres {members} 127.0.0.0/8 scram-sha-256 clientcert=verify-full",
        "hostssl all postgres 127.0.0.0/8 scram-sha-256 clientcert=verify-full",
        "hostssl nakai nakai_app 127.0.0.0/8 scram-sha-256",
    ]
    # Over the socket: only the town's own OS user, as the superuser.
    assert config["postgresql"]["pg_ident"] == ["kumiai kumiai-nakai postgres"]
    assert all(" trust" not in line and " md5" not in line for line in hba)
    params = config["postgresql"]["parameters"]
    tls = "/var/lib/kumiai/nakai/member1/tls"
    assert params["ssl"] == "on" and params["ssl_cert_file"] == f"{tls}/server.crt"
    assert params["ssl_ca_file"] == f"{tls}/ca.crt"


def test_a_member_logs_in_as_itself_with_its_certificate_verifying_the_other_member() -> None:
    config = yaml.safe_load(render("patroni.yml.j2", role_vars()))
    tls = "/var/lib/kumiai/nakai/member1/tls"
    login = {
        "username": "nakai-site-a-1",
        "password": "repl-pw",
        "sslmode": "verify-full",
        "sslrootcert": f"{tls}/ca.crt",
        "sslcert": f"{tls}/client.crt",
        "sslkey": f"{tls}/client.key",
    }
    auth = config["postgresql"]["authentication"]
    assert auth["replication"] == login and auth["rewind"] == login
    assert auth["superuser"]["username"] == SUPERUSER  # local socket only (peer)


def test_the_rest_api_is_https_with_authentication_and_patronictl_verifies_it() -> None:
    config = yaml.safe_load(render("patroni.yml.j2", role_vars()))
    tls = "/var/lib/kumiai/nakai/member1/tls"
    rest = config["restapi"]
    assert (rest["certfile"], rest["keyfile"], rest["cafile"]) == (
        f"{tls}/server.crt",
        f"{tls}/server.key",
        f"{tls}/ca.crt",
    )
    assert rest["authentication"] == {"username": "kumiai", "password": "rest-pw"}
    assert config["ctl"] == {"insecure": False, "cacert": f"{tls}/ca.crt", "authentication": rest["authentication"]}
    assert config["bootstrap"]["post_bootstrap"] == "/var/lib/kumiai/nakai/member1/post_bootstrap.sh"


def test_bootstrap_creates_every_members_role_and_quotes_passwords() -> None:
    sql = render("post_bootstrap.sql.j2", role_vars())
    for name in MEMBERS:
        assert f"ALTER ROLE \"{name}\" WITH LOGIN REPLICATION PASSWORD 'repl-pw';" in sql
        assert f'pg_read_binary_file(text, bigint, bigint, boolean) TO "{name}";' in sql
    assert "PASSWORD 'app''pw'" in sql


def test_certificates_name_the_member_its_address_and_the_controller(tmp_path: Path) -> None:
    topology = build_layout(tmp_path, load_inventory(ROOT / "inventories" / "lab"), {"nakai": 0})
    issued = ensure_town_certificates(topology, ["nakai"])
    assert len(issued) == 1 + 2 * len(topology.towns["nakai"].members)
    member = topology.towns["nakai"].members[0]
    directory = member_dir(topology, member)
    client = x509.load_pem_x509_certificate((directory / "client.crt").read_bytes())
    server = x509.load_pem_x509_certificate((directory / "server.crt").read_bytes())
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == member.name
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [member.address]
    controller = x509.load_pem_x509_certificate((tmp_path / "pki" / "controller" / "client.crt").read_bytes())
    assert controller.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SUPERUSER
    assert (directory / "client.key").stat().st_mode & 0o777 == 0o600
    # Kept while valid; forced: every serial changes.
    again = ensure_town_certificates(topology, ["nakai"])
    assert [serial(f.cert) for f in again] == [serial(f.cert) for f in issued]
    before = [serial(f.cert) for f in issued]
    forced = ensure_town_certificates(topology, ["nakai"], force=True)
    assert all(a != b for a, b in zip(before, [serial(f.cert) for f in forced], strict=True))

"""The certificates of PostgreSQL and Patroni's REST API, issued on the controller by kumiai (kumiai.pki).

Per member, in `<pki dir>/members/<member>/` (the patroni_cluster role copies them to the member's host):
- server.crt/key: the member's address (PostgreSQL `ssl=on` and Patroni's REST API over HTTPS);
- client.crt/key: CN = the member's name. The member logs in with it as its own role, which has the same name
  (replication, pg_basebackup and pg_rewind): PostgreSQL 15 checks the CN of a `scram-sha-256
  clientcert=verify-full` line against the role itself (a `map=` is allowed only with `cert`, `ident` and `peer`),
  so the role carries the member's name and the certificate must name the member.
For kumiai itself, `<pki dir>/controller/client.crt/key` with CN = the superuser (postgres): the status, failover
and drill connections kumiai makes as the town's superuser (its password as well, scram-sha-256).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from kumiai.datalayer.topology import SUPERUSER, ControllerTLS, MemberLayout, Topology
from kumiai.pki import CertFiles, ensure_ca, ensure_cert

CA_NAME = "kumiai lab CA"


def controller_tls(ca_dir: Path, pki_dir: Path) -> ControllerTLS:
    """Where the controller's CA and client certificate are (paths only)."""
    controller = pki_dir / "controller"
    return ControllerTLS(ca_file=ca_dir / "ca.crt", cert=controller / "client.crt", key=controller / "client.key")


def member_dir(topology: Topology, member: MemberLayout) -> Path:
    return topology.pki_dir / "members" / member.name


def ensure_member_certificates(topology: Topology, member: MemberLayout, *, force: bool = False) -> list[CertFiles]:
    """The member's server and client certificates (kept while valid and still naming it, unless forced)."""
    ca = ensure_ca(topology.ca_dir, CA_NAME)
    directory = member_dir(topology, member)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    return [
        ensure_cert(
            ca, directory, "server", common_name=member.address, addresses=[member.address], server=True, force=force
        ),
        ensure_cert(ca, directory, "client", common_name=member.name, client=True, force=force),
    ]


def ensure_controller_certificate(topology: Topology, *, force: bool = False) -> CertFiles:
    ca = ensure_ca(topology.ca_dir, CA_NAME)
    tls = controller_tls(topology.ca_dir, topology.pki_dir)
    tls.cert.parent.mkdir(parents=True, exist_ok=True)
    tls.cert.parent.chmod(0o700)
    return ensure_cert(ca, tls.cert.parent, "client", common_name=SUPERUSER, client=True, force=force)


def ensure_town_certificates(topology: Topology, town_ids: Sequence[str], *, force: bool = False) -> list[CertFiles]:
    """Every certificate the towns' members and the controller need, before a playbook installs them."""
    issued = [ensure_controller_certificate(topology, force=force)]
    for tid in town_ids:
        for member in topology.towns[tid].members:
            issued += ensure_member_certificates(topology, member, force=force)
    return issued


def serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def member_tls_vars(topology: Topology, member: MemberLayout) -> dict[str, str]:
    """The role's inputs: certificates on the controller (sources) and where the host keeps them."""
    source = member_dir(topology, member)
    return {
        "ca_source": str(topology.ca_dir / "ca.crt"),
        "server_cert_source": str(source / "server.crt"),
        "server_key_source": str(source / "server.key"),
        "client_cert_source": str(source / "client.crt"),
        "client_key_source": str(source / "client.key"),
        "dir": str(member.tls_dir),
    }

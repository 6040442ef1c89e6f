"""Each site's etcd: its certificates and the etcd identities of the towns (which keys each may reach).

Every site's etcd serves clients and peers over TLS only and refuses a connection without a client certificate
signed by the consortium CA (`--client-cert-auth`, `--peer-client-cert-auth`). Authentication is on:
- root: a client certificate with CN=root kept on the controller only (etcd's user `root` has no password, so
  nothing else can become root); kumiai uses it through etcdctl (gRPC, where etcd takes the CN as the user) to
  enable authentication and to reconcile the towns' users and roles (roles/etcd, library/etcd_access.py);
- a town: etcd user and role `kumiai-town-<id>`, the role granting readwrite on the town's key prefix at that site
  (Patroni's namespace + scope) and nothing else. Patroni reaches etcd through etcd's JSON gateway, and etcd 3.4's
  gateway ignores a certificate's CN (it refuses a request whose certificate names one: CVE-2018-16886), so a town's
  members present the town's transport certificate (signed by the CA, no CN) and authenticate as the town's user
  with its password (kept in the town's vault). Both members of a town at both sites share the town's identity.

Certificates are issued on the controller under `<lab dir>/pki/etcd/` and copied to the hosts by the roles. etcd
reads its certificate files at every TLS handshake, so a reissued certificate is served without a restart; Patroni
opens new connections with the files as they are (a reload or restart picks them up at once), and a certificate
replaced early stays valid until its own end, so rotation needs no downtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kumiai.datalayer.topology import SiteLayout, Topology
from kumiai.pki import CertFiles, ensure_ca, ensure_cert

ROOT_USER = "root"
CA_NAME = "kumiai lab CA"
# etcd's permission types as its API reports them.
READWRITE = 2


def namespace(site_id: str) -> str:
    """Patroni's namespace at a site (playbooks/vars/town_member.yml: patroni_cluster_namespace)."""
    return f"/kumiai/{site_id}/"


def town_user(town_id: str) -> str:
    """The town's etcd user, also the name of its one role."""
    return f"kumiai-town-{town_id}"


def town_prefix(site_id: str, town_id: str) -> str:
    """Every key of the town's cluster at a site: Patroni's namespace, its scope (the town id), a slash (so that
    town `naka` never reaches `nakai`'s keys)."""
    return f"{namespace(site_id)}{town_id}/"


def range_end(prefix: str) -> str:
    """The end of etcd's key range for a prefix (the prefix with its last byte incremented), as etcd lists it."""
    data = prefix.encode()
    if not data or data[-1] == 0xFF:
        raise ValueError(f"no range end for the prefix {prefix!r}")
    return (data[:-1] + bytes([data[-1] + 1])).decode()


@dataclass(frozen=True)
class EtcdPki:
    """Where the controller keeps the etcd certificates of a target (paths only; ensure_etcd_certificates issues)."""

    root_dir: Path  # the target's directory (the lab directory)

    @property
    def ca_dir(self) -> Path:
        # The lab's one CA, shared with the object stores (kumiai.objectstore.lab).
        return self.root_dir / "ca"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def dir(self) -> Path:
        return self.root_dir / "pki" / "etcd"

    def site(self, site_id: str) -> CertFiles:
        """The site's etcd member: server certificate for clients and peers, and client certificate to its peers
        and its own gateway (so it names no user)."""
        return CertFiles(self.dir / "sites" / site_id / "member.crt", self.dir / "sites" / site_id / "member.key")

    @property
    def root(self) -> CertFiles:
        return CertFiles(self.dir / "root.crt", self.dir / "root.key")

    def town(self, town_id: str) -> CertFiles:
        return CertFiles(self.dir / "towns" / town_id / "client.crt", self.dir / "towns" / town_id / "client.key")


def tls_dir(site: SiteLayout) -> Path:
    """Where the site's etcd member finds its certificate, key and the CA on its host."""
    return site.dir / "etcd-tls"


def etcd_pki(topology: Topology) -> EtcdPki:
    return EtcdPki(topology.dir)


def ensure_etcd_certificates(topology: Topology, *, force: bool = False) -> list[CertFiles]:
    """Issue (or keep, while valid and naming the same) every etcd certificate of the topology: each site's member,
    root, each town's. `force=True` reissues them all (kumiai certs rotate); etcd serves the new files at its next
    handshake, the roles copy the new files to the hosts at their next run."""
    pki = etcd_pki(topology)
    ca = ensure_ca(pki.ca_dir, CA_NAME)
    issued = [_site_cert(ca, pki, site, force) for site in topology.sites]
    root = pki.root
    issued.append(ensure_cert(ca, root.cert.parent, "root", common_name=ROOT_USER, client=True, force=force))
    for town_id in sorted(topology.towns):
        files = pki.town(town_id)
        issued.append(ensure_cert(ca, files.cert.parent, "client", common_name="", client=True, force=force))
    return issued


def _site_cert(ca: CertFiles, pki: EtcdPki, site: SiteLayout, force: bool) -> CertFiles:
    files = pki.site(site.id)
    return ensure_cert(
        ca,
        files.cert.parent,
        "member",
        common_name="",
        addresses=[site.etcd_address],
        server=True,
        client=True,
        force=force,
    )

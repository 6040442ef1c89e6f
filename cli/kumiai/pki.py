"""kumiai's certificate authority and the certificates it issues (Python `cryptography`).

Every channel is verified against this CA, never with verification off: the object stores' S3 endpoints, PostgreSQL
(server and client certificates), Patroni's REST API and etcd. A real consortium may bring its own CA; the lab makes
one under its directory. Private keys are written 0600 and never leave the directory they are made in (a role copies
them to the host that uses them). `force=True` reissues (certificate rotation); otherwise a certificate is kept while
it is valid, issued by the current CA, and names what it must name.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 825
# A certificate this close to its end is replaced by the next `lab up`.
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, with the mode set before any byte is written (a key is never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _still_good(cert_path: Path, now: datetime.datetime) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert if cert.not_valid_after_utc - RENEW_BEFORE > now else None


def ensure_ca(directory: Path, name: str) -> CertFiles:
    """The CA in `directory` (ca.crt, ca.key): made once, kept while valid, so certificates already issued and the
    files that trust it stay good across `lab up` runs."""
    files = CertFiles(directory / "ca.crt", directory / "ca.key")
    now = datetime.datetime.now(datetime.UTC)
    if files.key.exists() and _still_good(files.cert, now):
        return files
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the certificate is for everyone (pgBackRest runs as the towns), the key 0600
    _write(files.key, _key_pem(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def ensure_server_cert(ca: CertFiles, directory: Path, address: str, *, force: bool = False) -> CertFiles:
    """A server certificate for `address` in `directory` (server.crt, server.key); see ensure_cert."""
    return ensure_cert(ca, directory, "server", common_name=address, addresses=[address], server=True, force=force)


def ensure_cert(
    ca: CertFiles,
    directory: Path,
    stem: str,
    *,
    common_name: str,
    addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    force: bool = False,
) -> CertFiles:
    """A certificate signed by `ca` in `directory` (STEM.crt, STEM.key): for a server (`addresses` in its SAN, each
    both as an IP and as a DNS name: pgBackRest 2.45 matches an address against DNS names only), for a client
    (`common_name` is the identity PostgreSQL and etcd check), or both; an empty `common_name` gives an empty
    subject (etcd 3.4's JSON gateway refuses a client certificate that names a user). Reissued when forced, when
    the CA, the common name, the addresses or the usages changed, or when it nears its end."""
    if not (server or client):
        raise ValueError("a certificate is for a server, a client or both")
    files = CertFiles(directory / f"{stem}.crt", directory / f"{stem}.key")
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    current = None if force or not files.key.exists() else _still_good(files.cert, now)
    if current is not None and _identity(current) == (common_name, set(addresses), set(usages)):
        try:
            current.verify_directly_issued_by(ca_cert)
            return files
        except (ValueError, TypeError, InvalidSignature):  # an older CA of the same name signed it: reissue
            pass
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else []))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if addresses:
        names: list[x509.GeneralName] = []
        for address in addresses:
            names += [x509.DNSName(address), x509.IPAddress(ipaddress.ip_address(address))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(files.key, _key_pem(key), 0o600)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def _identity(cert: x509.Certificate) -> tuple[str, set[str], set[x509.ObjectIdentifier]]:
    """What a certificate certifies: its common name, the IP addresses of its SAN, its extended key usages."""
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        ips = set()
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    return (str(cn[0].value) if cn else "", ips, usages)

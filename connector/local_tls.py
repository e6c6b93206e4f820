"""Certificates made for the secured local broker: a CA, the broker's certificate, client certificates by name.

Managed Kafka clusters speak TLS with a CA of their own and often authenticate clients by certificate (mTLS);
the secured local broker (connector.local_kafka, `kafka start --secure`) does the same with certificates made
here, so our clients are proven against the real thing. Everything lives in one directory, so a restarted
broker finds the same CA and its clients keep trusting it. Java 17 reads these PEM files directly
(`ssl.keystore.type=PEM`): no keytool, no JKS.

Besides the good certificates, the directory holds what tests of failures need: an expired client certificate,
a broker certificate naming another host (hostname verification), and a second CA that signed nothing the
broker trusts (an untrusted client) and that trusts nothing the broker presents (an untrusting client).
Private keys are written 0600 and never leave the directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.tls import private_key_pem, write_private

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
MISMATCH_HOST = "not-this-host.invalid"  # the SAN of the certificate of the hostname-mismatch listener


@dataclass(frozen=True)
class Authority:
    """A CA: its key signs certificates, its certificate is what clients and the broker trust."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class CertPair:
    """Where a certificate and its private key are (PEM)."""

    cert: Path
    key: Path


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_authority(common_name: str, days: int = 825) -> Authority:
    """A self-signed CA (P-256: fast to make, read by OpenSSL, Python and Java alike)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(key, cert)


def issue(
    authority: Authority,
    common_name: str,
    *,
    hosts: Sequence[str] = (),
    expired: bool = False,
    days: int = 825,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate `CN=<common_name>` signed by `authority`, good for TLS servers and clients alike.

    `hosts` become the subject alternative names (IP addresses or DNS names); `expired` makes one whose
    validity ended yesterday (certificate-expiry tests).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else (
        now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    )  # fmt: skip
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
    return key, builder.sign(authority.key, hashes.SHA256())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class LocalPki:
    """The certificates of one secured local broker, kept in `directory` (created on first use).

    `ca.crt` signed the broker's and the clients' certificates; `other-ca.crt` is an unrelated CA whose key
    is thrown away; `<name>.pem` is a key store (key, certificate, CA) in Java's PEM format; `clients/`
    holds `<name>.crt` / `<name>.key` pairs, `CN=<name>`, so the broker's mTLS principal is `User:<name>`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def other_ca_file(self) -> Path:
        return self.directory / "other-ca.crt"

    @property
    def _ca_key_file(self) -> Path:
        return self.directory / "ca.key"

    def ensure(self) -> None:
        """Make the CA and the unrelated CA unless they exist (a restart keeps the trust its clients have)."""
        if not (self.ca_file.exists() and self._ca_key_file.exists()):
            ca = new_authority("pinwheel-connector local CA")
            write_private(self._ca_key_file, private_key_pem(ca.key))
            self.ca_file.write_bytes(_pem(ca.cert))
        if not self.other_ca_file.exists():
            self.other_ca_file.write_bytes(_pem(new_authority("unrelated CA").cert))

    def authority(self) -> Authority:
        self.ensure()
        key = serialization.load_pem_private_key(self._ca_key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{self._ca_key_file} is not the EC key this module writes")
        return Authority(key, x509.load_pem_x509_certificate(self.ca_file.read_bytes()))

    def keystore(self, name: str, hosts: Sequence[str] = LOOPBACK_HOSTS) -> Path:
        """`<name>.pem`: a key store for Java (`ssl.keystore.type=PEM`) holding key, certificate and CA, 0600.

        Made once; the certificate is `CN=<name>` with `hosts` as its SANs.
        """
        path = self.directory / f"{name}.pem"
        if not path.exists():
            authority = self.authority()
            key, cert = issue(authority, name, hosts=hosts)
            write_private(path, private_key_pem(key) + _pem(cert) + _pem(authority.cert))
        return path

    def client(self, name: str, *, expired: bool = False) -> CertPair:
        """A client certificate `CN=<name>` signed by the CA (made once; `expired`: one that expired yesterday)."""
        stem = f"{name}.expired" if expired else name
        pair = CertPair(self.directory / "clients" / f"{stem}.crt", self.directory / "clients" / f"{stem}.key")
        if not (pair.cert.exists() and pair.key.exists()):
            key, cert = issue(self.authority(), name, expired=expired)
            write_private(pair.key, private_key_pem(key))
            pair.cert.write_bytes(_pem(cert))
        return pair

    def untrusted_client(self, name: str) -> CertPair:
        """A client certificate `CN=<name>` signed by a CA the broker does not trust (made once)."""
        pair = CertPair(self.directory / "untrusted" / f"{name}.crt", self.directory / "untrusted" / f"{name}.key")
        if not (pair.cert.exists() and pair.key.exists()):
            key, cert = issue(new_authority("untrusted CA"), name)
            write_private(pair.key, private_key_pem(key))
            pair.cert.write_bytes(_pem(cert))
        return pair


def client_ssl_context(ca_file: Path, client: CertPair | None = None) -> ssl.SSLContext:
    """A TLS client context trusting `ca_file` only, checking the broker's host name, presenting `client` if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context

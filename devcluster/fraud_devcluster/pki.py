"""The cluster's certificates: one CA signs the API server's and the webhook server's serving
certificates and the admin's client certificate (group system:masters); a separate key signs
ServiceAccount tokens. Written once per cluster directory, private keys 0600."""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"
VALID = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca(self) -> Path:
        return self.path("ca.crt")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _certificate(subject: x509.Name, public_key, issuer: x509.Name, signer, *, ca: bool = False,
                 server: bool = False, hosts: tuple[str, ...] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + VALID)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create(directory: Path) -> Pki:
    """CA, serving certs (`apiserver`, `webhook`), the admin client cert and the token signing key."""
    pki = Pki(directory)
    if pki.path("sa.key").exists():
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = _name("fraud-rollout-devcluster-ca")
    pki.ca.write_bytes(_pem(_certificate(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)))
    _write_key(ca_key, pki.path("ca.key"))
    hosts = (LOOPBACK, "localhost", "kubernetes", "kubernetes.default")
    for name, subject, server in (("apiserver", _name("kube-apiserver"), True),
                                  ("webhook", _name("kserve-webhook-server-service"), True),
                                  ("admin", _name("fraud-rollout-admin", "system:masters"), False)):
        key = _key()
        cert = _certificate(subject, key.public_key(), ca_name, ca_key, server=server, hosts=hosts if server else ())
        pki.path(f"{name}.crt").write_bytes(_pem(cert))
        _write_key(key, pki.path(f"{name}.key"))
    signer = _key()
    pki.path("sa.pub").write_bytes(signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    _write_key(signer, pki.path("sa.key"))  # last: its presence marks a complete directory
    return pki

"""Throwaway certificates for demos and tests: a CA and leaf certificates it signs."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import ipaddress
import os
from pathlib import Path

__all__ = ["CertificateSet", "PinnedCertificate", "make_certificates", "make_pinned_certificate"]


@dataclasses.dataclass(frozen=True)
class CertificateSet:
    """Paths of a CA certificate and of a server certificate + key it signed."""

    cafile: Path
    certfile: Path
    keyfile: Path


def make_certificates(
    directory: str | os.PathLike[str],
    names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
    *,
    prefix: str = "",
    not_before: datetime.datetime | None = None,
    server_auth: bool = True,
    ca_first: bool = False,
) -> CertificateSet:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` (ECDSA P-256) into ``directory``.

    Flawed certificates, for tests of what a client refuses: ``not_before`` moves
    the start of the server certificate's validity (default: five minutes ago),
    ``server_auth=False`` gives it clientAuth instead of serverAuth, and
    ``ca_first=True`` writes the CA certificate before it in ``cert.pem`` (a chain
    out of order).  Needs the ``cryptography`` package (``pip install cryptography``).
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("making certificates needs the cryptography package: pip install cryptography") from exc

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiopquic throwaway CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_auth else ExtendedKeyUsageOID.CLIENT_AUTH
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertificateSet(
        cafile=directory / f"{prefix}ca.pem",
        certfile=directory / f"{prefix}cert.pem",
        keyfile=directory / f"{prefix}key.pem",
    )
    paths.cafile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    chain = [ca_cert, cert] if ca_first else [cert]
    paths.certfile.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    paths.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclasses.dataclass(frozen=True)
class PinnedCertificate:
    """A self-signed certificate a browser accepts through WebTransport's
    ``serverCertificateHashes``, and the SHA-256 of its DER encoding."""

    certfile: Path
    keyfile: Path
    sha256: bytes

    @property
    def sha256_hex(self) -> str:
        """The hash as hex, e.g. for a URL parameter."""
        return self.sha256.hex()


def make_pinned_certificate(
    directory: str | os.PathLike[str], names: tuple[str, ...] = ("127.0.0.1", "localhost"), *, days: int = 10
) -> PinnedCertificate:
    """Write ``pinned-cert.pem`` and ``pinned-key.pem`` into ``directory``: a
    self-signed ECDSA P-256 certificate valid for ``days`` (at most 14, as the
    WebTransport spec requires of a certificate pinned by its hash)."""
    if not 1 <= days <= 14:
        raise ValueError(f"days: a pinned certificate is valid for 1 to 14 days, not {days}")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now - datetime.timedelta(hours=1) + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / "pinned-cert.pem", directory / "pinned-key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return PinnedCertificate(certfile, keyfile, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())

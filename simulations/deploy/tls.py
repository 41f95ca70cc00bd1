"""Throw-away certificates for a loopback federation: one self-signed CA and one server certificate.

The SuperLink serves its Fleet, Control and Runtime APIs over TLS with the server certificate; SuperNodes, the
``flwr`` CLI and Flower's own SuperExec verify it against the CA. Clients connect to ``127.0.0.1``, so the
server certificate's subjectAltName must hold that IP address (and ``localhost``); the common name is not
consulted by gRPC or httpx. Keys are EC P-256 and valid for a few days: these certificates protect one run on
one machine and are never meant to leave it.

The private key is written 0600 (owner only) whatever was there before, by an atomic replace, and the folder is
made 0700: a key regenerated over an older, world-readable ``server.key`` does not inherit its mode.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcompress.files import atomic_write_bytes

__all__ = ["LOOPBACK_NAMES", "Certificates", "make_certificates"]

LOOPBACK_NAMES: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")
KEY_MODE = 0o600  # the private key: owner read/write only
FOLDER_MODE = 0o700  # the certificate folder: owner only


@dataclasses.dataclass(frozen=True)
class Certificates:
    """Paths of the PEM files of one run."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcompress"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write_bytes(path, pem, mode=KEY_MODE)  # a new file: an older one's mode is not kept


def make_certificates(folder: Path, *, names: tuple[str, ...] = LOOPBACK_NAMES, days: int = 7) -> Certificates:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` into ``folder`` and return their paths.

    Parameters
    ----------
    folder : Path
        Created if missing and made 0700; existing files of the same names are replaced (the key is 0600).
    names : tuple of str
        Host names and IP addresses the server certificate is valid for (its subjectAltName).
    days : int
        Validity from now; both certificates start one hour in the past to tolerate clock skew.
    """
    if not names:
        raise ValueError("names must hold at least one host name or IP address for the subjectAltName")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    folder.chmod(FOLDER_MODE)  # also when it existed before
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    end = start + datetime.timedelta(days=days, hours=1)

    # --- the CA: self-signed, may sign certificates but not other CAs -----------------------------------
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedcompress loopback CA"))
        .issuer_name(_name("fedcompress loopback CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    # --- the server certificate: signed by the CA, valid for the loopback names -------------------------
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    certs = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    atomic_write_bytes(certs.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    atomic_write_bytes(certs.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _write_key(certs.server_key, server_key)
    return certs

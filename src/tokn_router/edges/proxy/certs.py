"""Certificates, without the store: the proxy CA's root, leaves, the system roots.

Pure cryptography (plus reading the system trust store for the bundle); where
the files live, locking and the per-host TLS contexts are
:class:`tokn_router.edges.proxy.ca.CertStore`.

The root: EC P-256, self-signed, ``BasicConstraints(ca, path_length=0)`` and
``KeyUsage(digital_signature, key_cert_sign, crl_sign)``, both critical, with
SKI/AKI. No NameConstraints: the intercept list is user-extensible
(``intercept_hosts`` may name ``localhost:8443`` or an IP), and DNS-only
constraints would not restrict IP SANs anyway, since a constraint applies only to
the name types it lists.

A leaf: one SAN (``DNSName`` or ``IPAddress``), ``BasicConstraints(ca=False)``,
``KeyUsage(digital_signature)``, ``ExtendedKeyUsage(serverAuth)``, 30 days
(well under the 825 days Apple clients accept).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import re
import ssl
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tokn_router.wire.hosts import normalize_host

log = logging.getLogger("tokn_router.proxy.ca")

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=30)
# Backdate certificates so a client whose clock runs a little behind still accepts them.
_BACKDATE = dt.timedelta(days=1)

PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)

_CA_CN = "tokn-router local CA"
CA_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tokn-router"),
        x509.NameAttribute(NameOID.COMMON_NAME, _CA_CN),
    ]
)

SigningKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


class Leaf(NamedTuple):
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san_for(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _hash_for(key: SigningKey) -> hashes.SHA256 | None:
    # Ed25519/Ed448 sign without a separate digest; cryptography wants None there.
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )


def private_pem(key: SigningKey | ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the files are 0600 in a 0700 folder)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A fresh root: new key, self-signed, ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(CA_NAME)
        .issuer_name(CA_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_leaf(ca_key: SigningKey, ca_cert: x509.Certificate, host: str) -> Leaf:
    """A fresh 30-day server certificate for ``host`` (DNS name or IP literal).

    Raises ValueError for a host that is neither.
    """
    host = normalize_host(host)
    key = ec.generate_private_key(ec.SECP256R1())
    start = now()
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tokn-router")]
    if len(host) <= 64:  # the CN attribute is limited to 64 characters
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + LEAF_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_san_for(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, _hash_for(ca_key))
    )
    return Leaf(cert, key)


# ------------------------------------------------------------------ system roots


def system_root_pems(exclude: tuple[Path, ...] = ()) -> list[bytes]:
    """PEM blocks of the system trust store, deduplicated, in file order.

    Sources: OpenSSL's compiled-in default CA file (or its hashed directory when there
    is no file), plus ``$SSL_CERT_FILE`` when it is a different file (a corporate
    bundle the user already relies on). Files in ``exclude`` are skipped: after
    ``eval "$(tokn-router proxy env)"`` SSL_CERT_FILE is our own bundle, and reading it
    back would keep an old CA alive across ``regenerate``. ``certifi`` is a last
    resort for platforms without a roots file (python.org macOS builds).
    """
    paths = ssl.get_default_verify_paths()
    files: list[Path] = []
    if paths.openssl_cafile and os.path.isfile(paths.openssl_cafile):
        files.append(Path(paths.openssl_cafile))
    elif paths.openssl_capath and os.path.isdir(paths.openssl_capath):
        files.extend(sorted(p for p in Path(paths.openssl_capath).iterdir() if p.is_file()))
    env_file = os.environ.get(paths.openssl_cafile_env or "SSL_CERT_FILE")
    if env_file and os.path.isfile(env_file):
        files.append(Path(env_file))
    if not files:
        with contextlib.suppress(ImportError):
            import certifi  # type: ignore[import-not-found,unused-ignore]

            files.append(Path(certifi.where()))

    def excluded(p: Path) -> bool:
        return any(e.exists() and _samefile(p, e) for e in exclude)

    seen: set[bytes] = set()
    out: list[bytes] = []
    for f in files:
        if excluded(f):
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        for m in PEM_CERT_RE.finditer(data):
            block = m.group(0).replace(b"\r\n", b"\n")
            key = b"".join(block.split())
            if key not in seen:
                seen.add(key)
                out.append(block)
    if not out:
        log.warning("no system root certificates found; ca-bundle.crt holds only the proxy CA")
    return out


def is_tokn_ca(pem: bytes) -> bool:
    """One of our own CAs (any generation), e.g. from a copied old bundle in SSL_CERT_FILE."""
    body = b"".join(pem.splitlines()[1:-1])
    try:
        der = base64.b64decode(body)
    except binascii.Error:
        return False
    # Search the DER first: parsing every system root is slower and makes cryptography
    # warn about some old roots' non-positive serial numbers.
    if _CA_CN.encode() not in der:
        return False
    try:
        return x509.load_der_x509_certificate(der).subject == CA_NAME
    except ValueError:
        return False


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False

"""The proxy CA: files and modes, loading vs. generating, leaves, contexts, SNI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import ssl
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from tokn_router.edges.proxy import certs
from tokn_router.edges.proxy.ca import CAError, CertStore
from tokn_router.errors import ToknError
from tokn_router.wire.hosts import normalize_host


@pytest.fixture
def store(tmp_path: Path) -> CertStore:
    return CertStore(tmp_path / "state" / "ca").load()


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _pems(path: Path) -> list[bytes]:
    return certs.PEM_CERT_RE.findall(path.read_bytes())


def _verifier(store: CertStore, name: x509.GeneralName) -> object:
    builder = PolicyBuilder().store(Store([store.certificate]))
    if isinstance(name, x509.DNSName):
        return builder.build_server_verifier(x509.DNSName(name.value))
    return builder.build_server_verifier(x509.IPAddress(name.value))


def test_generates_files_with_safe_modes(tmp_path: Path) -> None:
    ca_dir = tmp_path / "state" / "ca"
    store = CertStore(ca_dir)
    assert not ca_dir.exists(), "nothing is written before first use"
    store.load()
    assert _mode(ca_dir) == 0o700
    assert _mode(store.key_path) == 0o600
    assert store.cert_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in store.cert_path.read_text()
    assert "PRIVATE KEY" not in store.bundle_path.read_text()
    assert store.key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    # Only the documented files (plus the lock file) are left behind.
    assert {p.name for p in ca_dir.iterdir()} == {"ca.key", "ca.crt", "ca-bundle.crt", ".lock"}


def test_ca_certificate_profile(store: CertStore) -> None:
    cert = store.certificate
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    lifetime = store.not_valid_after - store.not_valid_before
    assert dt.timedelta(days=3640) < lifetime < dt.timedelta(days=3660)
    assert store.not_valid_before < dt.datetime.now(dt.UTC) < store.not_valid_after
    assert x509.load_pem_x509_certificate(store.pem().encode()) == cert


def test_fingerprint_format(store: CertStore) -> None:
    fp = store.fingerprint_sha256()
    assert re.fullmatch(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}", fp)
    assert fp.replace(":", "").lower() == store.certificate.fingerprint(hashes.SHA256()).hex()


def test_bundle_is_system_roots_plus_ca(store: CertStore) -> None:
    bundle = _pems(store.bundle_path)
    ours = _pems(store.cert_path)[0]
    assert bundle[-1] == ours
    assert bundle.count(ours) == 1
    system = certs.system_root_pems()
    if system:  # this machine has a roots file: every root is in the bundle
        assert len(bundle) == len(system) + 1


def test_loading_keeps_the_existing_ca(store: CertStore) -> None:
    key_before = store.key_path.read_bytes()
    again = CertStore(store.ca_dir).load()
    assert again.fingerprint_sha256() == store.fingerprint_sha256()
    assert store.key_path.read_bytes() == key_before


def test_loose_key_mode_is_tightened(store: CertStore) -> None:
    store.key_path.chmod(0o644)
    CertStore(store.ca_dir).load()
    assert _mode(store.key_path) == 0o600


def test_corrupt_key_is_one_line_error_and_not_replaced(store: CertStore) -> None:
    store.key_path.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    cert_before = store.cert_path.read_bytes()
    with pytest.raises(CAError) as ei:
        CertStore(store.ca_dir).load()
    msg = str(ei.value)
    assert isinstance(ei.value, ToknError)
    assert "\n" not in msg and str(store.key_path) in msg and "regenerate" in msg
    assert store.cert_path.read_bytes() == cert_before
    assert "garbage" in store.key_path.read_text()


def test_half_missing_pair_is_an_error(store: CertStore) -> None:
    store.cert_path.unlink()
    with pytest.raises(CAError, match=r"ca\.crt: missing"):
        CertStore(store.ca_dir).load()
    assert store.key_path.exists() and not store.cert_path.exists()


def test_mismatched_pair_is_an_error(store: CertStore, tmp_path: Path) -> None:
    other = CertStore(tmp_path / "other").load()
    store.cert_path.write_bytes(other.cert_path.read_bytes())
    with pytest.raises(CAError, match="does not match"):
        CertStore(store.ca_dir).load()


def test_dns_leaf_profile_and_verification(store: CertStore) -> None:
    leaf = store.issue_leaf("API.OpenAI.com.")
    cert = leaf.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = store.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=31)
    cert.verify_directly_issued_by(store.certificate)
    verifier = _verifier(store, x509.DNSName("api.openai.com"))
    verifier.verify(cert, [])  # type: ignore[attr-defined]


def test_ip_leaf_has_ip_san(store: CertStore) -> None:
    for ip in ("127.0.0.1", "[::1]"):
        cert = store.issue_leaf(ip).certificate
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        addr = ipaddress.ip_address(ip.strip("[]"))
        assert san.get_values_for_type(x509.IPAddress) == [addr]
        assert san.get_values_for_type(x509.DNSName) == []
        _verifier(store, x509.IPAddress(addr)).verify(cert, [])  # type: ignore[attr-defined]


def test_long_host_has_no_common_name(store: CertStore) -> None:
    host = ".".join(["a" * 60, "b" * 60, "example", "com"])
    cert = store.issue_leaf(host).certificate
    assert not cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)


@pytest.mark.parametrize("bad", ["", "a b", "exa$mple.com", "-x.com", "a" * 64 + ".com", "x..com"])
def test_invalid_hosts_are_rejected(store: CertStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.issue_leaf(bad)


def test_normalize_host() -> None:
    assert normalize_host("Bücher.Example.") == "xn--bcher-kva.example"
    assert normalize_host("[::FFFF:1.2.3.4]") == "::ffff:102:304"
    assert normalize_host("api_internal.corp") == "api_internal.corp"


def test_context_cache_is_lru_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = CertStore(tmp_path / "ca", cache_size=2).load()
    a = store.server_context("a.example")
    assert store.server_context("A.example") is a
    assert store.cached_context("a.example") is a
    store.warm("b.example")
    store.server_context("a.example")  # a is now the most recently used
    store.server_context("c.example")  # evicts b
    assert store.cached_context("b.example") is None
    assert store.cached_context("a.example") is a
    assert not list(store.ca_dir.glob(".leaf-*"))


def test_regenerate_replaces_ca_and_drops_leaves(
    store: CertStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As after `eval "$(tokn-router proxy env)"`: the bundle must not feed on itself.
    monkeypatch.setenv("SSL_CERT_FILE", str(store.bundle_path))
    old_fp, old_pem = store.fingerprint_sha256(), _pems(store.cert_path)[0]
    ctx = store.server_context("api.openai.com")
    store.regenerate()
    assert store.fingerprint_sha256() != old_fp
    assert store.cached_context("api.openai.com") is None
    assert store.server_context("api.openai.com") is not ctx
    bundle = _pems(store.bundle_path)
    assert old_pem not in bundle and bundle[-1] == _pems(store.cert_path)[0]
    assert CertStore(store.ca_dir).load().fingerprint_sha256() == store.fingerprint_sha256()
    assert _mode(store.key_path) == 0o600


# ------------------------------------------------------------- TLS handshakes


def _client_ctx(store: CertStore) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(store.cert_path))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


async def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str
) -> tuple[x509.Certificate, str | None]:
    a, b = trio.testing.memory_stream_pair()
    server = trio.SSLStream(a, server_ctx, server_side=True)
    client = trio.SSLStream(b, client_ctx, server_hostname=name)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der), server.selected_alpn_protocol()


def test_sni_callback_swaps_to_the_named_host(store: CertStore) -> None:
    async def main() -> None:
        # Start from another host's context: SNI decides which leaf is presented.
        base = store.base_context()
        cert, alpn = await _handshake(base, _client_ctx(store), "api.githubcopilot.com")
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["api.githubcopilot.com"]
        assert alpn == "http/1.1", "h2 must not be offered: the MITM speaks HTTP/1.1 only"
        other = store.server_context("api.z.ai")
        cert, _ = await _handshake(other, _client_ctx(store), "open.bigmodel.cn")
        assert san != cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    trio.run(main)


def test_ip_target_handshake_without_sni(store: CertStore) -> None:
    async def main() -> None:
        # Clients send no SNI for IP literals: the CONNECT host's context must serve.
        cert, _ = await _handshake(
            store.server_context("127.0.0.1"), _client_ctx(store), "127.0.0.1"
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]

    trio.run(main)


def test_invalid_sni_aborts_the_handshake_cleanly(store: CertStore) -> None:
    async def main() -> None:
        ctx = _client_ctx(store)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with pytest.raises(ExceptionGroup) as ei:
            await _handshake(store.base_context(), ctx, "bad_label-.example")
        assert ei.value.subgroup(trio.BrokenResourceError) is not None
        assert ei.value.split(trio.BrokenResourceError)[1] is None

    # The failure is a TLS alert, not an unraisable exception (pytest treats those as errors).
    trio.run(main)


def test_copied_old_bundle_in_ssl_cert_file_is_not_carried_over(
    store: CertStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A *copy* of an old bundle (not the same file) still must not keep the old CA alive.
    copy = tmp_path / "copied-bundle.pem"
    copy.write_bytes(store.bundle_path.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(copy))
    old_pem = _pems(store.cert_path)[0]
    store.regenerate()
    bundle = _pems(store.bundle_path)
    assert old_pem not in bundle
    assert bundle.count(_pems(store.cert_path)[0]) == 1


def test_existing_rsa_ca_is_used_as_is(tmp_path: Path) -> None:
    # A CA the user already trusts (here an RSA one from trustme) is loaded, not replaced.
    ext = trustme.CA(key_type=trustme.KeyType.RSA)
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir(mode=0o700)
    (ca_dir / "ca.crt").write_bytes(ext.cert_pem.bytes())
    (ca_dir / "ca.key").write_bytes(ext.private_key_pem.bytes())
    (ca_dir / "ca.key").chmod(0o600)
    store = CertStore(ca_dir).load()
    assert store.pem().encode() == ext.cert_pem.bytes()
    leaf = store.issue_leaf("api.openai.com").certificate
    leaf.verify_directly_issued_by(store.certificate)
    assert (ca_dir / "ca.crt").read_bytes() == ext.cert_pem.bytes()


def test_unwritable_ca_dir_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(CAError) as ei:
        CertStore(blocker / "ca").load()
    assert "\n" not in str(ei.value) and "not-a-dir" in str(ei.value)

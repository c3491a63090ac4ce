"""The MITM proxy's certificate store: the CA on disk and per-host TLS contexts.

Layout of the CA folder (created ``0700``)::

    ca.key         EC P-256 private key, PKCS#8 PEM, 0600 (never served)
    ca.crt         the self-signed root, PEM (what clients trust)
    ca-bundle.crt  system roots + ca.crt (for SSL_CERT_FILE & co, which *replace*
                   a client's trust store instead of extending it)

Leaves are issued on demand per SNI host and kept in memory only: an EC leaf costs
~0.2 ms to build, while ``SSLContext.load_cert_chain`` (~1.3 ms) dominates, so the
LRU caches whole server contexts. The SNI callback is synchronous and runs inside the
TLS handshake on the event loop; callers warm the cache off-loop first with
``await trio.to_thread.run_sync(store.warm, host)`` (the CONNECT line names the host
before the handshake starts), so the callback almost always hits the cache.

What the certificates contain, and why, is :mod:`tokn_router.edges.proxy.certs`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import ssl
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tokn_router._fs import atomic_write
from tokn_router.edges.proxy import certs
from tokn_router.edges.proxy.certs import Leaf, SigningKey
from tokn_router.errors import ToknError
from tokn_router.wire.hosts import normalize_host

log = logging.getLogger("tokn_router.proxy.ca")

CA_KEY_NAME = "ca.key"
CA_CERT_NAME = "ca.crt"
CA_BUNDLE_NAME = "ca-bundle.crt"

# A cached context whose leaf expires sooner than this is rebuilt (long-running daemon).
_LEAF_RENEW_MARGIN = dt.timedelta(days=2)


class CAError(ToknError):
    """The CA files on disk are unusable (corrupt, mismatched, half missing)."""


class _Entry(NamedTuple):
    context: ssl.SSLContext
    not_after: dt.datetime


class CertStore:
    """The proxy CA under ``ca_dir`` plus a thread-safe LRU of per-host server contexts.

    Nothing touches the disk until first use (or :meth:`load`); do that first use
    off the event loop (``trio.to_thread.run_sync(store.load)``).
    """

    def __init__(self, ca_dir: str | os.PathLike[str], *, cache_size: int = 1024) -> None:
        self.ca_dir = Path(ca_dir).expanduser()
        self._cache_size = cache_size
        # One lock for the CA state and the cache: warm() runs in worker threads while
        # the SNI callback runs on the event-loop thread.
        self._lock = threading.RLock()
        self._key: SigningKey | None = None
        self._cert: x509.Certificate | None = None
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._base: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ paths

    @property
    def key_path(self) -> Path:
        return self.ca_dir / CA_KEY_NAME

    @property
    def cert_path(self) -> Path:
        return self.ca_dir / CA_CERT_NAME

    @property
    def bundle_path(self) -> Path:
        return self.ca_dir / CA_BUNDLE_NAME

    # --------------------------------------------------------------- CA state

    def load(self) -> CertStore:
        """Load the CA, generating it if neither file exists; refresh the bundle."""
        with self._lock:
            if self._cert is None:
                with self._disk_errors():
                    self._load_or_create()
        return self

    @contextlib.contextmanager
    def _disk_errors(self) -> Iterator[None]:
        # An unwritable or full state dir is one line for the user, not a traceback.
        try:
            yield
        except OSError as e:
            where = e.filename or self.ca_dir
            raise CAError(f"{where}: {e.strerror or e}") from None

    def _ca(self) -> tuple[SigningKey, x509.Certificate]:
        with self._lock:
            if self._key is None or self._cert is None:
                self.load()
            assert self._key is not None and self._cert is not None
            return self._key, self._cert

    @property
    def certificate(self) -> x509.Certificate:
        return self._ca()[1]

    def pem(self) -> str:
        """The CA certificate (public), PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def fingerprint_sha256(self) -> str:
        """``AB:CD:…`` upper-case colon hex, as browsers and ``openssl x509 -fingerprint`` show it."""
        return self.certificate.fingerprint(hashes.SHA256()).hex(":").upper()

    @property
    def not_valid_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_valid_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def regenerate(self) -> None:
        """Replace the CA (new key, new root, new bundle); drop every cached leaf."""
        with self._lock, self._disk_errors(), self._dir_lock():
            self._generate()
            self._cache.clear()
            self._base = None

    @contextlib.contextmanager
    def _dir_lock(self) -> Iterator[None]:
        """Serialise CA creation between processes (a daemon and ``proxy ca show``)."""
        self._ensure_dir()
        fd = os.open(self.ca_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _ensure_dir(self) -> None:
        try:
            self.ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise CAError(f"{self.ca_dir}: cannot create the CA folder: {e.strerror}") from None

    def _load_or_create(self) -> None:
        with self._dir_lock():
            self._remove_stale_temp_files()
            have_key, have_cert = self.key_path.exists(), self.cert_path.exists()
            if not have_key and not have_cert:
                self._generate()
                return
            if not have_key or not have_cert:
                missing = self.key_path if not have_key else self.cert_path
                raise CAError(
                    f"{missing}: missing while its pair exists; restore it or run "
                    "`tokn-router proxy ca regenerate`"
                )
            key, cert = self._read_pair()
            self._tighten_key_mode()
            self._key, self._cert = key, cert
            self._write_bundle(only_if_changed=True)

    def _read_pair(self) -> tuple[SigningKey, x509.Certificate]:
        hint = "fix or remove it, or run `tokn-router proxy ca regenerate`"
        try:
            key_pem = self.key_path.read_bytes()
            cert_pem = self.cert_path.read_bytes()
        except OSError as e:
            raise CAError(f"{e.filename}: cannot read: {e.strerror}") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # TypeError: encrypted key. cryptography's messages span several sentences;
            # the contract is one line, so say what is wrong in our own words.
            raise CAError(
                f"{self.key_path}: not a readable unencrypted PEM private key; {hint}"
            ) from None
        if not isinstance(
            key,
            ec.EllipticCurvePrivateKey
            | rsa.RSAPrivateKey
            | ed25519.Ed25519PrivateKey
            | ed448.Ed448PrivateKey,
        ):
            raise CAError(f"{self.key_path}: unsupported key type {type(key).__name__}; {hint}")
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise CAError(f"{self.cert_path}: not a readable PEM certificate; {hint}") from None
        if cert.public_key() != key.public_key():
            raise CAError(f"{self.cert_path}: does not match {self.key_path.name}; {hint}")
        return key, cert

    def _tighten_key_mode(self) -> None:
        # The key must stay 0600 even if someone loosened it by hand.
        with contextlib.suppress(OSError):
            st = self.key_path.stat()
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                self.key_path.chmod(0o600)

    def _remove_stale_temp_files(self) -> None:
        # Leaf key material briefly lives in .leaf-*.pem; a crash could leave one behind.
        for p in self.ca_dir.glob(".leaf-*.pem"):
            with contextlib.suppress(OSError):
                p.unlink()

    def _generate(self) -> None:
        key, cert = certs.new_ca()
        # Key first: a crash in between leaves "cert missing", which load reports
        # instead of silently pairing a new key with an old, already-trusted cert.
        atomic_write(self.key_path, certs.private_pem(key), 0o600)
        atomic_write(self.cert_path, certs.certificate_pem(cert), 0o644)
        self._key, self._cert = key, cert
        self._write_bundle(only_if_changed=False)
        log.info("generated proxy CA in %s", self.ca_dir)

    def _write_bundle(self, *, only_if_changed: bool) -> None:
        assert self._cert is not None
        ours = certs.certificate_pem(self._cert).rstrip(b"\n")
        roots = [
            p
            for p in certs.system_root_pems(exclude=(self.bundle_path, self.cert_path))
            if not certs.is_tokn_ca(p)
        ]
        data = b"\n".join([*roots, ours]) + b"\n"
        if only_if_changed:
            with contextlib.suppress(OSError):
                if self.bundle_path.read_bytes() == data:
                    return
        atomic_write(self.bundle_path, data, 0o644)

    # ------------------------------------------------------------------ leaves

    def issue_leaf(self, host: str) -> Leaf:
        """A fresh 30-day server certificate for ``host`` (DNS name or IP literal)."""
        ca_key, ca_cert = self._ca()
        return certs.issue_leaf(ca_key, ca_cert, host)

    def _new_context(self, leaf: Leaf) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # Only HTTP/1.1 is implemented inside the MITM; h2-capable clients fall back.
        # (ALPN comes from the context chosen in the SNI callback, so every context
        # needs this, not just the base one.)
        ctx.set_alpn_protocols(["http/1.1"])
        pem = certs.private_pem(leaf.private_key) + certs.certificate_pem(leaf.certificate)
        # load_cert_chain only takes paths. mkstemp creates the file 0600 inside the
        # 0700 CA folder; it is removed as soon as OpenSSL has read it.
        fd, tmp = tempfile.mkstemp(dir=self.ca_dir, prefix=".leaf-", suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            ctx.load_cert_chain(tmp)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        ctx.sni_callback = self._sni_callback
        return ctx

    def cached_context(self, host: str) -> ssl.SSLContext | None:
        """The cached context for ``host`` if present and fresh; never builds one."""
        try:
            host = normalize_host(host)
        except ValueError:
            return None
        with self._lock:
            entry = self._cache.get(host)
            if entry is None or entry.not_after - certs.now() < _LEAF_RENEW_MARGIN:
                return None
            self._cache.move_to_end(host)
            return entry.context

    def server_context(self, host: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for ``host`` (cached, LRU)."""
        host = normalize_host(host)
        ctx = self.cached_context(host)
        if ctx is not None:
            return ctx
        # Built outside the lock so one slow build does not stall the SNI callback of
        # other connections; two threads racing on one host just build it twice.
        leaf = self.issue_leaf(host)
        ctx = self._new_context(leaf)
        with self._lock:
            self._cache[host] = _Entry(ctx, leaf.certificate.not_valid_after_utc)
            self._cache.move_to_end(host)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ctx

    def warm(self, host: str) -> None:
        """Build ``host``'s context now; run via ``trio.to_thread.run_sync`` before the handshake."""
        self.server_context(host)

    def base_context(self) -> ssl.SSLContext:
        """A context for connections whose host is not known in advance.

        It presents a placeholder leaf (``tokn-router.invalid``); its SNI callback swaps
        in the named host's context, as do the callbacks of all per-host contexts.
        """
        with self._lock:
            if self._base is None:
                self._base = self._new_context(self.issue_leaf("tokn-router.invalid"))
            return self._base

    def _sni_callback(
        self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        # Runs synchronously inside do_handshake. An exception escaping here would be
        # reported as "unraisable" and abort the handshake anyway, so map every failure
        # to a TLS alert instead.
        if not server_name:
            return None  # IP-address targets send no SNI: keep the CONNECT host's context
        try:
            ctx = self.server_context(server_name)
        except ValueError:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        except Exception:
            log.exception("cannot build a certificate for %r", server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if ctx is not sslobj.context:
            sslobj.context = ctx
        return None

"""The outbound HTTP client: one shared ``httpx.AsyncClient`` per proxy setting.

Every upstream call (GitHub, Copilot, Z.ai, MITM passthrough) goes through a
client made here, so the ``[proxy]`` section (``url``, ``system``,
``no_proxy``) and ``--no-proxy`` apply everywhere. Clients are created once and
reused; building TLS contexts costs tens of milliseconds.

The transport is pluggable (:func:`make_transport`): httpx's stock connection
pool scans every pooled connection per request, which grows with concurrency
(see :mod:`tokn_router.net.transport`), so the transport can be swapped without touching callers.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import httpx2 as httpx

from tokn_router.accounts.config import Config, OutboundProxyConfig, UpstreamConfig
from tokn_router.errors import ConfigError

_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


# An OpenSSL hashed-directory entry: subject-name hash, dot, sequence number.
_HASH_NAME = re.compile(r"[0-9a-f]{8}\.\d+")
# A hashed directory with at least this many certificates is taken for the whole
# system store (public root programs hold ~130-150 roots). Fewer means a directory
# with a few local additions, next to a bundle file that holds the rest.
_FULL_STORE = 100


def _hashed_certs(path: str) -> int:
    try:
        with os.scandir(path) as entries:
            return sum(1 for e in entries if _HASH_NAME.fullmatch(e.name))
    except OSError:
        return 0


def _unique(paths: list[str | None], exists: Callable[[str], bool]) -> list[str]:
    """Existing paths, each file or directory once (distros symlink one to the other)."""
    seen: set[str] = set()
    out: list[str] = []
    for p in paths:
        if p and exists(p):
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                out.append(p)
    return out


@cache
def tls_context() -> ssl.SSLContext:
    """System trust store plus ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set.

    OpenSSL's default paths are *replaced* by those variables, so the system
    locations are loaded explicitly first and the variables added on top.

    Start-up cost: parsing the system bundle (~140 roots, 220 KB of PEM) takes
    35 ms and 2 MB (and was done twice: ``get_default_verify_paths().cafile`` is
    the same bundle, or SSL_CERT_FILE). When the system also has a full hashed
    directory (``/etc/ssl/certs`` with ``c_rehash`` names), that directory alone
    stands for the store: OpenSSL then reads only the roots a handshake needs, when
    it needs them (~2 ms to set up).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    # The compiled-in system locations. (``cafile``/``capath`` of the same result
    # already reflect SSL_CERT_FILE/SSL_CERT_DIR: those are handled below.)
    paths = ssl.get_default_verify_paths()
    capaths = _unique([paths.openssl_capath], os.path.isdir)
    system_files = _unique([paths.openssl_cafile], os.path.isfile)
    full = any(_hashed_certs(d) >= _FULL_STORE for d in capaths)
    if not full:
        for cafile in system_files:
            ctx.load_verify_locations(cafile=cafile)
    for capath in capaths:
        ctx.load_verify_locations(capath=capath)
    # Variables naming the system store itself (some environments set them so) add
    # nothing; anything else is added on top.
    covered = {os.path.realpath(f) for f in system_files}
    env_file = os.environ.get("SSL_CERT_FILE")
    if env_file and os.path.isfile(env_file) and os.path.realpath(env_file) not in covered:
        ctx.load_verify_locations(cafile=env_file)
    env_dir = os.environ.get("SSL_CERT_DIR")
    if env_dir:
        done = {os.path.realpath(d) for d in capaths}
        for d in env_dir.split(os.pathsep):
            if os.path.isdir(d) and os.path.realpath(d) not in done:
                ctx.load_verify_locations(capath=d)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass(frozen=True, slots=True)
class ProxySetting:
    """The effective outbound proxy of one run."""

    url: str | None = None
    use_env: bool = False
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: OutboundProxyConfig, *, disabled: bool = False) -> ProxySetting:
        if disabled:
            return cls()
        if cfg.url:
            scheme = cfg.url.split("://", 1)[0].lower() if "://" in cfg.url else ""
            if scheme not in _PROXY_SCHEMES:
                # never echo the value: it may carry a password
                raise ConfigError(
                    "proxy.url must start with "
                    + ", ".join(f"{p}://" for p in _PROXY_SCHEMES)
                    + (f" (got '{scheme}://')" if scheme else "")
                )
        return cls(url=cfg.url, use_env=cfg.system and not cfg.url, no_proxy=tuple(cfg.no_proxy))

    def bypasses(self, host: str) -> bool:
        host = host.lower().strip("[]")
        for entry in self.no_proxy:
            e = entry.lower().strip()
            if not e:
                continue
            if e == "*":
                return True
            if e.startswith("."):
                if host.endswith(e) or host == e[1:]:
                    return True
            elif host == e or host.endswith("." + e):
                return True
        return False


def _no_proxy_pattern(entry: str) -> str | None:
    e = entry.strip().lower()
    if not e:
        return None
    if e == "*":
        return "all://"
    if e.startswith("."):
        return f"all://*{e}"
    return f"all://{e}"


def make_transport(
    setting: ProxySetting, verify: ssl.SSLContext, *, proxy: str | None
) -> httpx.AsyncBaseTransport:
    """The transport under a client; replaceable (see module docstring)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200, keepalive_expiry=60)
    # httpx's SOCKS support resolves names at the proxy for socks5:// as well as
    # socks5h://, which is what users behind a SOCKS proxy need anyway.
    return httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=proxy, trust_env=False)


def make_client(
    setting: ProxySetting,
    timeouts: UpstreamConfig | None = None,
    *,
    direct: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A new client for ``setting``; callers keep and reuse it.

    ``direct`` replaces the transport of direct (non-proxied) connections: the
    daemon passes a :class:`tokn_router.net.transport.TrioH11Transport`, whose pool
    costs the same at 1 and at 1000 concurrent streams.
    """
    t = timeouts or UpstreamConfig()
    verify = tls_context()
    timeout = httpx.Timeout(t.connect_timeout_secs, read=t.read_timeout_secs, pool=30.0)
    headers = {"Accept-Encoding": "identity"}
    if setting.use_env:
        # httpx reads HTTP(S)_PROXY / ALL_PROXY / NO_PROXY when constructed.
        return httpx.AsyncClient(
            verify=verify, timeout=timeout, trust_env=True, headers=headers, follow_redirects=False
        )
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    direct = direct or make_transport(setting, verify, proxy=None)
    if setting.url:
        mounts["all://"] = make_transport(setting, verify, proxy=setting.url)
        for entry in setting.no_proxy:
            pattern = _no_proxy_pattern(entry)
            if pattern:
                mounts[pattern] = direct
    return httpx.AsyncClient(
        verify=verify,
        timeout=timeout,
        trust_env=False,
        headers=headers,
        transport=direct,
        mounts=mounts or None,
        follow_redirects=False,
    )


def client_for(cfg: Config, *, no_proxy: bool = False) -> httpx.AsyncClient:
    """Convenience for one-shot CLI commands."""
    return make_client(ProxySetting.from_config(cfg.proxy, disabled=no_proxy), cfg.upstream)

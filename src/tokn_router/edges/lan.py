"""LAN bootstrap endpoints: ``/-/lan/...`` on a deliberate remote bind.

``serve --host 0.0.0.0 [--with-proxy]`` publishes a
:class:`LanInfo`; the routes answer only then (404 otherwise, like any unknown path),
and only on the API listener (the MITM proxy's route mode never reaches them):

* ``GET /-/lan/bootstrap.json`` — ``api_url``, ``proxy_url`` (null without the proxy),
  ``ca_cert_url``, ``env_url``, ``ca_sha256``.
* ``GET /-/lan/ca.crt`` — the CA *certificate*, re-encoded from the parsed file, so
  nothing but one public certificate can ever leave (never the key).
* ``GET /-/lan/env?shell=sh|bash|zsh|fish|pwsh`` — a script for ``eval`` /
  ``| source`` / ``| iex`` that downloads the CA, checks its SHA-256 fingerprint (of
  the DER certificate, as the server prints it), stores it with a bundle merged with the
  system roots under ``~/.cache/tokn-router/lan/<server>/`` (a temp dir as fallback)
  and exports ``OPENAI_BASE_URL``, the proxy variables and the CA variables.

URLs name the address the request came in on, as its ``Host`` header gives it, and
the listener's own port. That ``Host`` must name one of this machine's addresses: the
bound address, or for a wildcard bind (``0.0.0.0``) any interface address, or a
loopback name; a well-formed Host naming anything else is refused (403) and never
echoed, a malformed one is a 400. So a forged Host (``attacker.example``) cannot put
its own URLs into the bootstrap document or into the scripts
(:mod:`tokn_router.edges.lan_scripts`) that users ``eval``; every value is quoted
for its shell on top of that. The scheme is ``http``: the API listener does not terminate
TLS. The fingerprint check protects the download of ``ca.crt``; users should still
compare it with the one printed at start-up, which the script shows.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound

from tokn_router.edges.lan_scripts import PREFIX, LanURLs, env_script
from tokn_router.edges.proxy.shellenv import SHELLS
from tokn_router.wire import hosts
from tokn_router.wire.errors import error_body

__all__ = [
    "HostError",
    "LanInfo",
    "LanURLs",
    "env_script",
    "machine_addresses",
    "parse_host_header",
    "register",
]


@dataclass(frozen=True)
class LanInfo:
    """What the LAN endpoints publish; set by the daemon in LAN mode only."""

    proxy_port: int | None  # None without --with-proxy
    ca_cert_path: Path  # public certificate only; the key is never served
    ca_sha256: str  # colon-separated upper-case hex, as printed at start-up
    # the API listener's bind address; None or a wildcard: every interface address
    bind_host: str | None = None


PEM_TYPE = "application/x-pem-file"

HostError = hosts.HostError

_HOST_MESSAGE = "the Host header must be a host name or IP address with an optional port"
_WILDCARDS = frozenset({"0.0.0.0", "::"})
# Linux lists every local IPv4 address in the routing trie and every IPv6 one here.
_FIB_TRIE = Path("/proc/net/fib_trie")
_IF_INET6 = Path("/proc/net/if_inet6")


def parse_host_header(value: str | None) -> tuple[str, int | None]:
    """``(host, port)`` from a Host header; IPv6 without brackets. Raises HostError."""
    try:
        return hosts.parse_authority((value or "").strip(), canonical=False)
    except hosts.HostError:
        raise hosts.HostError(_HOST_MESSAGE) from None


def _ipv4_locals(fib_trie: str) -> set[str]:
    """The ``/32 host LOCAL`` entries of ``/proc/net/fib_trie``: this host's IPv4 addresses."""
    found: set[str] = set()
    last = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|-- "):
            last = text[4:]
        elif text.startswith("/32 host LOCAL") and last:
            found.add(last)
    return found


def _ipv6_locals(if_inet6: str) -> set[str]:
    """The addresses of ``/proc/net/if_inet6`` (32 hex digits each), compressed."""
    found: set[str] = set()
    for line in if_inet6.splitlines():
        digits = line.split(" ", 1)[0]
        try:
            found.add(ipaddress.IPv6Address(int(digits, 16)).compressed)
        except ValueError:
            continue
    return found


async def machine_addresses() -> set[str]:
    """This machine's interface addresses, canonical (best effort outside Linux)."""
    found: set[str] = set()
    for path, parse in ((_FIB_TRIE, _ipv4_locals), (_IF_INET6, _ipv6_locals)):
        try:
            found |= parse(await trio.Path(path).read_text())
        except OSError:
            continue
    if not found:
        # no /proc: what this host's own name resolves to
        with contextlib.suppress(OSError):
            for *_, addr in await trio.socket.getaddrinfo(socket.gethostname(), None):
                with contextlib.suppress(hosts.HostError):
                    found.add(hosts.normalize_host(str(addr[0]).partition("%")[0]))
    return found


async def _own_addresses(info: LanInfo, local: str | None) -> set[str]:
    """The hosts a Host header may name: the bound address, or every interface one."""
    bound = info.bind_host
    if bound and hosts.normalize_host(bound) not in _WILDCARDS:
        allowed = {hosts.normalize_host(bound)}
    else:
        allowed = await machine_addresses()
    if local:
        # the address this very connection reached is this machine's by definition
        with contextlib.suppress(hosts.HostError):
            allowed.add(_unmapped(hosts.normalize_host(local.partition("%")[0])))
    return allowed


def _unmapped(host: str) -> str:
    """``::ffff:192.0.2.2`` (IPv4 on a dual-stack socket) as ``192.0.2.2``."""
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return str(mapped) if mapped else host


# -------------------------------------------------------------------- routes


def _json(status: int, body: bytes) -> Response:
    return Response(body, status=status, content_type="application/json", headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


def _public_pem(path: Path, data: bytes, expected_sha256: str) -> bytes:
    """The one certificate in ``data``, re-encoded (so nothing else can leak)."""
    # imported here: cryptography is heavy and only LAN mode needs it
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(data)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    if fingerprint != expected_sha256.upper():
        raise LookupError(f"{path} changed since start-up (now {fingerprint}); restart the server")
    return cert.public_bytes(serialization.Encoding.PEM)


def register(app: QuartTrio, lan_info: Callable[[], LanInfo | None]) -> None:
    """Add the LAN routes; they answer only while ``lan_info()`` gives one (404 otherwise).

    The daemon publishes the info after building the app (and replaces it once the
    proxy port is known), so the check happens per request.
    """

    async def lan_urls() -> LanURLs | Response:
        info = lan_info()
        if info is None:
            raise NotFound()
        try:
            host, port = parse_host_header(request.headers.get("host"))
        except HostError as e:
            return _json(400, error_body(400, str(e), code="invalid_host"))
        server = request.scope.get("server")
        local = str(server[0]) if server else None
        if server and server[1]:
            port = int(server[1])  # the listener's own port, whatever the Host says
        allowed = await _own_addresses(info, local)
        bare = host.rstrip(".")
        loopback_ok = any(hosts.is_loopback(a) for a in allowed)
        if bare not in allowed and not (loopback_ok and hosts.is_loopback(bare)):
            # never echo the Host: show the address this request actually reached
            where = f" (e.g. http://{hosts.format_authority(local, port)})" if local else ""
            message = f"the Host header must name this server's address{where}"
            return _json(403, error_body(403, message, code="forbidden_host"))
        return LanURLs.build(host, port, info.proxy_port, info.ca_sha256)

    @app.get(f"{PREFIX}/bootstrap.json")
    async def lan_bootstrap() -> Response:
        urls = await lan_urls()
        if isinstance(urls, Response):
            return urls
        return _json(200, msgspec.json.encode(urls.bootstrap()))

    @app.get(f"{PREFIX}/ca.crt")
    async def lan_ca_cert() -> Response:
        urls = await lan_urls()
        if isinstance(urls, Response):
            return urls
        info = lan_info()
        if info is None:
            raise NotFound()
        try:
            data = await trio.Path(info.ca_cert_path).read_bytes()
            pem = _public_pem(info.ca_cert_path, data, info.ca_sha256)
        except (OSError, ValueError, LookupError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return _json(
                503,
                error_body(
                    503, f"the CA certificate is unavailable: {reason}", code="ca_unavailable"
                ),
            )
        headers = {**_NO_STORE, "Content-Disposition": 'inline; filename="tokn-router-ca.crt"'}
        return Response(pem, status=200, content_type=PEM_TYPE, headers=headers)

    @app.get(f"{PREFIX}/env")
    async def lan_env() -> Response:
        urls = await lan_urls()
        if isinstance(urls, Response):
            return urls
        shell = request.args.get("shell", "sh")
        if shell not in SHELLS:
            message = f"unknown shell '{shell[:40]}' (choose from {', '.join(SHELLS)})"
            return _json(400, error_body(400, message, code="invalid_shell", param="shell"))
        script = env_script(shell, urls)
        return Response(
            script, status=200, content_type="text/plain; charset=utf-8", headers=_NO_STORE
        )

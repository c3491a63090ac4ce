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

URLs are built from the request's ``Host`` header, which must be a host name or an IP
literal with an optional port (400 otherwise), so nothing a client sends can reach the
scripts (:mod:`tokn_router.edges.lan_scripts`) unvalidated; every value is quoted for
its shell on top of that. The scheme is ``http``: the API listener does not terminate
TLS. The fingerprint check protects the download of ``ca.crt``; users should still
compare it with the one printed at start-up, which the script shows.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio
from quart import Response, request
from werkzeug.exceptions import NotFound

from tokn_router.edges.lan_scripts import PREFIX, LanURLs, env_script
from tokn_router.edges.proxy.shellenv import SHELLS
from tokn_router.wire.errors import error_body

__all__ = ["LanInfo", "LanURLs", "env_script", "parse_host_header", "register"]


@dataclass(frozen=True)
class LanInfo:
    """What the LAN endpoints publish; set by the daemon in LAN mode only."""

    proxy_port: int | None  # None without --with-proxy
    ca_cert_path: Path  # public certificate only; the key is never served
    ca_sha256: str  # colon-separated upper-case hex, as printed at start-up


PEM_TYPE = "application/x-pem-file"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(
    rf"^(?P<host>{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?$"
)


class HostError(ValueError):
    """The Host header is not a plain host name or IP literal with an optional port."""


def parse_host_header(value: str | None) -> tuple[str, int | None]:
    """``(host, port)`` from a Host header; IPv6 without brackets. Raises HostError."""
    text = (value or "").strip()
    m = _HOST_RE.match(text) if len(text) <= 262 else None
    if m is None:
        raise HostError("the Host header must be a host name or IP address with an optional port")
    host = m.group("host").lower()
    if host.startswith("["):
        try:
            host = ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            raise HostError("the Host header holds an invalid IPv6 address") from None
    elif len(host.rstrip(".")) > 253:
        raise HostError("the Host header's name is too long")
    port_s = m.group("port")
    port = int(port_s) if port_s is not None else None
    if port is not None and not 0 < port < 65536:
        raise HostError("the Host header's port is out of range")
    return host, port


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


def register(app: Any, lan_info: Callable[[], LanInfo | None]) -> None:
    """Add the LAN routes; they answer only while ``lan_info()`` gives one (404 otherwise).

    The daemon publishes the info after building the app (and replaces it once the
    proxy port is known), so the check happens per request.
    """

    def lan_urls() -> LanURLs | Response:
        info = lan_info()
        if info is None:
            raise NotFound()
        try:
            host, port = parse_host_header(request.headers.get("host"))
            return LanURLs.build(host, port, info.proxy_port, info.ca_sha256)
        except HostError as e:
            return _json(400, error_body(400, str(e), code="invalid_host"))

    @app.get(f"{PREFIX}/bootstrap.json")
    async def lan_bootstrap() -> Response:
        urls = lan_urls()
        if isinstance(urls, Response):
            return urls
        return _json(200, msgspec.json.encode(urls.bootstrap()))

    @app.get(f"{PREFIX}/ca.crt")
    async def lan_ca_cert() -> Response:
        urls = lan_urls()
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
        urls = lan_urls()
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

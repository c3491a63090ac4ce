"""Raw TCP connections to an upstream host, through the ``[proxy]`` outbound proxy.

The MITM proxy tunnels non-intercepted ``CONNECT``s (and forwards plain ``http://``
requests) byte for byte; :func:`open_upstream` is its ``connect_upstream`` hook::

    serve_proxy(..., connect_upstream=functools.partial(open_upstream, setting))

Supported proxies (``[proxy] url``):

* ``http://[user:pass@]host:port`` — ``CONNECT host:port`` (Basic
  ``Proxy-Authorization`` when credentials are given); any byte the proxy sent after
  its response head is handed back first, so server-first protocols lose nothing.
* ``https://…`` — the same over TLS to the proxy, verified with
  :func:`tokn_router.net.client.tls_context` (system roots + ``SSL_CERT_FILE``/``DIR``).
* ``socks5://`` and ``socks5h://`` (``socksio``, sans-I/O): both send host *names* as
  a DOMAIN address, so the proxy resolves them (remote DNS), exactly as httpx does for
  the API traffic; IP literals go as IPv4/IPv6 addresses. ``user:pass@`` selects
  RFC 1929 username/password authentication.

``[proxy] system = true`` reads ``HTTPS_PROXY``/``https_proxy`` (``HTTP_PROXY`` for
port 80), then ``ALL_PROXY``, and ``NO_PROXY``, at call time. ``no_proxy`` entries
(config and ``NO_PROXY``) are bypassed with a direct connection.

Every failure is an :class:`OutboundError`: one line naming the proxy and the target.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass

import h11
import trio
from socksio import (
    ProtocolError,
    SOCKS5AType,
    SOCKS5AuthMethod,
    SOCKS5AuthMethodsRequest,
    SOCKS5AuthReply,
    SOCKS5Command,
    SOCKS5CommandRequest,
    SOCKS5Connection,
    SOCKS5Reply,
    SOCKS5ReplyCode,
    SOCKS5UsernamePasswordRequest,
)
from socksio.socks5 import SOCKS5UsernamePasswordReply

from tokn_router.errors import ToknError
from tokn_router.net import h1client
from tokn_router.net.client import ProxySetting, tls_context
from tokn_router.net.streams import PrefixedStream, TLSStream
from tokn_router.wire import hosts

__all__ = ["OutboundError", "ProxyURL", "open_upstream", "parse_proxy_url", "proxy_for"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
_MAX_HEAD = 64 * 1024
_RECEIVE_SIZE = 64 * 1024

_SOCKS_REPLIES = {
    SOCKS5ReplyCode.GENERAL_SERVER_FAILURE: "general failure",
    SOCKS5ReplyCode.CONNECTION_NOT_ALLOWED_BY_RULESET: "not allowed by ruleset",
    SOCKS5ReplyCode.NETWORK_UNREACHABLE: "network unreachable",
    SOCKS5ReplyCode.HOST_UNREACHABLE: "host unreachable",
    SOCKS5ReplyCode.CONNECTION_REFUSED: "connection refused",
    SOCKS5ReplyCode.TTL_EXPIRED: "TTL expired",
    SOCKS5ReplyCode.COMMAND_NOT_SUPPORTED: "command not supported",
    SOCKS5ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}


class OutboundError(ToknError):
    """An upstream host could not be reached directly or through the outbound proxy."""


# ------------------------------------------------------------------ proxy choice


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """A parsed outbound proxy URL (credentials already percent-decoded)."""

    scheme: str  # http | https | socks5 | socks5h
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def where(self) -> str:
        """``host:port`` for messages (never the credentials)."""
        return hosts.format_authority(self.host, self.port)


def parse_proxy_url(url: str) -> ProxyURL:
    """Split ``scheme://[user[:pass]@]host[:port]``; a bare ``host:port`` means http."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise OutboundError(f"invalid proxy URL {_redact(url)!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise OutboundError(
            f"unsupported proxy scheme '{scheme}' in {_redact(url)!r} "
            f"(use one of {', '.join(_DEFAULT_PORTS)})"
        )
    if not parts.hostname:
        raise OutboundError(f"invalid proxy URL {_redact(url)!r}: no host")
    username = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return ProxyURL(
        scheme=scheme,
        host=parts.hostname,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        username=username,
        password=password,
    )


def _redact(url: str) -> str:
    """The URL without its password (for error messages)."""
    try:
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return "<unparsable>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def _env_no_proxy_match(value: str, host: str, port: int) -> bool:
    """``NO_PROXY`` semantics shared by curl/httpx: ``*``, names, ``.suffix``, ``host:port``."""
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        # "host:port" / "[v6]:port" only match that port; bare IPv6 literals have colons too
        name, sep, p = entry.rpartition(":")
        if sep and p.isdigit() and (entry.startswith("[") or ":" not in name):
            if int(p) != port:
                continue
            entry = name
        entries.append(entry.strip("[]"))
    return ProxySetting(no_proxy=tuple(entries)).bypasses(host)


def proxy_for(setting: ProxySetting, host: str, port: int) -> str | None:
    """The proxy URL to use for ``host:port``, or None for a direct connection."""
    if setting.bypasses(host):
        return None
    if setting.url:
        return setting.url
    if not setting.use_env:
        return None
    # Read at call time: the daemon honours an environment changed by a restart only,
    # but library users and tests may set it late.
    env = urllib.request.getproxies_environment()
    no_proxy = env.get("no", "")
    if no_proxy and _env_no_proxy_match(no_proxy, host, port):
        return None
    keys = ("http", "all") if port == 80 else ("https", "all")
    for key in keys:
        if env.get(key):
            return env[key]
    return None


# ------------------------------------------------------------------- streams


def _with_prefix(stream: trio.abc.Stream, prefix: bytes) -> trio.abc.Stream:
    return PrefixedStream(stream, prefix) if prefix else stream


class _Reader:
    """Exact-length reads for the SOCKS handshake; keeps what was read beyond it."""

    def __init__(self, stream: trio.abc.Stream, what: str) -> None:
        self.stream = stream
        self.what = what
        self.buf = bytearray()

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = await self.stream.receive_some(_RECEIVE_SIZE)
            if not data:
                raise OutboundError(f"{self.what}: the proxy closed the connection mid-handshake")
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


# ------------------------------------------------------------------- helpers


def _reason(exc: BaseException) -> str:
    """The most specific human reason inside an OSError (trio groups connect attempts)."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    while isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    walk(exc.__cause__ if isinstance(exc.__cause__, BaseExceptionGroup) else exc)
    reasons: list[str] = []
    for e in leaves:
        if isinstance(e, ssl.SSLCertVerificationError):
            text = f"certificate verify failed: {e.verify_message}"
        elif isinstance(e, ssl.SSLError):
            text = e.reason or str(e)
        elif isinstance(e, OSError) and e.errno and e.errno > 0:
            text = os.strerror(e.errno)
        elif isinstance(e, OSError) and e.strerror:
            text = e.strerror
        else:
            text = str(e) or type(e).__name__
        text = " ".join(text.split())
        if text not in reasons:
            reasons.append(text)
    return "; ".join(reasons) or type(exc).__name__


async def _tcp(host: str, port: int, what: str) -> trio.SocketStream:
    try:
        return await trio.open_tcp_stream(host, port)
    except OSError as e:
        raise OutboundError(f"cannot connect to {what}: {_reason(e)}") from None


# ------------------------------------------------------------------ handshakes


async def _http_connect(
    stream: trio.abc.Stream, proxy: ProxyURL, host: str, port: int
) -> trio.abc.Stream:
    target = hosts.format_authority(host, port)
    label = f"{proxy.scheme} proxy {proxy.where}"
    headers = [("Host", target), ("User-Agent", "tokn-router")]
    if proxy.username is not None:
        token = f"{proxy.username}:{proxy.password or ''}".encode()
        headers.append(("Proxy-Authorization", "Basic " + base64.b64encode(token).decode()))
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)

    async def receive() -> bytes:
        return bytes(await stream.receive_some(_RECEIVE_SIZE))

    try:
        await stream.send_all(b"".join(h1client.encode_request(conn, "CONNECT", target, headers)))
        head = await h1client.read_head(conn, receive, "CONNECT")
    except h11.RemoteProtocolError as e:
        raise OutboundError(f"{label} sent a malformed answer to CONNECT: {e}") from None
    except h1client.NoResponse:
        raise OutboundError(f"{label} closed the connection without answering CONNECT") from None
    except (trio.BrokenResourceError, OSError) as e:
        raise OutboundError(f"{label}: connection failed during CONNECT: {_reason(e)}") from None
    response = head.response
    if not 200 <= response.status_code < 300:
        reason = response.reason.decode("latin-1", "replace").strip()
        status = f"{response.status_code} {reason}".strip()
        raise OutboundError(f"{label} refused CONNECT to {target} ({status})")
    return _with_prefix(stream, bytes(head.buffered))


def _socks_address(host: str) -> tuple[SOCKS5AType, bytes]:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        atype = SOCKS5AType.IPV4_ADDRESS if ip.version == 4 else SOCKS5AType.IPV6_ADDRESS
        return atype, ip.packed
    try:
        name = host.rstrip(".").encode("idna") if not host.isascii() else host.encode("ascii")
    except UnicodeError:
        raise OutboundError(f"cannot send host name {host!r} to a SOCKS proxy") from None
    if not 0 < len(name) <= 255:
        raise OutboundError(f"host name too long for SOCKS5: {host[:40]}…")
    return SOCKS5AType.DOMAIN_NAME, name


async def _socks5_connect(
    stream: trio.abc.Stream, proxy: ProxyURL, host: str, port: int
) -> trio.abc.Stream:
    label = f"{proxy.scheme} proxy {proxy.where}"
    target = hosts.format_authority(host, port)
    atype, addr = _socks_address(host)
    conn = SOCKS5Connection()
    reader = _Reader(stream, label)
    with_auth = proxy.username is not None
    methods = [SOCKS5AuthMethod.NO_AUTH_REQUIRED]
    if with_auth:
        methods.insert(0, SOCKS5AuthMethod.USERNAME_PASSWORD)
    try:
        conn.send(SOCKS5AuthMethodsRequest(methods))
        await stream.send_all(conn.data_to_send())
        auth = conn.receive_data(await reader.exactly(2))
        assert isinstance(auth, SOCKS5AuthReply)
        if auth.method == SOCKS5AuthMethod.USERNAME_PASSWORD:
            if not with_auth:  # a well-behaved server never picks a method we did not offer
                raise OutboundError(f"{label} demands a username and password")
            conn.send(
                SOCKS5UsernamePasswordRequest(
                    (proxy.username or "").encode(), (proxy.password or "").encode()
                )
            )
            await stream.send_all(conn.data_to_send())
            verdict = conn.receive_data(await reader.exactly(2))
            assert isinstance(verdict, SOCKS5UsernamePasswordReply)
            if not verdict.success:
                raise OutboundError(f"{label} rejected the username/password")
        elif auth.method != SOCKS5AuthMethod.NO_AUTH_REQUIRED:
            need = "" if with_auth else " (it may need user:pass@ in [proxy] url)"
            raise OutboundError(f"{label} accepts none of our authentication methods{need}")
        conn.send(SOCKS5CommandRequest(SOCKS5Command.CONNECT, atype, addr, port))
        await stream.send_all(conn.data_to_send())
        head = await reader.exactly(4)
        rtype = head[3:4]
        if rtype == SOCKS5AType.IPV4_ADDRESS:
            rest = await reader.exactly(4 + 2)
        elif rtype == SOCKS5AType.IPV6_ADDRESS:
            rest = await reader.exactly(16 + 2)
        elif rtype == SOCKS5AType.DOMAIN_NAME:
            size = await reader.exactly(1)
            rest = size + await reader.exactly(size[0] + 2)
        else:
            raise OutboundError(f"{label} sent a malformed CONNECT reply")
        reply = conn.receive_data(head + rest)
        assert isinstance(reply, SOCKS5Reply)
    except ProtocolError:
        raise OutboundError(f"{label} sent a malformed SOCKS5 reply") from None
    except (trio.BrokenResourceError, OSError) as e:
        raise OutboundError(
            f"{label}: connection failed during the handshake: {_reason(e)}"
        ) from None
    if reply.reply_code != SOCKS5ReplyCode.SUCCEEDED:
        why = _SOCKS_REPLIES.get(reply.reply_code, f"code {reply.reply_code[0]}")
        raise OutboundError(f"{label} refused CONNECT to {target} ({why})")
    return _with_prefix(stream, bytes(reader.buf))


# ----------------------------------------------------------------------- API


async def open_upstream(
    setting: ProxySetting,
    host: str,
    port: int,
    *,
    timeout: float = 30,  # noqa: ASYNC109 (one bound for the whole set-up, in the message)
    ssl_context: ssl.SSLContext | None = None,
) -> trio.abc.Stream:
    """A raw byte stream to ``host:port``, direct or through the outbound proxy.

    ``timeout`` bounds the whole set-up (TCP connect, TLS to an https proxy, the
    CONNECT/SOCKS handshake). ``ssl_context`` verifies an ``https://`` proxy (default
    :func:`tokn_router.net.client.tls_context`). Raises :class:`OutboundError`.
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    target = hosts.format_authority(host, port)
    url = proxy_for(setting, host, port)
    proxy = parse_proxy_url(url) if url else None
    where = f"{target} via {proxy.scheme} proxy {proxy.where}" if proxy else target
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(timeout):
            if proxy is None:
                return await _tcp(host, port, target)
            stream = await _tcp(proxy.host, proxy.port, f"{proxy.scheme} proxy {proxy.where}")
            if proxy.scheme == "https":
                tls = TLSStream(stream, ssl_context or tls_context(), server_hostname=proxy.host)
                stream = tls
                try:
                    await tls.do_handshake()
                except (trio.BrokenResourceError, OSError) as e:
                    cause = e.__cause__ if isinstance(e, trio.BrokenResourceError) else e
                    raise OutboundError(
                        f"TLS to https proxy {proxy.where} failed: {_reason(cause or e)}"
                    ) from None
            if proxy.scheme in ("http", "https"):
                return await _http_connect(stream, proxy, host, port)
            return await _socks5_connect(stream, proxy, host, port)
    except trio.TooSlowError:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise OutboundError(f"timed out after {timeout:g}s connecting to {where}") from None
    except BaseException:
        if stream is not None:
            with contextlib.suppress(Exception):
                await trio.aclose_forcefully(stream)
        raise

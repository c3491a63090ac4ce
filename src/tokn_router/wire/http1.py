"""Sans-I/O HTTP/1.1 for the proxy's client side, on top of h11.

Two jobs, neither of which touches a socket:

* :func:`classify` decides what the first request on a proxy connection asks for:
  ``CONNECT host:port`` (tunnel or MITM), an absolute-form ``http://host/path``
  (forward), or an origin-form request to the proxy itself (the help page); plus the
  ``Proxy-Authorization: Basic`` user name, which selects a route mode
  (``http://passthrough@127.0.0.1:4142``).
* :class:`ServerConnection` turns received bytes into request events (head, body
  chunks, end; keep-alive, chunked request bodies, ``Expect: 100-continue``) and
  response calls into bytes to send. Each body chunk becomes its own write, so a
  streamed (SSE) response is never held back.

The I/O loop lives in :mod:`tokn_router.edges.proxy.listener`.

It is one module of over 400 lines because the request classification, the head
limits and the server connection state machine state one set of rules together.
"""

from __future__ import annotations

import base64
import binascii
import enum
import http
from collections.abc import Iterable
from dataclasses import dataclass

import h11

from tokn_router.wire import hosts

__all__ = [
    "HTTP_VERSIONS",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_REQUEST_LINE",
    "NEED_DATA",
    "PAUSED",
    "Body",
    "ConnectionClosed",
    "EndOfRequest",
    "Headers",
    "ProxyProtocolError",
    "ProxyRequest",
    "RequestHead",
    "RequestKind",
    "ServerConnection",
    "classify",
    "head_problem",
    "origin_path",
    "parse_authority",
    "proxy_username",
]

Headers = tuple[tuple[str, str], ...]
"""Header pairs in order; names lower-case (as h11 gives them), values latin-1 decoded."""

HeaderInput = Iterable[tuple[str | bytes, str | bytes]]

# The request-head limits of both listeners (the API listener checks the same in
# tokn_router.edges.api). 64 KiB is what hypercorn is given as its h11 buffer (see
# tokn_router.daemon); h11 enforces it only while a head is incomplete, so a whole
# head that arrives in one read is measured again here.
MAX_HEAD_BYTES = 64 * 1024
MAX_REQUEST_LINE = 8 * 1024  # Apache's and nginx's default; API URLs are short
MAX_HEADERS = 100  # Apache's LimitRequestFields, Python's http.client
HTTP_VERSIONS = frozenset({"1.0", "1.1"})

# Hop-by-hop headers (RFC 9110 §7.6.1) that must not be copied from an upstream
# response: framing and connection management are h11's job on *this* connection.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    }
)


class ProxyProtocolError(Exception):
    """The client sent something unusable; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    headers: Headers
    http_version: str

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive)."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), default)


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfRequest:
    pass


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The client closed (cleanly, between requests)."""


class _Sentinel(enum.Enum):
    NEED_DATA = "need-data"
    PAUSED = "paused"


NEED_DATA = _Sentinel.NEED_DATA
"""Feed more bytes with :meth:`ServerConnection.receive_data`."""
PAUSED = _Sentinel.PAUSED
"""Nothing more until the response is sent (after CONNECT: until the switch)."""

Event = RequestHead | Body | EndOfRequest | ConnectionClosed | _Sentinel


# ---------------------------------------------------------------- classification


class RequestKind(enum.Enum):
    CONNECT = "connect"  # CONNECT host:port
    FORWARD = "forward"  # GET http://host[:port]/path
    ORIGIN = "origin"  # GET /path addressed to the proxy itself


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    kind: RequestKind
    host: str  # normalised, lower-case, IPv6 without brackets; "" for ORIGIN
    port: int  # 0 for ORIGIN
    path: str  # origin-form path + query for FORWARD/ORIGIN; "" for CONNECT
    username: str | None  # from Proxy-Authorization: Basic
    # the raw Proxy-Authorization value: it may carry a client key (tokn_router.clients)
    proxy_authorization: str | None = None


def parse_authority(authority: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` → (host, port) in canonical form (:mod:`.hosts`).

    Without ``default_port`` the port is required (a CONNECT target). Labels may
    exceed DNS's 63 characters: such a name fails later, at resolution or when
    its certificate is made, where the listener reports it.
    """
    try:
        host, port = hosts.parse_authority(authority, default_port, dns_labels=False)
    except hosts.HostError as e:
        raise ProxyProtocolError(str(e)) from None
    if port is None:
        raise ProxyProtocolError(f"missing port in {authority!r}")
    return host, port


def proxy_username(headers: Headers) -> str | None:
    """The user name of ``Proxy-Authorization: Basic``; None without one.

    The user name is a route mode selector; the password may hold a client key
    (:mod:`tokn_router.clients.extract` reads it). A malformed Basic header is a
    client bug worth a 400 rather than a silently ignored mode.
    """
    value = next((v for k, v in headers if k == "proxy-authorization"), None)
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ProxyProtocolError("malformed Proxy-Authorization header") from None
    username = decoded.partition(":")[0]
    return username or None


def origin_path(target: str) -> str:
    """Path + query of a request target; absolute-form targets are reduced to it."""
    if target.startswith("/"):
        return target
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        slash = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        path = rest[slash:]
        return path if path.startswith("/") else "/" + path
    if target == "*":
        return target
    raise ProxyProtocolError(f"unsupported request target {target!r}")


def classify(head: RequestHead) -> ProxyRequest:
    """What the first request on a proxy connection asks for."""
    username = proxy_username(head.headers)
    auth = next((v for k, v in head.headers if k == "proxy-authorization"), None)
    target = head.target
    if head.method == "CONNECT":
        host, port = parse_authority(target)
        return ProxyRequest(RequestKind.CONNECT, host, port, "", username, auth)
    if target.startswith("/") or target == "*":
        return ProxyRequest(RequestKind.ORIGIN, "", 0, target, username, auth)
    scheme, sep, rest = target.partition("://")
    if not sep:
        raise ProxyProtocolError(f"unsupported request target {target!r}")
    if scheme.lower() == "https":
        # Clients tunnel https with CONNECT; an absolute https:// URL would mean we
        # originate TLS for them, which no mainstream client asks a proxy to do.
        raise ProxyProtocolError("use CONNECT for https:// URLs")
    if scheme.lower() != "http":
        raise ProxyProtocolError(f"unsupported URL scheme {scheme!r}")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    if "@" in authority:
        raise ProxyProtocolError("user info in the request URL is not supported")
    host, port = parse_authority(authority, default_port=80)
    if not path.startswith("/"):
        path = "/" + path
    return ProxyRequest(RequestKind.FORWARD, host, port, path, username, auth)


# ------------------------------------------------------------------- limits


def head_problem(
    method: str | bytes,
    target_length: int,
    http_version: str,
    headers: Iterable[tuple[str | bytes, str | bytes]],
    *,
    versions: frozenset[str] = HTTP_VERSIONS,
    max_head: int = MAX_HEAD_BYTES,
) -> tuple[int, str] | None:
    """Why a parsed request head is refused, as ``(status, message)``; None if it is fine.

    400 for an HTTP version not in ``versions`` (never a 5xx for a client's input), 414 for a request line over
    :data:`MAX_REQUEST_LINE`, 431 for more than :data:`MAX_HEADERS` header fields
    or a head over ``max_head`` bytes. Sizes are of the head as written on
    the wire (``name: value`` lines with CRLF), whatever reads it arrived in.
    """
    if http_version not in versions:
        return 400, f"HTTP version {http_version[:16]!r} is not supported"
    line = len(method) + target_length + len(" HTTP/x.x\r\n") + 1
    if line > MAX_REQUEST_LINE:
        return 414, f"request line longer than {MAX_REQUEST_LINE} bytes"
    size, count = line + 2, 0
    for name, value in headers:
        size += len(name) + len(value) + 4
        count += 1
    if count > MAX_HEADERS:
        return 431, f"more than {MAX_HEADERS} header fields"
    if size > max_head:
        return 431, f"request head larger than {max_head} bytes"
    return None


# ------------------------------------------------------------------- connection


def _encode(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def _decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    return tuple((k.decode("ascii"), v.decode("latin-1")) for k, v in raw)


def response_headers(headers: HeaderInput) -> list[tuple[bytes, bytes]]:
    """Headers safe to send on this connection.

    Hop-by-hop headers are dropped so h11 picks the framing: ``Content-Length`` when
    given, otherwise chunked for HTTP/1.1 clients (close-delimited for 1.0). A body
    handed to us is always de-chunked payload, never upstream's chunk framing.
    ``Connection: close`` survives, so a handler can end the connection.
    """
    out: list[tuple[bytes, bytes]] = []
    for k, v in headers:
        name = _encode(k).lower()
        value = _encode(v)
        if name == b"connection":
            if b"close" in value.lower():
                out.append((b"connection", b"close"))
            continue
        if name.decode("latin-1") in _HOP_BY_HOP:
            continue
        out.append((name, value))
    return out


# A documented h11 state that h11's type stubs do not re-export.
_MIGHT_SWITCH_PROTOCOL = h11.MIGHT_SWITCH_PROTOCOL  # type: ignore[attr-defined]


class ServerConnection:
    """One client connection, server side, as events in and bytes out."""

    def __init__(self, *, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self._max_head = max_head_bytes
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_bytes)

    # --------------------------------------------------------------- receiving

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; ``b""`` means the client closed its side."""
        self._h11.receive_data(data)

    def next_event(self) -> Event:
        try:
            ev = self._h11.next_event()
        except h11.RemoteProtocolError as e:
            # h11 hints 501 for a transfer coding it does not know: still the
            # client's mistake, and a 5xx is never the answer to one
            status = e.error_status_hint if e.error_status_hint < 500 else 400
            if status == 431:
                # h11's buffer limit: say which part of the head was too long
                buffered = self._h11.trailing_data[0]
                if b"\n" not in buffered[:MAX_REQUEST_LINE]:
                    raise ProxyProtocolError(
                        f"request line longer than {MAX_REQUEST_LINE} bytes", 414
                    ) from None
                raise ProxyProtocolError(
                    f"request head larger than {self._max_head} bytes", 431
                ) from None
            raise ProxyProtocolError(str(e) or "malformed request", status) from None
        if ev is h11.NEED_DATA:
            return NEED_DATA
        if ev is h11.PAUSED:
            return PAUSED
        if isinstance(ev, h11.Request):
            try:
                target = ev.target.decode("ascii")
                method = ev.method.decode("ascii")
            except UnicodeDecodeError:
                raise ProxyProtocolError("non-ASCII request line") from None
            version = ev.http_version.decode("ascii")
            problem = head_problem(
                ev.method, len(ev.target), version, ev.headers, max_head=self._max_head
            )
            if problem is not None:
                raise ProxyProtocolError(problem[1], problem[0])
            return RequestHead(
                method=method,
                target=target,
                headers=_decode_headers(ev.headers),
                http_version=version,
            )
        if isinstance(ev, h11.Data):
            return Body(bytes(ev.data))
        if isinstance(ev, h11.EndOfMessage):
            return EndOfRequest()
        if isinstance(ev, h11.ConnectionClosed):
            return ConnectionClosed()
        raise AssertionError(f"unexpected h11 event {ev!r}")  # pragma: no cover

    @property
    def request_complete(self) -> bool:
        """The whole current request (head and body) has been received."""
        # MUST_CLOSE: a complete request that carried "Connection: close" (or HTTP/1.0).
        return self._h11.their_state in (
            h11.DONE,
            h11.MUST_CLOSE,
            h11.CLOSED,
            _MIGHT_SWITCH_PROTOCOL,
            h11.SWITCHED_PROTOCOL,
        )

    @property
    def client_closed(self) -> bool:
        return self._h11.their_state is h11.CLOSED

    # ----------------------------------------------------------------- sending

    @property
    def response_started(self) -> bool:
        return self._h11.our_state is not h11.SEND_RESPONSE and self._h11.our_state is not h11.IDLE

    @property
    def response_complete(self) -> bool:
        return self._h11.our_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.SWITCHED_PROTOCOL)

    def continue_100(self) -> bytes:
        """``100 Continue`` if the client waits for it before sending its body, else ``b""``."""
        if self._h11.they_are_waiting_for_100_continue and not self.response_started:
            return self._h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
        return b""

    def response(self, status: int, headers: HeaderInput = (), reason: str = "") -> bytes:
        if not reason:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = ""
        return (
            self._h11.send(
                h11.Response(
                    status_code=status,
                    headers=response_headers(headers),
                    reason=reason.encode("latin-1"),
                )
            )
            or b""
        )

    def body(self, data: bytes) -> bytes:
        if not data:
            return b""  # a zero-length chunk would terminate a chunked body
        return self._h11.send(h11.Data(data=data)) or b""

    def end(self) -> bytes:
        return self._h11.send(h11.EndOfMessage()) or b""

    def simple_response(
        self,
        status: int,
        text: str,
        *,
        close: bool = False,
        content_type: str = "text/plain; charset=utf-8",
    ) -> bytes:
        """A complete small response (help page, error); ``b""`` if one was already started."""
        if self.response_started:
            return b""
        body = text.encode("utf-8")
        headers: list[tuple[str | bytes, str | bytes]] = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
        ]
        if close:
            headers.append(("connection", "close"))
        return self.response(status, headers) + self.body(body) + self.end()

    def connect_established(self) -> bytes:
        """The 200 answer to CONNECT; afterwards the connection carries raw bytes."""
        data = self.response(200, [], reason="Connection Established")
        if self._h11.our_state is not h11.SWITCHED_PROTOCOL:  # pragma: no cover - h11 invariant
            raise AssertionError("CONNECT did not switch protocols")
        return data

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the CONNECT head (e.g. an eager TLS ClientHello)."""
        return self._h11.trailing_data[0]

    def start_next_cycle(self) -> bool:
        """Reset for the next keep-alive request; False when the connection must close."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

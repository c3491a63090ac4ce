"""One HTTP/1.1 exchange inside a proxy connection: what a handler sees and sends.

:class:`ProxyRequestContext` is the request (head, body as a stream) and the way
to answer it, over the sans-I/O :class:`~tokn_router.wire.http1.ServerConnection`;
:func:`relay_request` forwards a request to an origin we do not intercept. The
listener (:mod:`tokn_router.edges.proxy.listener`) owns the connections and
hands each request over.

It is one module of over 400 lines because the request side, the answer side and the
relay to an origin share one h11 connection's state.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator

import h11
import trio

from tokn_router.net import h1client
from tokn_router.wire.http1 import (
    NEED_DATA,
    Body,
    ConnectionClosed,
    EndOfRequest,
    HeaderInput,
    Headers,
    ProxyProtocolError,
    RequestHead,
    ServerConnection,
    response_headers,
)

__all__ = [
    "CLIENT_ERRORS",
    "DRAIN_LIMIT",
    "RECEIVE_SIZE",
    "ProxyRequestContext",
    "Reader",
    "UpstreamFailed",
    "describe",
    "is_client_error",
    "relay_request",
]

log = logging.getLogger("tokn_router.proxy")

# Errors that mean "this client (or its upstream) misbehaved or went away": logged at
# debug, never fatal to the listener. ssl.SSLError is an OSError; h11's remote errors
# are mapped to ProxyProtocolError by http1.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    OSError,
    ProxyProtocolError,
    h11.RemoteProtocolError,
)


def is_client_error(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(is_client_error(e) for e in exc.exceptions)
    return isinstance(exc, CLIENT_ERRORS)


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        text += f" ({describe(cause)})"
    return text


RECEIVE_SIZE = 64 * 1024
# An unread request body is drained (discarded) up to this size to keep the connection
# alive; beyond it, closing is cheaper than reading.
DRAIN_LIMIT = 1024 * 1024


class Reader:
    """Pulls request events from a stream through a :class:`ServerConnection`."""

    def __init__(self, stream: trio.abc.Stream, conn: ServerConnection) -> None:
        self.stream = stream
        self.conn = conn

    async def next_event(
        self, max_wait: float
    ) -> RequestHead | Body | EndOfRequest | ConnectionClosed:
        while True:
            ev = self.conn.next_event()
            if ev is NEED_DATA:
                # The timeout bounds each wait for bytes, not the whole message: a slow
                # but steady upload is fine, a client that stops sending is not.
                # (A TLS client that closes without close_notify reads as EOF here:
                # HTTP framing tells a clean close from a truncated request.)
                with trio.fail_after(max_wait):
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                self.conn.receive_data(bytes(data))
                continue
            if isinstance(ev, RequestHead | Body | EndOfRequest | ConnectionClosed):
                return ev
            # PAUSED: the client pipelined another request before we answered; h11
            # holds it until start_next_cycle. Never reached while reading a request.
            raise ProxyProtocolError("unexpected pipelined data")

    async def next_head(self, max_wait: float) -> RequestHead | None:
        """The next request head, or None when the client closed between requests.

        ``max_wait`` bounds the whole head, so a client trickling a byte at a time
        cannot hold the connection open. Garbage is answered 400, then raised.
        """
        try:
            with trio.fail_after(max_wait):
                ev = await self.next_event(math.inf)
        except ProxyProtocolError as e:
            await self.send_error(e.status, f"bad request: {e}")
            raise
        if isinstance(ev, ConnectionClosed):
            return None
        if not isinstance(ev, RequestHead):  # pragma: no cover - h11 invariant
            raise ProxyProtocolError("request body without a head")
        return ev

    async def send_error(self, status: int, text: str) -> None:
        """Best effort: the client may already be gone."""
        data = b""
        try:
            data = self.conn.simple_response(status, text + "\n", close=True)
        except h11.LocalProtocolError:
            return  # h11 cannot answer in this state (e.g. nothing was parsed)
        if data:
            with contextlib.suppress(*CLIENT_ERRORS):
                await self.stream.send_all(data)

    async def finish_cycle(self, max_wait: float) -> bool:
        """Prepare for the next keep-alive request; False when the connection must close."""
        drained = 0
        while not self.conn.request_complete and not self.conn.client_closed:
            ev = await self.next_event(max_wait)
            if isinstance(ev, Body):
                drained += len(ev.data)
                if drained > DRAIN_LIMIT:
                    return False
            elif isinstance(ev, ConnectionClosed):
                return False
        return self.conn.start_next_cycle()


# -------------------------------------------------------------- request context


class ProxyRequestContext:
    """One request arriving through the proxy, handed to the route-mode handler.

    The handler reads the body (optional) and answers through :meth:`start_response`,
    :meth:`send` (each call is written to the client at once: SSE stays unbuffered)
    and :meth:`end_response`, or with :meth:`respond` in one go. Call the send methods
    from one task at a time. A handler that returns after ``start_response`` without
    ``end_response`` gets the response ended for it; one that returns (or raises)
    without starting a response makes the proxy answer 502 and close the connection.
    An unread body is drained afterwards so the connection can be reused.
    """

    def __init__(
        self,
        *,
        stream: trio.abc.Stream,
        reader: Reader,
        head: RequestHead,
        host: str,
        port: int,
        scheme: str,
        path: str,
        username: str | None,
        absolute_form: bool,
        client: tuple[str, int] | None,
        idle_timeout: float,
        close: bool = False,
    ) -> None:
        self.host = host
        """Target host from CONNECT or the absolute URL (lower-case, IPv6 unbracketed)."""
        self.port = port
        self.scheme = scheme
        """``https`` inside a TLS-terminated CONNECT, else ``http``."""
        self.method = head.method
        self.target = head.target
        """The request target exactly as received."""
        self.path = path
        """Origin-form path and query, e.g. ``/v1/chat/completions?x=1``."""
        self.headers: Headers = head.headers
        self.http_version = head.http_version
        self.proxy_username = username
        """User name of the proxy's Basic credentials (route-mode selector), or None."""
        self.proxy_authorization: str | None = None
        """The ``Proxy-Authorization`` the client sent to the proxy (on its CONNECT for a
        request inside a tunnel); it may carry a client key."""
        self.absolute_form = absolute_form
        """True for a plain ``http://`` absolute-form request (no CONNECT)."""
        self.client = client
        self._stream = stream
        self._reader = reader
        self._conn = reader.conn
        self._idle_timeout = idle_timeout
        self._close = close  # the connection ends with this response: say so in it
        self._body_done = False
        self._finished = False
        self._detached = False

    def __repr__(self) -> str:
        return f"<ProxyRequestContext {self.method} {self.url}>"

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive)."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), default)

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.path}"

    # ------------------------------------------------------------------- body

    async def _next_chunk(self) -> bytes | None:
        self._check_live()
        if self._body_done:
            return None
        # curl and others hold back large bodies until "100 Continue"; send it the
        # moment somebody actually wants the body.
        interim = self._conn.continue_100()
        if interim:
            await self._stream.send_all(interim)
        while True:
            ev = await self._reader.next_event(self._idle_timeout)
            if isinstance(ev, Body):
                if ev.data:
                    return ev.data
                continue
            if isinstance(ev, EndOfRequest):
                self._body_done = True
                return None
            raise ProxyProtocolError("client closed the connection mid-request")

    def iter_body(self) -> AsyncIterator[bytes]:
        """The request body as it arrives (de-chunked)."""
        return _BodyIterator(self)

    async def read_body(self, limit: int | None = None) -> bytes:
        """The whole body; ProxyProtocolError(413) past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while (chunk := await self._next_chunk()) is not None:
            size += len(chunk)
            if limit is not None and size > limit:
                raise ProxyProtocolError(f"request body larger than {limit} bytes", 413)
            parts.append(chunk)
        return b"".join(parts)

    # --------------------------------------------------------------- response

    @property
    def response_started(self) -> bool:
        return self._conn.response_started

    @property
    def response_finished(self) -> bool:
        return self._finished

    async def start_response(
        self, status: int, headers: HeaderInput = (), *, reason: str = ""
    ) -> None:
        """Send the status line and headers now.

        Hop-by-hop headers are dropped and framing is chosen here: keep
        ``Content-Length`` when known, otherwise the body goes out chunked. Pass
        de-chunked payload to :meth:`send`, never upstream's chunk framing.
        """
        self._check_live()
        if self.response_started:
            raise RuntimeError("response already started")
        if self._close:
            headers = [*headers, ("connection", "close")]
        await self._stream.send_all(self._conn.response(status, headers, reason))

    async def send(self, data: bytes) -> None:
        """Write one body chunk to the client immediately (no buffering)."""
        self._check_live()
        out = self._conn.body(data)
        if out:
            await self._stream.send_all(out)

    async def end_response(self) -> None:
        self._check_live()
        if self._finished:
            return
        self._finished = True
        await self._stream.send_all(self._conn.end())

    async def respond(self, status: int, headers: HeaderInput = (), body: bytes = b"") -> None:
        """A complete response with ``Content-Length``."""
        hdrs = [(k, v) for k, v in response_headers(headers) if k != b"content-length"]
        hdrs.append((b"content-length", str(len(body)).encode()))
        await self.start_response(status, hdrs)
        if self.method != "HEAD":  # HEAD: the length is announced, no body is sent
            await self.send(body)
        await self.end_response()

    def _check_live(self) -> None:
        if self._detached:
            raise RuntimeError("the request is over; the handler returned already")


class _BodyIterator(AsyncIterator[bytes]):
    # A class rather than an async generator: an abandoned async generator is
    # finalised at an arbitrary later point, outside this connection's task.
    def __init__(self, ctx: ProxyRequestContext) -> None:
        self._ctx = ctx

    async def __anext__(self) -> bytes:
        chunk = await self._ctx._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


# ---------------------------------------------------------------- forwarding

_REQUEST_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "te",
        "trailer",
    }
)


class UpstreamFailed(Exception):
    """Upstream could not be reached or failed before answering; the proxy replies 502.

    A handler may raise it (or let :func:`relay_request` raise it) to get that 502.
    """


async def relay_request(
    ctx: ProxyRequestContext, upstream: trio.abc.Stream, *, read_timeout: float = 300.0
) -> None:
    """Send ``ctx``'s request over ``upstream`` (HTTP/1.1) and stream the answer back.

    The request goes out as origin-form with the client's headers (minus hop-by-hop
    and ``Proxy-*``) and ``Connection: close``; each response chunk is written to the
    client as it arrives. Raises ``UpstreamFailed`` (answered 502 by the caller) when
    upstream fails before the response started.
    """
    conn = h11.Connection(h11.CLIENT)
    te = (ctx.header("transfer-encoding") or "").lower()
    length = ctx.header("content-length")
    headers = [(k, v) for k, v in ctx.headers if k not in _REQUEST_HOP_BY_HOP]
    if ctx.absolute_form or not any(k == "host" for k, _ in headers):
        # RFC 9112 §3.2.2: for an absolute-form target the URL's authority is the Host.
        headers = [("host", ctx.authority)] + [(k, v) for k, v in headers if k != "host"]
    if "chunked" in te:
        headers.append(("transfer-encoding", "chunked"))
    elif length is not None:
        headers.append(("content-length", length))
    headers.append(("connection", "close"))
    try:
        head_bytes = h1client.encode_request(conn, ctx.method, ctx.path, headers, None)
        await upstream.send_all(b"".join(head_bytes))
        async for chunk in ctx.iter_body():
            await upstream.send_all(conn.send(h11.Data(data=chunk)) or b"")
        await upstream.send_all(conn.send(h11.EndOfMessage()) or b"")
    except (
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        OSError,
        h11.LocalProtocolError,
    ) as e:
        raise UpstreamFailed(f"sending the request failed: {describe(e)}") from e

    async def receive() -> bytes:
        with trio.fail_after(read_timeout):
            return bytes(await upstream.receive_some(RECEIVE_SIZE))

    try:
        head = await h1client.read_head(conn, receive, ctx.method)
    except h1client.NoResponse:
        raise UpstreamFailed("upstream closed the connection without a response") from None
    except (
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        OSError,
        trio.TooSlowError,
        h11.RemoteProtocolError,
    ) as e:
        raise UpstreamFailed(f"reading the response failed: {describe(e)}") from e
    response = head.response
    await ctx.start_response(
        response.status_code, list(response.headers), reason=response.reason.decode("latin-1")
    )
    decoder = h1client.BodyDecoder(head.framing, head.length)
    data = head.buffered
    while not decoder.done:
        if not data:
            data = await receive()
            if not data:
                try:
                    decoder.eof()
                except h1client.BodyError:
                    raise trio.BrokenResourceError("upstream closed mid-response") from None
                break
        try:
            out = decoder.feed(data)
        except h1client.BodyError as e:
            raise trio.BrokenResourceError(f"upstream broke the response framing: {e}") from None
        data = b""
        if out:
            await ctx.send(out)
        if decoder.error is not None:
            raise trio.BrokenResourceError(f"upstream broke the response framing: {decoder.error}")
    await ctx.end_response()


# ---------------------------------------------------------------------- proxy

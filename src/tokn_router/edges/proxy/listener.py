"""The MITM forward proxy listener on raw trio sockets.

Per client connection:

* ``CONNECT host:port`` to an intercepted host: answer ``200 Connection Established``,
  terminate TLS with a leaf from the :class:`~tokn_router.edges.proxy.ca.CertStore` (warmed
  in a worker thread first, so the synchronous SNI callback hits the cache), then hand
  each HTTP/1.1 request inside to ``handler`` as a :class:`ProxyRequestContext`.
  A tunnel whose first byte is not a TLS record is served as plain HTTP instead.
* ``CONNECT`` to any other host: connect with ``connect_upstream`` (direct by default;
  the outbound HTTP/SOCKS proxy plugs in here), then relay bytes both ways untouched.
* Absolute-form ``GET http://host/path``: intercepted hosts go to ``handler``
  (``ctx.absolute_form`` is set), others are forwarded by :func:`relay_request`.
* Origin-form ``GET /``: the help text.

Every per-connection failure (garbage, TLS errors, clients vanishing mid-handshake,
timeouts) is caught and logged at debug level: ``trio.serve_tcp`` would otherwise let
one bad client take down the listener and every other connection with it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import h11
import trio

from tokn_router.net import h1client
from tokn_router.net.streams import PrefixedStream, TLSStream
from tokn_router.wire.http1 import (
    NEED_DATA,
    Body,
    ConnectionClosed,
    EndOfRequest,
    HeaderInput,
    Headers,
    ProxyProtocolError,
    ProxyRequest,
    RequestHead,
    RequestKind,
    ServerConnection,
    classify,
    origin_path,
    response_headers,
)

if TYPE_CHECKING:
    # the daemon hands the store in; importing it here would load cryptography
    # (~30 ms) at every start-up, with or without the proxy
    from tokn_router.edges.proxy.ca import CertStore

__all__ = [
    "ConnectUpstream",
    "Handler",
    "Intercept",
    "ProxyRequestContext",
    "UpstreamFailed",
    "open_direct",
    "relay_request",
    "serve_proxy",
]

log = logging.getLogger("tokn_router.proxy")

Intercept = Callable[[str, int], bool]
ConnectUpstream = Callable[[str, int], Awaitable[trio.abc.Stream]]
Handler = Callable[["ProxyRequestContext"], Awaitable[None]]

RECEIVE_SIZE = 64 * 1024
# An unread request body is drained (discarded) up to this size to keep the connection
# alive; beyond it, closing is cheaper than reading.
DRAIN_LIMIT = 1024 * 1024
# Bound on the polite TLS close_notify at the end of an intercepted connection.
TLS_CLOSE_TIMEOUT = 1.0

# Errors that mean "this client (or its upstream) misbehaved or went away": logged at
# debug, never fatal to the listener. ssl.SSLError is an OSError; h11's remote errors
# are mapped to ProxyProtocolError by http1.
_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    OSError,
    ProxyProtocolError,
    h11.RemoteProtocolError,
)


def _is_client_error(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_client_error(e) for e in exc.exceptions)
    return isinstance(exc, _CLIENT_ERRORS)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        text += f" ({_describe(cause)})"
    return text


async def open_direct(host: str, port: int) -> trio.abc.Stream:
    """The default ``connect_upstream``: a direct TCP connection."""
    return await trio.open_tcp_stream(host, port)


# --------------------------------------------------------------------- streams


class _Reader:
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
            with contextlib.suppress(*_CLIENT_ERRORS):
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
        reader: _Reader,
        head: RequestHead,
        host: str,
        port: int,
        scheme: str,
        path: str,
        username: str | None,
        absolute_form: bool,
        client: tuple[str, int] | None,
        idle_timeout: float,
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
        self.absolute_form = absolute_form
        """True for a plain ``http://`` absolute-form request (no CONNECT)."""
        self.client = client
        self._stream = stream
        self._reader = reader
        self._conn = reader.conn
        self._idle_timeout = idle_timeout
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
        raise UpstreamFailed(f"sending the request failed: {_describe(e)}") from e

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
        raise UpstreamFailed(f"reading the response failed: {_describe(e)}") from e
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


class _Proxy:
    def __init__(
        self,
        *,
        intercept: Intercept,
        handler: Handler,
        certstore: CertStore,
        connect_upstream: ConnectUpstream,
        help_text: str | Callable[[], str],
        head_timeout: float,
        idle_timeout: float,
        connect_timeout: float,
    ) -> None:
        self.intercept = intercept
        self.handler = handler
        self.certstore = certstore
        self.connect_upstream = connect_upstream
        self.help_text = help_text
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout

    async def handle(self, stream: trio.SocketStream) -> None:
        """serve_tcp's per-connection handler: nothing may escape from here."""
        peer = _peer(stream)
        try:
            await self._serve(stream, peer)
        except Exception as exc:
            if _is_client_error(exc):
                log.debug("proxy client %s: %s", _fmt_peer(peer), _describe(exc))
            else:
                log.warning("proxy client %s: unexpected error", _fmt_peer(peer), exc_info=exc)

    # ------------------------------------------------------ proxy connection

    async def _serve(self, stream: trio.abc.Stream, peer: tuple[str, int] | None) -> None:
        reader = _Reader(stream, ServerConnection())
        timeout = self.head_timeout  # a fresh connection must speak within this
        while True:
            head = await reader.next_head(timeout)
            if head is None:
                return
            try:
                req = classify(head)
            except ProxyProtocolError as e:
                await reader.send_error(e.status, f"bad request: {e}")
                raise
            if req.kind is RequestKind.CONNECT:
                # Consume the (empty) body so h11 sees a complete request before the
                # 200 switches the connection to raw bytes.
                if not isinstance(await reader.next_event(timeout), EndOfRequest):
                    await reader.send_error(400, "bad request: CONNECT with a body")
                    raise ProxyProtocolError("CONNECT with a body")
                await self._connect(stream, reader, req, peer)
                return
            if req.kind is RequestKind.ORIGIN:
                await self._help(reader, head)
            else:
                ctx = self._context(
                    stream,
                    reader,
                    head,
                    req.host,
                    req.port,
                    "http",
                    req.path,
                    req.username,
                    True,
                    peer,
                )
                handler = self.handler if self.intercept(req.host, req.port) else self._forward
                if not await self._dispatch(ctx, handler):
                    return
            if not await reader.finish_cycle(self.idle_timeout):
                return
            timeout = self.idle_timeout

    def _context(
        self,
        stream: trio.abc.Stream,
        reader: _Reader,
        head: RequestHead,
        host: str,
        port: int,
        scheme: str,
        path: str,
        username: str | None,
        absolute_form: bool,
        peer: tuple[str, int] | None,
    ) -> ProxyRequestContext:
        return ProxyRequestContext(
            stream=stream,
            reader=reader,
            head=head,
            host=host,
            port=port,
            scheme=scheme,
            path=path,
            username=username,
            absolute_form=absolute_form,
            client=peer,
            idle_timeout=self.idle_timeout,
        )

    async def _help(self, reader: _Reader, head: RequestHead) -> None:
        text = self.help_text() if callable(self.help_text) else self.help_text
        if head.method in ("GET", "HEAD") and head.target.split("?")[0] == "/":
            data = reader.conn.simple_response(200, text)
        else:
            data = reader.conn.simple_response(404, "not found: this is an HTTP proxy\n\n" + text)
        await reader.stream.send_all(data)

    async def _dispatch(self, ctx: ProxyRequestContext, handler: Handler) -> bool:
        """Run ``handler`` for one request; True if the connection can serve another."""
        try:
            await handler(ctx)
            if not ctx.response_started:
                log.warning("%s: handler returned without a response", ctx.url)
                await ctx._reader.send_error(502, "tokn-router proxy: no response")
                return False
            await ctx.end_response()
            return True
        except Exception as exc:
            status = exc.status if isinstance(exc, ProxyProtocolError) else 502
            if isinstance(exc, UpstreamFailed):
                log.debug("%s: %s", ctx.url, exc)
                message = f"tokn-router proxy: cannot reach {ctx.authority}: {exc}"
            elif _is_client_error(exc):
                log.debug("%s: %s", ctx.url, _describe(exc))
                message = f"tokn-router proxy: {exc}"
            else:
                log.warning("%s: request handler failed", ctx.url, exc_info=exc)
                message = "tokn-router proxy: internal error while handling the request"
            if not ctx.response_started:
                await ctx._reader.send_error(status, message)
            return False
        finally:
            # A handler that kept the context (e.g. in a stray task) must not write
            # into the next request's response.
            ctx._detached = True

    async def _forward(self, ctx: ProxyRequestContext) -> None:
        """Built-in handler for hosts that are not intercepted: relay untouched."""
        try:
            with trio.fail_after(self.connect_timeout):
                upstream = await self.connect_upstream(ctx.host, ctx.port)
        except Exception as e:
            raise UpstreamFailed(_describe(e)) from e
        try:
            await relay_request(ctx, upstream, read_timeout=self.idle_timeout)
        finally:
            await trio.aclose_forcefully(upstream)

    # -------------------------------------------------------------- CONNECT

    async def _connect(
        self,
        stream: trio.abc.Stream,
        reader: _Reader,
        req: ProxyRequest,
        peer: tuple[str, int] | None,
    ) -> None:
        if self.intercept(req.host, req.port):
            await self._intercept(stream, reader, req, peer)
        else:
            await self._tunnel(stream, reader, req)

    async def _tunnel(self, stream: trio.abc.Stream, reader: _Reader, req: ProxyRequest) -> None:
        # Connect before answering 200, so an unreachable host is a clean 502 rather
        # than a tunnel that dies right away.
        try:
            with trio.fail_after(self.connect_timeout):
                upstream = await self.connect_upstream(req.host, req.port)
        except Exception as e:
            log.debug("CONNECT %s:%s failed: %s", req.host, req.port, _describe(e))
            await reader.send_error(502, f"tokn-router proxy: cannot reach {req.host}:{req.port}")
            return
        try:
            await stream.send_all(reader.conn.connect_established())
            if pending := reader.conn.trailing_data:
                await upstream.send_all(pending)
            await _relay_bytes(stream, upstream)
        finally:
            await trio.aclose_forcefully(upstream)

    async def _intercept(
        self,
        stream: trio.abc.Stream,
        reader: _Reader,
        req: ProxyRequest,
        peer: tuple[str, int] | None,
    ) -> None:
        await stream.send_all(reader.conn.connect_established())
        first = reader.conn.trailing_data
        if not first:
            with trio.fail_after(self.head_timeout):
                first = bytes(await stream.receive_some(RECEIVE_SIZE))
        if not first:
            return
        if first[0] != 0x16:  # not a TLS handshake record: plain HTTP inside the tunnel
            await self._serve_inner(PrefixedStream(stream, first), req, "http", peer)
            return
        ctx = self.certstore.cached_context(req.host)
        if ctx is None:
            # ~1.5 ms of key generation, signing and load_cert_chain: keep it off the
            # event loop. The SNI callback then finds the context cached.
            try:
                ctx = await trio.to_thread.run_sync(self.certstore.server_context, req.host)
            except ValueError as e:  # a CONNECT host no certificate can name
                raise ProxyProtocolError(str(e)) from None
        # TLSStream hands over every complete record per read (a client's request
        # body in many records comes out in one piece). Its aclose sends close_notify:
        # a close-delimited response (HTTP/1.0 client) is only trustworthy with it.
        # The bytes already read (ClientHello) go in first.
        tls = TLSStream(stream, ctx, server_side=True, initial=first)
        try:
            with trio.fail_after(self.head_timeout):
                await tls.do_handshake()
            await self._serve_inner(tls, req, "https", peer)
        finally:
            # Polite close_notify, bounded: the client may be gone already.
            with trio.move_on_after(TLS_CLOSE_TIMEOUT):
                with contextlib.suppress(*_CLIENT_ERRORS):
                    await tls.aclose()

    async def _serve_inner(
        self, stream: trio.abc.Stream, req: ProxyRequest, scheme: str, peer: tuple[str, int] | None
    ) -> None:
        """The keep-alive request loop inside a CONNECT tunnel we terminate."""
        reader = _Reader(stream, ServerConnection())
        timeout = self.head_timeout
        while True:
            head = await reader.next_head(timeout)
            if head is None:
                return
            try:
                path = origin_path(head.target)
            except ProxyProtocolError as e:
                await reader.send_error(e.status, f"bad request: {e}")
                raise
            ctx = self._context(
                stream, reader, head, req.host, req.port, scheme, path, req.username, False, peer
            )
            if not await self._dispatch(ctx, self.handler):
                return
            if not await reader.finish_cycle(self.idle_timeout):
                return
            timeout = self.idle_timeout


async def _relay_bytes(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy bytes both ways until both sides are done or either fails.

    EOF is passed on as a half-close where the stream supports it, so protocols that
    half-close keep working; any failure cancels the whole relay through the nursery's
    cancel scope rather than by closing a stream another task is still using.
    """
    async with trio.open_nursery() as nursery:

        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            try:
                while data := await src.receive_some(RECEIVE_SIZE):
                    await dst.send_all(data)
                if isinstance(dst, trio.abc.HalfCloseableStream):
                    await dst.send_eof()
                    return
            except _CLIENT_ERRORS as e:
                log.debug("tunnel closed: %s", _describe(e))
            nursery.cancel_scope.cancel()

        nursery.start_soon(pump, a, b)
        nursery.start_soon(pump, b, a)


def _peer(stream: trio.SocketStream) -> tuple[str, int] | None:
    try:
        addr = stream.socket.getpeername()
    except OSError:
        return None
    return (str(addr[0]), int(addr[1])) if isinstance(addr, tuple) else None


def _fmt_peer(peer: tuple[str, int] | None) -> str:
    if peer is None:
        return "?"
    host, port = peer
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_proxy(
    host: str,
    port: int,
    *,
    intercept: Intercept,
    handler: Handler,
    certstore: CertStore,
    connect_upstream: ConnectUpstream = open_direct,
    help_text: str | Callable[[], str] = "tokn-router MITM proxy\n",
    head_timeout: float = 30.0,
    idle_timeout: float = 300.0,
    connect_timeout: float = 30.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the proxy listener until cancelled; ``task_status.started(bound_port)``.

    ``head_timeout`` bounds how long a new connection (or a new TLS handshake) may stay
    silent; ``idle_timeout`` bounds keep-alive idleness and each wait for request-body
    or upstream bytes; ``connect_timeout`` bounds ``connect_upstream``.
    """
    # Create or load the CA before binding, off the event loop: a corrupt ca.key is a
    # start-up error (CAError), not a failure of the first intercepted connection.
    await trio.to_thread.run_sync(certstore.load)
    proxy = _Proxy(
        intercept=intercept,
        handler=handler,
        certstore=certstore,
        connect_upstream=connect_upstream,
        help_text=help_text,
        head_timeout=head_timeout,
        idle_timeout=idle_timeout,
        connect_timeout=connect_timeout,
    )
    async with trio.open_nursery() as nursery:
        # An explicit host: with host=None serve_tcp binds IPv4 and IPv6 separately.
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy.handle, port, host=host)
        )
        bound = listeners[0].socket.getsockname()[1]
        log.info("proxy listening on %s:%s", host, bound)
        task_status.started(bound)

"""The MITM forward proxy listener on raw trio sockets.

Per client connection:

* ``CONNECT host:port`` to an intercepted host: answer ``200 Connection Established``,
  terminate TLS with a leaf from the :class:`~tokn_router.edges.proxy.ca.CertStore` (warmed
  in a worker thread first, so the synchronous SNI callback hits the cache), then hand
  each HTTP/1.1 request inside to ``handler`` as a :class:`ProxyRequestContext`.
  The handshake must finish within ``handshake_timeout``. A tunnel that opens
  with an HTTP request line instead is served one plain-HTTP request, then
  closed; anything else (neither TLS nor HTTP) closes the tunnel at once.
* ``CONNECT`` to any other host: connect with ``connect_upstream`` (direct by default;
  the outbound HTTP/SOCKS proxy plugs in here), then relay bytes both ways untouched.
* Absolute-form ``GET http://host/path``: intercepted hosts go to ``handler``
  (``ctx.absolute_form`` is set), others are forwarded by :func:`relay_request`.
* Origin-form ``GET /``: the help text.

Every per-connection failure (garbage, TLS errors, clients vanishing mid-handshake,
timeouts) is caught and logged at debug level: ``trio.serve_tcp`` would otherwise let
one bad client take down the listener and every other connection with it.

Each request inside a connection is handled through :mod:`tokn_router.edges.proxy.exchange`.
This module stays at about 500 lines because a connection's states (plain, blind tunnel,
intercepted TLS, plain HTTP in a tunnel) are one loop and read best together.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from tokn_router.edges.proxy.exchange import (
    CLIENT_ERRORS,
    RECEIVE_SIZE,
    ProxyRequestContext,
    Reader,
    UpstreamFailed,
    describe,
    is_client_error,
    relay_request,
)
from tokn_router.net.streams import PrefixedStream, TLSStream
from tokn_router.wire.http1 import (
    EndOfRequest,
    Headers,
    ProxyProtocolError,
    ProxyRequest,
    RequestHead,
    RequestKind,
    ServerConnection,
    classify,
    origin_path,
)

if TYPE_CHECKING:
    # the daemon hands the store in; importing it here would load cryptography
    # (~30 ms) at every start-up, with or without the proxy
    from tokn_router.edges.proxy.ca import CertStore

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "Authorize",
    "ConnectUpstream",
    "Handler",
    "Intercept",
    "open_direct",
    "serve_proxy",
]

log = logging.getLogger("tokn_router.proxy")

Intercept = Callable[[str, int], bool]
ConnectUpstream = Callable[[str, int], Awaitable[trio.abc.Stream]]
Handler = Callable[[ProxyRequestContext], Awaitable[None]]
# Checks the credentials of a CONNECT or absolute-form request: None to go on, or the
# (status, headers, body) to answer before closing (a 407 when a client key is missing).
Authorize = Callable[[Headers], tuple[int, list[tuple[str, str]], bytes] | None]

# Bound on the polite TLS close_notify at the end of an intercepted connection.
TLS_CLOSE_TIMEOUT = 1.0
# From "200 Connection Established" to a finished TLS handshake (or a plain-HTTP
# request head) in an intercepted tunnel: a half-open handshake cannot pin a socket.
HANDSHAKE_TIMEOUT = 10.0
# What a plain-HTTP request inside a tunnel starts with: a method token and a space.
_METHOD_START = re.compile(rb"[A-Z]{1,20} ")
_METHOD_PREFIX = re.compile(rb"[A-Z]{1,20}\Z")


async def open_direct(host: str, port: int) -> trio.abc.Stream:
    """The default ``connect_upstream``: a direct TCP connection."""
    return await trio.open_tcp_stream(host, port)


# --------------------------------------------------------------------- streams


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
        authorize: Authorize | None = None,
        handshake_timeout: float,
    ) -> None:
        self.authorize = authorize
        self.intercept = intercept
        self.handler = handler
        self.certstore = certstore
        self.connect_upstream = connect_upstream
        self.help_text = help_text
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout

    async def handle(self, stream: trio.SocketStream) -> None:
        """serve_tcp's per-connection handler: nothing may escape from here."""
        peer = _peer(stream)
        try:
            await self._serve(stream, peer)
        except Exception as exc:
            if is_client_error(exc):
                log.debug("proxy client %s: %s", _fmt_peer(peer), describe(exc))
            else:
                log.warning("proxy client %s: unexpected error", _fmt_peer(peer), exc_info=exc)

    # ------------------------------------------------------ proxy connection

    async def _serve(self, stream: trio.abc.Stream, peer: tuple[str, int] | None) -> None:
        reader = Reader(stream, ServerConnection())
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
            if req.kind is not RequestKind.ORIGIN and self.authorize is not None:
                refusal = self.authorize(head.headers)
                if refusal is not None:
                    status, headers, body = refusal
                    headers = [
                        *headers,
                        ("Content-Length", str(len(body))),
                        ("Connection", "close"),
                    ]
                    await reader.stream.send_all(
                        reader.conn.response(status, headers)
                        + reader.conn.body(body)
                        + reader.conn.end()
                    )
                    return
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
                ctx.proxy_authorization = req.proxy_authorization
                handler = self.handler if self.intercept(req.host, req.port) else self._forward
                if not await self._dispatch(ctx, handler):
                    return
            if not await reader.finish_cycle(self.idle_timeout):
                return
            timeout = self.idle_timeout

    def _context(
        self,
        stream: trio.abc.Stream,
        reader: Reader,
        head: RequestHead,
        host: str,
        port: int,
        scheme: str,
        path: str,
        username: str | None,
        absolute_form: bool,
        peer: tuple[str, int] | None,
        close: bool = False,
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
            close=close,
        )

    async def _help(self, reader: Reader, head: RequestHead) -> None:
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
            elif is_client_error(exc):
                log.debug("%s: %s", ctx.url, describe(exc))
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
            raise UpstreamFailed(describe(e)) from e
        try:
            await relay_request(ctx, upstream, read_timeout=self.idle_timeout)
        finally:
            await trio.aclose_forcefully(upstream)

    # -------------------------------------------------------------- CONNECT

    async def _connect(
        self,
        stream: trio.abc.Stream,
        reader: Reader,
        req: ProxyRequest,
        peer: tuple[str, int] | None,
    ) -> None:
        if self.intercept(req.host, req.port):
            await self._intercept(stream, reader, req, peer)
        else:
            await self._tunnel(stream, reader, req)

    async def _tunnel(self, stream: trio.abc.Stream, reader: Reader, req: ProxyRequest) -> None:
        # Connect before answering 200, so an unreachable host is a clean 502 rather
        # than a tunnel that dies right away.
        try:
            with trio.fail_after(self.connect_timeout):
                upstream = await self.connect_upstream(req.host, req.port)
        except Exception as e:
            log.debug("CONNECT %s:%s failed: %s", req.host, req.port, describe(e))
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
        reader: Reader,
        req: ProxyRequest,
        peer: tuple[str, int] | None,
    ) -> None:
        await stream.send_all(reader.conn.connect_established())
        first = b""
        tls: TLSStream | None = None
        with trio.move_on_after(self.handshake_timeout) as deadline:
            first = await _first_bytes(stream, reader.conn.trailing_data)
            if first[:1] == b"\x16":  # a TLS handshake record
                tls = await self._handshake(stream, req, first)
        if deadline.cancelled_caught:
            raise trio.TooSlowError("no TLS handshake within the deadline")
        if not first:
            return
        if tls is None:
            if not _METHOD_START.match(first):
                raise ProxyProtocolError("neither TLS nor HTTP inside the tunnel")
            # Plain HTTP inside CONNECT (curl --proxytunnel to an http:// URL): one
            # request, its head within the handshake deadline, then the tunnel closes.
            await self._serve_inner(PrefixedStream(stream, first), req, "http", peer, once=True)
            return
        try:
            await self._serve_inner(tls, req, "https", peer)
        finally:
            # Polite close_notify, bounded: the client may be gone already.
            with trio.move_on_after(TLS_CLOSE_TIMEOUT):
                with contextlib.suppress(*CLIENT_ERRORS):
                    await tls.aclose()

    async def _handshake(
        self, stream: trio.abc.Stream, req: ProxyRequest, first: bytes
    ) -> TLSStream:
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
        await tls.do_handshake()
        return tls

    async def _serve_inner(
        self,
        stream: trio.abc.Stream,
        req: ProxyRequest,
        scheme: str,
        peer: tuple[str, int] | None,
        *,
        once: bool = False,
    ) -> None:
        """The keep-alive request loop inside a CONNECT tunnel we terminate.

        ``once``: a single request, whose head must arrive within the handshake
        deadline, answered with ``Connection: close``.
        """
        reader = Reader(stream, ServerConnection())
        timeout = self.handshake_timeout if once else self.head_timeout
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
                stream,
                reader,
                head,
                req.host,
                req.port,
                scheme,
                path,
                req.username,
                False,
                peer,
                close=once,
            )
            ctx.proxy_authorization = req.proxy_authorization
            if not await self._dispatch(ctx, self.handler) or once:
                return
            if not await reader.finish_cycle(self.idle_timeout):
                return
            timeout = self.idle_timeout


async def _first_bytes(stream: trio.abc.Stream, pending: bytes) -> bytes:
    """Enough of a tunnel's first bytes to tell TLS from HTTP from garbage.

    One byte says TLS; HTTP needs its method token and the space after it.
    ``b""`` when the client closed without sending anything.
    """
    data = pending
    while not data or (data[0] != 0x16 and _METHOD_PREFIX.match(data)):
        more = bytes(await stream.receive_some(RECEIVE_SIZE))
        if not more:
            if data:
                raise ProxyProtocolError("the client closed the tunnel mid-request line")
            return b""
        data += more
    return data


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
            except CLIENT_ERRORS as e:
                log.debug("tunnel closed: %s", describe(e))
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
    authorize: Authorize | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the proxy listener until cancelled; ``task_status.started(bound_port)``.

    ``authorize`` sees the headers of every ``CONNECT`` and absolute-form request
    before it is served (the client-key check). ``head_timeout`` bounds how long a
    new connection (or a new TLS handshake) may stay silent; ``idle_timeout`` bounds
    keep-alive idleness and each wait for request-body or upstream bytes;
    ``connect_timeout`` bounds ``connect_upstream``; ``handshake_timeout`` bounds an
    intercepted tunnel's TLS handshake (from the ``200`` on) or, in a plain-HTTP
    tunnel, its one request head.
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
        authorize=authorize,
        handshake_timeout=handshake_timeout,
    )
    async with trio.open_nursery() as nursery:
        # An explicit host: with host=None serve_tcp binds IPv4 and IPv6 separately.
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy.handle, port, host=host)
        )
        bound = listeners[0].socket.getsockname()[1]
        log.debug("proxy listening on %s:%s", host, bound)  # the daemon prints its own banner
        task_status.started(bound)

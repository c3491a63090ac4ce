"""A small HTTP/1.1 upstream transport for httpx, built on trio streams and h11.

Why this exists: httpcore's connection pool is O(pool size) per
request. On every request and every response close,
``AsyncConnectionPool._assign_requests_to_connections`` calls ``has_expired()``
(a ``poll`` on the socket) for *every* pooled connection. With 200 concurrent
SSE streams that was 52% of the relay's CPU and took the cost per streamed event
from 75 µs to 186 µs. A ~90-line h11-on-trio pool kept it flat at 71 µs.

:class:`TrioH11Transport` is that pool, wrapped as an ``httpx.AsyncBaseTransport`` so
every caller keeps the httpx API (``client.stream``, ``send(stream=True)``,
``aiter_bytes``, httpx exceptions, decoding, auth, cookies)::

    client = httpx.AsyncClient(transport=TrioH11Transport(verify=ssl_ctx))

Scope: direct HTTP/1.1 connections under trio (proxied routes keep httpx's stock
transport). No HTTP/2, no proxies, no cap on open connections (concurrency is
bounded by the daemon).

Design:

* Pool: one LIFO deque of idle connections per ``(scheme, host, port)``. Acquire
  pops the most recently used connection and checks only that one (idle age and
  ``is_readable()``, which means the server closed it or sent junk); release
  appends. Both are O(1) (amortized: a stale connection is dropped once);
  nothing scans the pool.
* A connection the server closed while idle can still look healthy (FIN in flight,
  TLS close_notify buffered). If a *reused* connection fails before any response
  byte arrives, the request is retried once on a fresh connection. That is safe
  only because nothing was received, and the request body is bytes we hold.
* h11 writes the request and parses the response head (validation, 1xx,
  keep-alive rules); the body is framed by :class:`~tokn_router.net.h1client.BodyDecoder`
  (Content-Length, chunked, read-until-close). Both come from ``net/h1client.py``,
  shared with the MITM proxy and the outbound tunnels.
* TLS goes through :class:`~tokn_router.net.streams.TLSStream`: each wake-up
  decrypts every complete record received so far, so a burst of SSE events (each
  its own TLS record, as Copilot sends them) comes out of one receive.
* The body stream yields what each receive brings: chunks from one receive are
  joined, never split or held back. It returns the connection to the pool as soon
  as the body ends. Closing it earlier closes the socket at once, so the upstream
  sees the client's disconnect.
* A cancelled body read consumes nothing and leaves the body readable: the
  stream relay interrupts a silent read to send a keep-alive, then reads on
  (``serve/pump.py``). Giving up is ``aclose()``. The read deadline survives the
  interruption, so a silent upstream still times out.
* Body read timeouts (between receives, as in httpx) come from one watchdog task
  per trio run. It closes the socket of a read that ran past its deadline. A trio
  cancel scope around each receive would cost ~6 µs per event, more than the
  rest of the body path. A timeout fires up to one watchdog tick late: a tenth
  of the smallest read timeout seen in the run, clamped to 10 ms..1 s.
* Errors are mapped to httpx's exception hierarchy, as the stock transport does.

It is one module of over 400 lines because the pool, the watchdog and the response
stream share one connection's lifecycle.
"""

from __future__ import annotations

import math
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Final, Self

import h11
import httpx2 as httpx
import trio

from tokn_router.net import h1client
from tokn_router.net.h1client import BodyDecoder, BodyError, NoResponse
from tokn_router.net.streams import TLSStream, receive_from_socket

__all__ = ["TrioH11Transport", "cancel_safe_body"]

# One receive_some per wake-up. 64 KiB covers any SSE burst in one read.
_READ_SIZE: Final = 65536
# Below this size the request head and body go out as one write (one syscall,
# one TLS record); above it, joining would copy a large body for no gain.
_JOIN_LIMIT: Final = 65536
# Limit on the response head (h11).
_MAX_HEAD_SIZE: Final = 64 * 1024
# Body read timeout granularity: the watchdog ticks at timeout/10 within these bounds.
_MIN_TICK: Final = 0.01
_MAX_TICK: Final = 1.0

_NETWORK_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_NO_TIMEOUTS: Final[Mapping[str, float | None]] = {}
_INF: Final = math.inf

# Body framing (names kept for the tests that drive _ResponseStream directly).
_NONE, _LENGTH, _CHUNKED, _UNTIL_EOF = (
    h1client.NONE,
    h1client.LENGTH,
    h1client.CHUNKED,
    h1client.UNTIL_EOF,
)

_PoolKey = tuple[bytes, str, int]


class _StaleConnection(Exception):
    """A reused connection failed before any response byte: safe to retry once."""


def _describe(exc: BaseException) -> str:
    """A readable message; trio wraps ssl/OS errors in Broken/ClosedResourceError."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and (not text or isinstance(exc, trio.BrokenResourceError)):
        text = f"{text}: {cause}" if text else str(cause)
    return text or type(exc).__name__


class _Connection:
    """One socket (plain or TLS) between requests and while a response is read."""

    __slots__ = ("idle_since", "key", "read_deadline", "receive", "sock", "stream", "timed_out")

    def __init__(self, key: _PoolKey, stream: trio.abc.Stream, sock: trio.socket.SocketType):
        self.key = key
        self.stream = stream
        # The raw socket, for O(1) liveness checks and a synchronous close.
        self.sock = sock
        # How a response is read: straight from the socket for plain TCP (one
        # scheduler turn less per wake-up than SocketStream.receive_some), else
        # the stream's own receive (TLSStream has the same fast path inside).
        self.receive: Callable[[int], Awaitable[bytes | bytearray]] = (
            partial(receive_from_socket, sock)
            if isinstance(stream, trio.SocketStream)
            else stream.receive_some
        )
        self.idle_since = 0.0
        # trio.current_time() by which the pending body receive must return
        # (inf when no timed receive is pending); set by the reader, checked by
        # the watchdog, which sets timed_out before closing the socket.
        self.read_deadline = _INF
        self.timed_out = False

    def close(self) -> None:
        # Closing the socket itself (not SSLStream.aclose) is synchronous and
        # immediate: no close_notify that could block on a full send buffer, and
        # the peer sees the close (FIN, or RST if bytes were left unread) at once. trio wakes any task blocked on the socket
        # with ClosedResourceError. Idempotent.
        self.sock.close()


class _Watchdog:
    """Enforces body read deadlines for one trio run (see module docstring).

    Readers only store a deadline on their connection: a float, no cancel scope.
    While any body is being read with a timeout, this task wakes every ``tick``
    and closes the sockets whose read is overdue. The scan covers only the bodies
    being read, ``tick`` seconds apart, never per request or per event.
    """

    def __init__(self) -> None:
        self.conns: set[_Connection] = set()
        self.tick = _MAX_TICK
        self._idle: trio.Event | None = None
        self._sleep: trio.CancelScope | None = None

    def watch(self, conn: _Connection, timeout: float) -> None:
        tick = min(max(timeout / 10, _MIN_TICK), _MAX_TICK)
        if tick < self.tick:
            self.tick = tick
            if self._sleep is not None:
                self._sleep.cancel()  # start over with the shorter tick
        if not self.conns and self._idle is not None:
            self._idle.set()
        self.conns.add(conn)

    async def run(self) -> None:
        conns = self.conns
        while True:
            if not conns:
                self._idle = trio.Event()
                await self._idle.wait()
                self._idle = None
                continue
            with trio.CancelScope(deadline=trio.current_time() + self.tick) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            now = trio.current_time()
            for conn in [c for c in conns if c.read_deadline <= now]:
                conns.discard(conn)
                conn.timed_out = True
                conn.close()


class TrioH11Transport(httpx.AsyncBaseTransport):
    """An HTTP/1.1 ``httpx.AsyncBaseTransport`` on trio + h11 with an O(1) keep-alive pool.

    ``verify`` is the ``ssl.SSLContext`` for https upstreams (ALPN is set to
    ``http/1.1`` on it). ``True`` builds httpx's default context. ``False`` turns
    off verification.
    ``max_keepalive_connections`` caps idle connections in total (``None``: no cap).
    ``keepalive_expiry`` is how long, in seconds, an idle connection is kept
    (``None``: no limit).
    Timeouts come from each request's ``timeout`` extension, which httpx sets from
    the client's ``httpx.Timeout``: connect (TCP + TLS), write (each send), read
    (response head, then between body receives), pool (unused: nothing waits for
    a connection).
    """

    def __init__(
        self,
        verify: ssl.SSLContext | bool = True,
        *,
        max_keepalive_connections: int | None = 200,
        keepalive_expiry: float | None = 60.0,
    ) -> None:
        ctx = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        # Same as httpcore does on every connect: we speak HTTP/1.1 only.
        ctx.set_alpn_protocols(["http/1.1"])
        self._ssl_context = ctx
        self._max_idle = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        self._idle: dict[_PoolKey, deque[_Connection]] = {}
        self._idle_count = 0
        self._closed = False
        self._watchdog: _Watchdog | None = None
        self._watchdog_run: trio.lowlevel.TrioToken | None = None

    # -- pool -------------------------------------------------------------------

    def _checkout(self, key: _PoolKey) -> _Connection | None:
        """Most recently released idle connection for ``key`` that is still usable."""
        idle = self._idle.get(key)
        if not idle:
            return None
        expiry = self._keepalive_expiry
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            # Only the connection being taken is checked. An idle HTTP/1.1 socket
            # must not be readable: readable means EOF (the server closed it) or
            # unexpected bytes. Either way it's unusable.
            if (expiry is not None and now - conn.idle_since > expiry) or conn.sock.is_readable():
                conn.close()
                continue
            return conn
        return None

    def _checkin(self, conn: _Connection) -> None:
        """Pool a connection whose exchange ended cleanly (the caller checked)."""
        max_idle = self._max_idle
        if self._closed or (max_idle is not None and self._idle_count >= max_idle):
            conn.close()
            return
        now = time.monotonic()
        conn.idle_since = now
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        elif idle and self._keepalive_expiry is not None:
            # The left end holds the oldest idle connection. Dropping it once it
            # has expired bounds stale sockets without a sweeper task. O(1).
            oldest = idle[0]
            if now - oldest.idle_since > self._keepalive_expiry:
                idle.popleft()
                self._idle_count -= 1
                oldest.close()
        idle.append(conn)
        self._idle_count += 1

    async def run_timeouts(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the read-timeout watchdog as a task of the caller's nursery.

        The daemon starts this in its supervising nursery so the watchdog has an
        owner; without it, the first timed read starts one as a trio system task
        (standalone use of the transport).
        """
        watchdog = self._watchdog = _Watchdog()
        self._watchdog_run = trio.lowlevel.current_trio_token()
        task_status.started()
        await watchdog.run()

    def _watch(self, conn: _Connection, timeout: float) -> _Watchdog:
        """The current trio run's watchdog, started on first use in each run."""
        token = trio.lowlevel.current_trio_token()
        watchdog = self._watchdog
        if watchdog is None or self._watchdog_run is not token:
            watchdog = self._watchdog = _Watchdog()
            self._watchdog_run = token
            trio.lowlevel.spawn_system_task(watchdog.run, name="TrioH11Transport read timeouts")
        watchdog.watch(conn, timeout)
        return watchdog

    async def aclose(self) -> None:
        """Close every idle connection. Responses still open close their own."""
        self._closed = True
        idle, self._idle = self._idle, {}
        self._idle_count = 0
        for conns in idle.values():
            for conn in conns:
                conn.close()
        await trio.lowlevel.checkpoint()

    # -- connecting -------------------------------------------------------------

    async def _connect(
        self,
        key: _PoolKey,
        request: httpx.Request,
        timeouts: Mapping[str, float | None],
    ) -> _Connection:
        scheme, host, port = key
        timeout = timeouts.get("connect")
        tcp: trio.SocketStream | None = None
        try:
            # One deadline for TCP connect + TLS handshake, as httpcore does.
            with trio.fail_after(_INF if timeout is None else timeout):
                tcp = await trio.open_tcp_stream(host, port)
                stream: trio.abc.Stream = tcp
                if scheme == b"https":
                    sni = request.extensions.get("sni_hostname") or host
                    # close_notify=False: connections end with a bare socket close
                    # (_Connection.close), which never blocks.
                    tls = TLSStream(tcp, self._ssl_context, server_hostname=sni, close_notify=False)
                    await tls.do_handshake()
                    stream = tls
        except trio.TooSlowError:
            if tcp is not None:
                tcp.socket.close()
            raise httpx.ConnectTimeout(
                f"timed out connecting to {host}:{port}", request=request
            ) from None
        except _NETWORK_ERRORS as exc:
            if tcp is not None:
                tcp.socket.close()
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        except BaseException:
            if tcp is not None:
                tcp.socket.close()
            raise
        return _Connection(key, stream, tcp.socket)

    # -- one request/response ---------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme == b"https":
            default_port = 443
        elif scheme == b"http":
            default_port = 80
        else:
            raise httpx.UnsupportedProtocol(
                f"TrioH11Transport handles http and https, not {url.scheme!r}", request=request
            )
        key: _PoolKey = (scheme, url.raw_host.decode("ascii"), url.port or default_port)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or _NO_TIMEOUTS

        # In-memory bodies (ByteStream: bytes, str, json, empty) can be sent again
        # on a retry. Anything else is streamed once.
        body = request.stream
        chunks: list[bytes] | None = None
        if isinstance(body, httpx.ByteStream):
            chunks = [c for c in body if c]

        conn = self._checkout(key)
        if conn is not None:
            try:
                return await self._exchange(conn, request, chunks, timeouts, reused=True)
            except _StaleConnection:
                pass  # the server had closed it while idle: once more, on a new connection
        conn = await self._connect(key, request, timeouts)
        return await self._exchange(conn, request, chunks, timeouts, reused=False)

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        chunks: list[bytes] | None,
        timeouts: Mapping[str, float | None],
        *,
        reused: bool,
    ) -> httpx.Response:
        """Send ``request`` on ``conn`` and read the response head.

        Raises :class:`_StaleConnection` (connection closed) instead of an error
        when ``reused`` and nothing was received, and the request can be sent
        again.
        """
        # A fresh h11 state per exchange (~1.5 µs): the body is framed outside h11,
        # so h11 never sees this cycle end and can't start_next_cycle().
        h = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD_SIZE)
        stream = conn.stream
        read_timeout = timeouts.get("read")
        body_started = False
        send_error: BaseException | None = None
        try:
            try:
                target = request.url.raw_path
                out = h1client.encode_request(
                    h, request.method, target, request.headers.raw, chunks
                )
                if chunks is not None:
                    if sum(map(len, out)) <= _JOIN_LIMIT:
                        out = [b"".join(out)]
                    for part in out:
                        if part:
                            await _send(stream, part, timeouts, request)
                else:
                    await _send(stream, b"".join(out), timeouts, request)
                    body_started = True
                    body = request.stream
                    assert isinstance(body, httpx.AsyncByteStream)  # AsyncClient ensures it
                    async for chunk in body:
                        if chunk:
                            # h11.send joins chunk framing and data: one write per chunk.
                            await _send(
                                stream, h.send(h11.Data(data=chunk)) or b"", timeouts, request
                            )
                    tail = h.send(h11.EndOfMessage())
                    if tail:
                        await _send(stream, tail, timeouts, request)
            except _NETWORK_ERRORS as exc:
                # The server may have answered early (413, 401...) and closed its
                # read side. Read the response anyway, as httpcore does. If there
                # is none, the error surfaces below.
                send_error = exc

            can_retry = reused and (chunks is not None or not body_started)
            received = False

            async def receive() -> bytes | bytearray:
                nonlocal received
                try:
                    data = await _receive(conn, read_timeout, request)
                except _NETWORK_ERRORS as exc:
                    if not received and can_retry:
                        raise _StaleConnection from exc
                    if send_error is not None and not received:
                        raise httpx.WriteError(_describe(send_error), request=request) from exc
                    raise httpx.ReadError(_describe(exc), request=request) from exc
                if not data and not received and can_retry:
                    raise _StaleConnection
                received = True
                return data

            head = await h1client.read_head(h, receive, request.method)
        except NoResponse as exc:
            conn.close()
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        except h11.RemoteProtocolError as exc:
            conn.close()
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        except h11.LocalProtocolError as exc:
            conn.close()
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        except BaseException:
            # Includes _StaleConnection and cancellation: the connection is in an
            # unknown state, so it never goes back to the pool.
            conn.close()
            raise

        response = head.response
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers.raw_items(),
            stream=_ResponseStream(
                self,
                conn,
                request,
                read_timeout,
                head.framing,
                head.length,
                head.buffered,
                head.reusable,
            ),
            extensions={
                "http_version": b"HTTP/" + response.http_version,
                "reason_phrase": response.reason,
            },
        )


async def _send(
    stream: trio.abc.Stream,
    data: bytes,
    timeouts: Mapping[str, float | None],
    request: httpx.Request,
) -> None:
    timeout = timeouts.get("write")
    if timeout is None:
        await stream.send_all(data)
        return
    with trio.move_on_after(timeout) as scope:
        await stream.send_all(data)
    if scope.cancelled_caught:
        raise httpx.WriteTimeout("timed out sending the request", request=request)


async def _receive(
    conn: _Connection, read_timeout: float | None, request: httpx.Request
) -> bytes | bytearray:
    # For the response head only (once per request), so a cancel scope is fine.
    if read_timeout is None:
        return await conn.receive(_READ_SIZE)
    with trio.CancelScope(deadline=trio.current_time() + read_timeout):
        return await conn.receive(_READ_SIZE)
    # Only reached when the deadline cancelled the receive.
    raise httpx.ReadTimeout("timed out waiting for the upstream", request=request)


class _ResponseStream(httpx.AsyncByteStream):
    """The response body: one item per receive, framing removed; cancel-safe.

    A class with ``__anext__`` rather than an async generator: no generator
    frame to finalize when a consumer stops early, and a little cheaper per
    item.
    """

    __slots__ = (
        "_conn",
        "_decoder",
        "_fresh",
        "_read_timeout",
        "_request",
        "_transport",
        "_watchdog",
    )

    def __init__(
        self,
        transport: TrioH11Transport,
        conn: _Connection,
        request: httpx.Request,
        read_timeout: float | None,
        framing: int,
        length: int,
        buffered: bytes,
        reusable: bool,
    ) -> None:
        self._transport = transport
        self._conn: _Connection | None = conn
        self._request = request
        self._read_timeout = read_timeout
        decoder = self._decoder = BodyDecoder(framing, length)
        decoder.reusable = reusable
        # Body bytes that came with the head, until they are decoded.
        self._fresh = buffered
        self._watchdog: _Watchdog | None = None
        if decoder.done:
            if buffered:
                decoder.reusable = False  # bytes where no body may be
            self._fresh = b""
            self._finish()
        elif read_timeout is not None:
            self._watchdog = transport._watch(conn, read_timeout)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        decoder = self._decoder
        if conn is None:
            error = decoder.error
            if error is not None:
                decoder.error = None
                raise httpx.RemoteProtocolError(str(error), request=self._request) from None
            raise StopAsyncIteration
        try:
            while True:
                if self._fresh:
                    data = self._fresh
                    self._fresh = b""
                else:
                    timeout = self._read_timeout
                    # A deadline still set comes from a read that was cancelled
                    # (a keep-alive): the silence it measures goes on.
                    if timeout is not None and conn.read_deadline == _INF:
                        conn.read_deadline = trio.current_time() + timeout
                    try:
                        # Always bytes from sockets and TLSStream; trio's ABC says
                        # bytes | bytearray.
                        data = await conn.receive(_READ_SIZE)  # type: ignore[assignment]
                    except _NETWORK_ERRORS as exc:
                        if conn.timed_out:
                            raise httpx.ReadTimeout(
                                "timed out waiting for the upstream", request=self._request
                            ) from None
                        raise httpx.ReadError(_describe(exc), request=self._request) from exc
                    conn.read_deadline = _INF
                    if not data:
                        decoder.eof()  # raises unless the body runs until EOF
                        self._finish()
                        break
                out = decoder.feed(data)
                if decoder.done:
                    self._finish()
                if out:
                    return out
                if decoder.done:
                    break
        except BodyError as exc:
            self._abort()
            raise httpx.RemoteProtocolError(str(exc), request=self._request) from None
        except trio.Cancelled:
            # Only the receive awaits, and a cancelled receive took nothing
            # (sockets and TLSStream both): the body can be read on, or closed.
            raise
        except BaseException:
            # Read error, timeout: the body is incomplete and the connection
            # unusable. Close it now.
            self._abort()
            raise
        raise StopAsyncIteration

    def _finish(self) -> None:
        """The body is complete: pool the connection now, not at aclose()."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if self._watchdog is not None:
            self._watchdog.conns.discard(conn)
        decoder = self._decoder
        if decoder.reusable and decoder.error is None:
            self._transport._checkin(conn)
        else:
            conn.close()

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            if self._watchdog is not None:
                self._watchdog.conns.discard(conn)
            conn.close()

    async def aclose(self) -> None:
        if self._conn is None:
            return
        # The rest of the body may already be buffered (a short body that came
        # with the head and was never read): then the connection is clean and can
        # be reused. Otherwise close it now: the caller gave up mid-body and the
        # upstream must see the disconnect.
        decoder = self._decoder
        if self._fresh:
            data, self._fresh = self._fresh, b""
            try:
                decoder.feed(data)
            except BodyError:
                decoder.done = False
        if decoder.done:
            self._finish()
        else:
            self._abort()


def cancel_safe_body(response: httpx.Response) -> AsyncIterator[bytes] | None:
    """The body of a response this transport returned, to read without httpx's layers.

    Its reads may be cancelled and resumed (see :class:`_ResponseStream`). ``None``
    when the response came from another transport, or through ``AsyncClient.send``
    (which wraps the stream), or its body is compressed and needs httpx's decoder.
    """
    stream = response.stream
    if not isinstance(stream, _ResponseStream):
        return None
    encoding = response.headers.get("content-encoding", "").strip().lower()
    return stream if encoding in ("", "identity") else None

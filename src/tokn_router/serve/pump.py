"""Relaying an upstream streaming body to the client.

The client body is an async generator that the front end (Quart's response, the
MITM proxy's ``write_answer``) consumes in its own task. The rules:

- **One task wakes per event.** The generator reads the upstream body itself
  when it is the transport's cancel-safe stream (every direct connection). A
  body that is not (httpx's stock transport behind an outbound proxy, or a
  compressed body) is read by a *pump* task and handed over through a memory
  channel, whose receive is cancel-safe.
- **Disconnects are noticed during upstream silence.** A front end only learns
  that an HTTP/1.1 client went away when a write fails. While upstream is
  silent (a reasoning model thinking), a per-stream *ticker* task interrupts
  the read every ``keepalive`` seconds and the relay sends an SSE comment
  (``: keep-alive``); the failing write cancels the request or closes this
  body, and the upstream connection is closed at once.
- **Coalescing.** A read returns everything received so far (the transport
  decrypts every complete TLS record per wake-up), so a relay that falls behind
  under load catches up in one write instead of queueing one write per event.
  Nothing is held back to wait for more.
- **No byte is lost or doubled.** The read is interrupted only where that takes
  nothing: the transport's body stream and the channel both leave a cancelled
  receive unconsumed, and the read timeout keeps counting through keep-alives.
- **Shutdown says so.** The ticker (and the pump) belong to the daemon, which
  cancels them only when the server stops and the grace period is over; the
  relay then ends the stream with the API's error event (``server shutting
  down``) instead of a silent cut, and the ledger row records that rather than
  a client disconnect.

Resource handling
-----------------
The read's cancel scope is entered once per keep-alive period, not per event:
entering and leaving a trio cancel scope costs ~8 µs, a tenth of a paced
event. So the generator yields *inside* the scope, which is safe only because
(1) both front ends close the generator in the task that consumes it (Quart's
response body closes its iterator on exit, the proxy uses ``aclosing``), so
the scope is always left in its own task and in order; and (2) the ticker
cancels the scope only while the generator is blocked in the read, and the
generator leaves the scope before it yields whenever a cancel was asked for,
so a keep-alive cancel never lands in the consumer's code.

Error handling
--------------
An upstream failure after the first byte cannot fail over: it ends the stream
with the API's error event and the row keeps the reason. The client leaving
(hypercorn cancels the request, or the proxy closes the body) marks the row
``client disconnected`` and closes the upstream response.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx2 as httpx
import trio

from tokn_router.net.transport import cancel_safe_body
from tokn_router.serve.call import StreamBody
from tokn_router.usage.inflight import RequestLog
from tokn_router.wire.transforms import StreamTransform

log = logging.getLogger("tokn_router.api")

KEEPALIVE = b": keep-alive\n\n"
SHUTDOWN_ERROR = "server shutting down"
Spawn = Callable[[Callable[[], Any]], None]


def relay_stream(
    spawn: Spawn,
    resp: httpx.Response,
    transform: StreamTransform,
    rlog: RequestLog,
    *,
    keepalive: float,
    on_done: Callable[[], None],
) -> StreamBody:
    """The client body of a streamed response; ``on_done`` runs exactly once at the end."""

    async def unstarted() -> None:
        with trio.CancelScope(shield=True):
            await resp.aclose()
        rlog.error = rlog.error or "client disconnected"
        on_done()

    body = _relay(spawn, resp, transform, rlog, keepalive=keepalive, on_done=on_done)
    return StreamBody(body, unstarted)


class _Reader:
    """What the ticker and the relay share about one stream's read."""

    __slots__ = ("cut", "events", "poked", "reading", "scope")

    def __init__(self) -> None:
        self.events = 0  # upstream reads that brought data
        self.reading = False  # the relay is blocked in the upstream read
        self.scope: trio.CancelScope | None = None  # the read's current scope
        self.poked = False  # the scope was cancelled: leave it before yielding
        self.cut = False  # the owner cut the stream: the server is stopping

    def interrupt(self) -> None:
        scope = self.scope
        if self.reading and scope is not None:
            self.poked = True
            scope.cancel()


class _Pumped:
    """A body whose reads cannot be cancelled safely, read by a task of its own.

    Its ``__anext__`` joins everything queued (coalescing) and raises what the
    pump met; the memory channel's receive is what makes it cancel-safe.
    """

    def __init__(self, spawn: Spawn, resp: httpx.Response, reader: _Reader) -> None:
        self._resp = resp
        self._reader = reader
        self._send, self._recv = trio.open_memory_channel[bytes](64)
        self._scope = trio.CancelScope()
        self.done = trio.Event()
        self.failure: httpx.HTTPError | None = None
        self.cut = False  # the owner cancelled the pump: its end is not the body's
        spawn(self._pump)

    async def _pump(self) -> None:
        resp = self._resp
        try:
            with self._scope:
                # We ask upstream for identity encoding; then the raw body is the
                # body. Otherwise httpx decodes it.
                encoding = resp.headers.get("content-encoding", "").strip().lower()
                body = resp.aiter_raw() if encoding in ("", "identity") else resp.aiter_bytes()
                # aclosing: finalise httpx's generator here, not in the GC
                async with contextlib.aclosing(body) as chunks:
                    async for chunk in chunks:
                        await self._send.send(chunk)
        except httpx.HTTPError as e:
            self.failure = e
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client side is gone
        except trio.Cancelled:
            # the scope absorbs its own cancellation: this one came from the owner
            self.cut = self._reader.cut = True  # before the channel closes below
            raise
        finally:
            self._send.close()
            with trio.CancelScope(shield=True):
                await resp.aclose()
            self.done.set()

    def __aiter__(self) -> _Pumped:
        return self

    async def __anext__(self) -> bytes:
        recv = self._recv
        try:
            chunk = await recv.receive()
        except trio.EndOfChannel:
            if self.failure is not None:
                raise self.failure from None
            raise StopAsyncIteration from None
        parts = [chunk]
        while True:
            try:
                parts.append(recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return chunk if len(parts) == 1 else b"".join(parts)

    async def stop(self) -> None:
        self._scope.cancel()
        self._recv.close()
        with trio.CancelScope(shield=True):
            await self.done.wait()


async def _relay(
    spawn: Spawn,
    resp: httpx.Response,
    transform: StreamTransform,
    rlog: RequestLog,
    *,
    keepalive: float,
    on_done: Callable[[], None],
) -> AsyncGenerator[bytes, None]:
    reader = _Reader()
    tick_scope = trio.CancelScope()  # cancelled when the body ends

    async def ticker() -> None:
        # One wake-up per `keepalive` seconds for the whole stream; a read that
        # brought nothing for a full period is interrupted for a keep-alive.
        try:
            with tick_scope:
                seen = reader.events
                while True:
                    await trio.sleep(keepalive)
                    if reader.events == seen:
                        reader.interrupt()
                    seen = reader.events
        except trio.Cancelled:
            # tick_scope absorbs its own cancellation: this one came from the owner
            reader.cut = True
            reader.interrupt()
            raise

    source: AsyncIterator[bytes] | None = cancel_safe_body(resp)
    pumped: _Pumped | None = None
    if source is None:
        source = pumped = _Pumped(spawn, resp, reader)
    spawn(ticker)
    complete = False
    failure: httpx.HTTPError | None = None
    try:
        while True:
            # one pass per keep-alive period (see "Resource handling" above)
            pending = b""
            with trio.CancelScope() as scope:
                reader.scope = scope
                reader.poked = False
                while not reader.cut:
                    reader.reading = True
                    try:
                        chunk = await source.__anext__()
                    except StopAsyncIteration:
                        complete = pumped is None or not pumped.cut
                        break
                    except httpx.HTTPError as e:
                        failure = e
                        break
                    reader.reading = False
                    reader.events += 1
                    out = transform.feed(chunk)
                    if rlog.ttft_ms is None and transform.first_content:
                        rlog.mark_first_token()
                    if reader.poked:
                        pending = out  # yielded once out of the cancelled scope
                        break
                    if out:
                        yield out
            reader.reading = False
            reader.scope = None
            if complete or failure is not None or reader.cut:
                if pending:
                    yield pending
                break
            yield pending or KEEPALIVE
        if reader.cut and not complete and failure is None:
            # what is left of the upstream body is a fragment: the error event
            # is the end (a flush would first close the stream as if complete)
            rlog.error = rlog.error or SHUTDOWN_ERROR
            log.info("request %s: stream ended by the shutdown", rlog.request_id)
            yield transform.fail(SHUTDOWN_ERROR)
            return
        tail = transform.flush()
        if failure is not None:
            # After the first byte there is no failover: say so in the stream
            # instead of ending it as if it were complete.
            rlog.error = f"upstream stream failed: {type(failure).__name__}: {failure}"[:500]
            log.warning("request %s: %s", rlog.request_id, rlog.error)
            tail += transform.fail(rlog.error)
        if tail:
            yield tail
    except (trio.Cancelled, GeneratorExit):
        # cancelled (hypercorn) or closed before its end (the proxy): the client
        # left, unless the server is stopping and cut it
        log.debug("cancelled %s", rlog.request_id)
        rlog.error = rlog.error or (SHUTDOWN_ERROR if reader.cut else "client disconnected")
        raise
    finally:
        tick_scope.cancel()
        with trio.CancelScope(shield=True):
            if pumped is not None:
                await pumped.stop()
            await resp.aclose()
        on_done()

"""Relaying an upstream streaming body to the client.

The upstream body is read by a *pump* task owned by the daemon's nursery and
handed over through a small memory channel. That indirection buys three things:

- **Disconnects are noticed during upstream silence.** A front end (hypercorn,
  the MITM proxy) only learns that an HTTP/1.1 client went away when a write
  fails, so while a reasoning model is silent the relay sends an SSE comment
  (``: keep-alive``) every ``keepalive`` seconds; the failing write cancels the
  request or closes this body, and the pump's cancel scope closes the upstream
  connection at once.
- **Coalescing.** Everything already received is forwarded in one write, so a
  relay that falls behind under load catches up instead of queueing one write
  per event; nothing is ever held back to wait for more.
- **Cancel safety.** Reading upstream is never interrupted by a timeout, so
  no upstream byte is lost or duplicated.
- **Shutdown says so.** The pump's owner (the daemon) cancels it only when the
  server stops and the grace period is over; the relay then ends the stream
  with the API's error event (``server shutting down``) instead of a silent cut,
  and the ledger row records that rather than a client disconnect.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import httpx2 as httpx
import trio

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


async def _relay(
    spawn: Spawn,
    resp: httpx.Response,
    transform: StreamTransform,
    rlog: RequestLog,
    *,
    keepalive: float,
    on_done: Callable[[], None],
) -> AsyncGenerator[bytes, None]:
    send, recv = trio.open_memory_channel[bytes](64)
    pump_scope = trio.CancelScope()  # cancelled when the body ends
    tick_scope = trio.CancelScope()
    pump_done = trio.Event()
    failure: list[BaseException] = []
    cut = trio.Event()  # the owner cancelled the pump: the server is stopping
    last_chunk = [trio.current_time()]

    async def ticker() -> None:
        # One wake-up per `keepalive` seconds instead of a timeout per event
        # (a cancel scope with a deadline costs ~7 µs, a third of an event).
        with tick_scope:
            while True:
                await trio.sleep(keepalive)
                if trio.current_time() - last_chunk[0] >= keepalive:
                    try:
                        send.send_nowait(KEEPALIVE)
                    except trio.WouldBlock:
                        pass  # data is queued: no keep-alive needed
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        return

    async def pump() -> None:
        try:
            with pump_scope:
                # We ask upstream for identity encoding: then the raw body is the
                # body, and httpx's decoder and re-chunker layers can be skipped.
                encoding = resp.headers.get("content-encoding", "").strip().lower()
                body = resp.aiter_raw() if encoding in ("", "identity") else resp.aiter_bytes()
                # aclosing: finalise httpx's generator here, not in the GC
                async with send, contextlib.aclosing(body) as chunks:
                    async for chunk in chunks:
                        last_chunk[0] = trio.current_time()
                        await send.send(chunk)
        except httpx.HTTPError as e:
            failure.append(e)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client side is gone
        except trio.Cancelled:
            # pump_scope absorbs its own cancellation: this one came from outside
            cut.set()
            raise
        finally:
            with trio.CancelScope(shield=True):
                await resp.aclose()
            pump_done.set()

    spawn(pump)
    spawn(ticker)
    try:
        with recv:
            while True:
                try:
                    chunk = await recv.receive()
                except trio.EndOfChannel:
                    break
                if chunk is KEEPALIVE:
                    yield KEEPALIVE
                    continue
                parts = [chunk]
                while True:
                    try:
                        more = recv.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    if more is not KEEPALIVE:
                        parts.append(more)
                out = transform.feed(parts[0] if len(parts) == 1 else b"".join(parts))
                if rlog.ttft_ms is None and transform.first_content:
                    rlog.mark_first_token()
                if out:
                    yield out
        await pump_done.wait()
        if cut.is_set() and not failure:
            # what is left of the upstream body is a fragment: the error event
            # is the end (a flush would first close the stream as if complete)
            rlog.error = rlog.error or SHUTDOWN_ERROR
            log.info("request %s: stream ended by the shutdown", rlog.request_id)
            yield transform.fail(SHUTDOWN_ERROR)
            return
        tail = transform.flush()
        if failure:
            e = failure[0]
            # After the first byte there is no failover: say so in the stream
            # instead of ending it as if it were complete.
            rlog.error = f"upstream stream failed: {type(e).__name__}: {e}"[:500]
            log.warning("request %s: %s", rlog.request_id, rlog.error)
            tail += transform.fail(rlog.error)
        if tail:
            yield tail
    except (trio.Cancelled, GeneratorExit):
        # cancelled (hypercorn) or closed before its end (the proxy): the client
        # left, unless the server is stopping and cut it
        log.debug("cancelled %s", rlog.request_id)
        rlog.error = rlog.error or (SHUTDOWN_ERROR if cut.is_set() else "client disconnected")
        raise
    finally:
        pump_scope.cancel()
        tick_scope.cancel()
        with trio.CancelScope(shield=True):
            await pump_done.wait()
        on_done()

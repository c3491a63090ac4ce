"""The stream relay (serve/pump.py) over a real transport and a real h11 server.

One ``trio.run`` per test holds the server, the transport and the relay; the
"front end" is the test consuming the body, as Quart and the proxy do. Ordering
between server and client goes through ``trio.Event``s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx
import pytest
import trio

from tests.fakes import Exchange, serve_h11
from tokn_router.net.transport import TrioH11Transport
from tokn_router.serve.call import StreamBody
from tokn_router.serve.pump import KEEPALIVE, SHUTDOWN_ERROR, relay_stream
from tokn_router.usage.inflight import RequestLog
from tokn_router.wire.transforms import ChatTransform

GUARD = 10  # seconds; only against hangs, never a timing assertion
ONE = b'data: {"choices":[{"delta":{"content":"one"}}]}\n\n'
TWO = b'data: {"choices":[{"delta":{"content":"two"}}]}\n\n'
DONE = b"data: [DONE]\n\n"

# How the relay gets its upstream response: straight from our transport (what the
# daemon does without an outbound proxy) or through httpx's client and stock
# transport (behind a proxy), whose body needs the pump task.
SOURCES = ["transport", "stock"]


class Owner:
    """The daemon's part: runs the relay's helper tasks and can cut them."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.spawned = 0
        self.scopes: list[trio.CancelScope] = []

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self.spawned += 1
        scope = trio.CancelScope()
        self.scopes.append(scope)

        async def helper() -> None:
            with scope:
                await fn()

        self.nursery.start_soon(helper)

    def cut(self) -> None:
        for scope in self.scopes:
            scope.cancel()


@asynccontextmanager
async def opened(source: str, url: str) -> AsyncIterator[httpx.Response]:
    if source == "transport":
        transport = TrioH11Transport()
        async with httpx.AsyncClient(transport=transport) as c:
            resp = await transport.handle_async_request(c.build_request("POST", url))
            yield resp
    else:
        async with httpx.AsyncClient(trust_env=False) as c:
            resp = await c.send(c.build_request("POST", url), stream=True)
            yield resp


def relay(owner: Owner, resp: httpx.Response, rlog: RequestLog, **kw: Any) -> StreamBody:
    done: list[int] = []
    body = relay_stream(
        owner.spawn,
        resp,
        ChatTransform(drop_usage_chunk=False),
        rlog,
        keepalive=kw.get("keepalive", 60.0),
        on_done=lambda: done.append(1),
    )
    rlog.extra["done"] = done
    return body


def run(fn: Callable[[trio.Nursery], Awaitable[None]]) -> None:
    async def main() -> None:
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                await fn(nursery)
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_the_transports_body_is_read_in_the_consumers_task() -> None:
    async def app(ex: Exchange) -> None:
        await ex.respond(ONE + TWO + DONE, chunked=True)

    async def main(nursery: trio.Nursery) -> None:
        async with serve_h11(app) as srv, opened("transport", srv.url) as resp:
            owner = Owner(nursery)
            rlog = RequestLog(endpoint="/v1/chat/completions")
            body = relay(owner, resp, rlog)
            out = b"".join([chunk async for chunk in body])
            assert out == ONE + TWO + DONE
            # the ticker is the only helper: no pump task, no channel per event
            assert owner.spawned == 1
            assert rlog.error is None and rlog.extra["done"] == [1]

    run(main)


@pytest.mark.parametrize("source", SOURCES)
def test_silence_brings_keepalives_and_loses_no_byte(source: str) -> None:
    kept_alive = trio.Event()

    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(ONE)
        await kept_alive.wait()
        # one event split across two writes: a read cut between them would show
        await ex.send(TWO[:20])
        await ex.send(TWO[20:] + DONE)
        await ex.end()

    async def main(nursery: trio.Nursery) -> None:
        async with serve_h11(app) as srv, opened(source, srv.url) as resp:
            owner = Owner(nursery)
            rlog = RequestLog(endpoint="/v1/chat/completions")
            chunks = []
            async for chunk in relay(owner, resp, rlog, keepalive=0.05):
                chunks.append(chunk)
                if chunk == KEEPALIVE:
                    kept_alive.set()
            assert chunks[0] == ONE and KEEPALIVE in chunks
            assert b"".join(c for c in chunks if c != KEEPALIVE) == ONE + TWO + DONE
            assert rlog.error is None and rlog.extra["done"] == [1]
            assert owner.spawned == (1 if source == "transport" else 2)

        if source == "transport":
            # the body was read whole: the upstream connection stayed clean
            assert srv.closed_connections == 0

    run(main)


@pytest.mark.parametrize("source", SOURCES)
def test_a_cut_stream_ends_with_the_shutdown_error_event(source: str) -> None:
    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(ONE)
        await ex.wait_disconnect()

    async def main(nursery: trio.Nursery) -> None:
        async with serve_h11(app) as srv, opened(source, srv.url) as resp:
            owner = Owner(nursery)
            rlog = RequestLog(endpoint="/v1/chat/completions")
            chunks = []
            async for chunk in relay(owner, resp, rlog):
                chunks.append(chunk)
                if chunk == ONE:
                    owner.cut()  # the grace period is over
            assert chunks[0] == ONE and len(chunks) == 2
            event = json.loads(chunks[1].removeprefix(b"data: "))
            assert event["error"]["message"] == SHUTDOWN_ERROR
            assert rlog.error == SHUTDOWN_ERROR and rlog.extra["done"] == [1]
            # the upstream request was dropped
            while srv.closed_connections == 0:
                await srv.connection_closed.wait()

    run(main)


@pytest.mark.parametrize("source", SOURCES)
def test_a_client_leaving_during_silence_drops_the_upstream(source: str) -> None:
    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(ONE)
        await ex.wait_disconnect()

    async def main(nursery: trio.Nursery) -> None:
        async with serve_h11(app) as srv, opened(source, srv.url) as resp:
            owner = Owner(nursery)
            rlog = RequestLog(endpoint="/v1/chat/completions")
            body = relay(owner, resp, rlog, keepalive=0.05)
            assert await body.__anext__() == ONE
            assert await body.__anext__() == KEEPALIVE
            await body.aclose()  # the front end's write failed: the client is gone
            assert rlog.error == "client disconnected" and rlog.extra["done"] == [1]
            while srv.closed_connections == 0:
                await srv.connection_closed.wait()

    run(main)

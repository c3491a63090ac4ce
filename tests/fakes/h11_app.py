"""A tiny in-process h11 server on 127.0.0.1, for tests that run in one ``trio.run``.

Each request reaches ``app(exchange)``, which answers it piece by piece, so a test
orders server and client through ``trio.Event``s instead of sleeps. Plain TCP, or TLS
with an ``ssl.SSLContext`` (trustme's, in the tests).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial

import h11
import trio

__all__ = ["Exchange", "H11Server", "serve_h11"]


class Exchange:
    """One request as the server sees it, with helpers to answer it."""

    def __init__(
        self,
        server: H11Server,
        stream: trio.abc.Stream,
        h: h11.Connection,
        req: h11.Request,
        body: bytes,
    ) -> None:
        self.server = server
        self.stream = stream
        self.h = h
        self.method = req.method.decode()
        self.target = req.target.decode()
        self.headers = {k.decode(): v.decode() for k, v in req.headers}
        self.body = body
        self.closed = False

    async def _send(self, event: h11.Event) -> None:
        data = self.h.send(event)
        if data:
            await self.stream.send_all(data)

    async def start(self, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        await self._send(h11.Response(status_code=status, headers=list(headers)))

    async def send(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def respond(
        self,
        body: bytes = b"",
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
        *,
        chunked: bool = False,
    ) -> None:
        framing = (
            [("Transfer-Encoding", "chunked")] if chunked else [("Content-Length", str(len(body)))]
        )
        # One write, so a small response reaches the client in one receive.
        out = self.h.send(h11.Response(status_code=status, headers=[*framing, *headers])) or b""
        if body:
            out += self.h.send(h11.Data(data=body)) or b""
        out += self.h.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(out)

    async def close(self) -> None:
        self.closed = True
        await self.stream.aclose()

    async def wait_disconnect(self) -> None:
        """Until the client closes its end (EOF or reset)."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


App = Callable[[Exchange], Awaitable[None]]


class H11Server:
    def __init__(self, app: App) -> None:
        self.app = app
        self.port = 0
        self.connections = 0
        self.requests = 0
        self.closed_connections = 0
        self.connection_closed = trio.Event()  # set whenever one closes; re-armed
        self.alpn: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        h = h11.Connection(h11.SERVER)
        try:
            if isinstance(stream, trio.SSLStream):
                await stream.do_handshake()
                self.alpn.append(stream.selected_alpn_protocol())
            while True:
                req: h11.Request | None = None
                body = bytearray()
                while True:
                    event = h.next_event()
                    if event is h11.NEED_DATA:
                        h.receive_data(bytes(await stream.receive_some(65536)))
                    elif isinstance(event, h11.Request):
                        req = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed: client went away between requests
                        return
                assert req is not None
                self.requests += 1
                ex = Exchange(self, stream, h, req, bytes(body))
                await self.app(ex)
                if ex.closed or h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                    return
                h.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            self.closed_connections += 1
            self.connection_closed.set()
            self.connection_closed = trio.Event()


@asynccontextmanager
async def serve_h11(
    app: App, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[H11Server]:
    server = H11Server(app)
    async with trio.open_nursery() as nursery:
        if ssl_context is None:
            listeners = await nursery.start(
                partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
            )
        else:
            listeners = await nursery.start(
                partial(
                    trio.serve_ssl_over_tcp,
                    server.handle,
                    0,
                    ssl_context,
                    host="127.0.0.1",
                    https_compatible=True,
                )
            )
        listener = listeners[0]
        if isinstance(listener, trio.SSLListener):
            listener = listener.transport_listener
        server.port = listener.socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()

"""The floor: the least a relay on our own stack can do, measured beside tokn-router.

Run as ``python -m bench.floor --upstream URL [--cafile PEM] [--port 0]``; it prints
``listening on http://127.0.0.1:PORT`` once ready and relays until killed.

trio plus h11 on both legs and nothing else: no routing, no accounts, no ledger,
no framework, no httpx. Per client connection, one task reads a request (h11
server), sends it on a pooled keep-alive upstream connection (h11 client; the path
``/v1/chat/completions`` becomes ``/chat/completions``, as tokn-router rewrites it)
and streams the answer back: the h11 ``Data`` events of one upstream read go out in
one downstream write (a ``Content-Length`` body is passed through as such, a chunked
one re-chunked).

TLS to an ``https://`` upstream goes through an ``ssl.SSLObject`` between two
``ssl.MemoryBIO``: every wake-up reads the socket once and decrypts every complete
record received so far, so a burst of events (one TLS record each) costs one pass
through the relay, as it would in tokn-router. Reads wait with
``trio.lowlevel.wait_readable`` and read the socket directly (one scheduler turn per
wake-up); writes use ``trio.SocketStream.send_all``.

It is deliberately self-contained (no tokn_router import): it must not inherit
tokn-router's costs, or its gains.
"""

from __future__ import annotations

import argparse
import errno
import os
import ssl
import sys
import urllib.parse
from functools import partial

import h11
import trio

READ = 65536


async def read_sock(sock: trio.socket.SocketType) -> bytes:
    try:
        data = os.read(sock.fileno(), READ)
    except BlockingIOError:
        pass
    else:
        await trio.lowlevel.checkpoint()
        return data
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return os.read(sock.fileno(), READ)
        except BlockingIOError:
            continue


class Upstream:
    """One keep-alive connection to the upstream (plain or TLS)."""

    def __init__(self, tcp: trio.SocketStream, ctx: ssl.SSLContext | None, host: str) -> None:
        self.tcp = tcp
        self.sock = tcp.socket
        self.h = h11.Connection(h11.CLIENT)
        self.tls: ssl.SSLObject | None = None
        if ctx is not None:
            self.bio_in, self.bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = ctx.wrap_bio(self.bio_in, self.bio_out, server_hostname=host)

    async def handshake(self) -> None:
        tls = self.tls
        assert tls is not None
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.bio_out.pending:
                    await self.tcp.send_all(self.bio_out.read())
                data = await read_sock(self.sock)
                if not data:
                    raise ConnectionError("upstream closed during the TLS handshake") from None
                self.bio_in.write(data)
        if self.bio_out.pending:
            await self.tcp.send_all(self.bio_out.read())

    async def send(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.write(data)
            data = self.bio_out.read()
        await self.tcp.send_all(data)

    async def receive(self) -> bytes:
        """Plaintext of everything complete so far (b"" at EOF)."""
        tls = self.tls
        if tls is None:
            return await read_sock(self.sock)
        while True:
            parts = []
            try:
                while True:
                    piece = tls.read(16384)
                    if not piece:
                        return b"".join(parts)
                    parts.append(piece)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"".join(parts)
            if parts:
                return b"".join(parts)
            data = await read_sock(self.sock)
            if not data:
                self.bio_in.write_eof()
            else:
                self.bio_in.write(data)


class Floor:
    def __init__(self, upstream: str, cafile: str) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.authority = f"{self.host}:{self.port}"
        self.ctx: ssl.SSLContext | None = None
        if u.scheme == "https":
            self.ctx = ssl.create_default_context(cafile=cafile or None)
            self.ctx.set_alpn_protocols(["http/1.1"])
        self.idle: list[Upstream] = []

    async def connect(self) -> Upstream:
        tcp = await trio.open_tcp_stream(self.host, self.port)
        up = Upstream(tcp, self.ctx, self.host)
        if up.tls is not None:
            await up.handshake()
        return up

    async def handle(self, client: trio.SocketStream) -> None:
        try:
            await self._serve(client)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(client)

    async def _serve(self, client: trio.SocketStream) -> None:
        h = h11.Connection(h11.SERVER)
        sock = client.socket
        while True:
            req: h11.Request | None = None
            body = []
            while True:
                ev = h.next_event()
                if ev is h11.NEED_DATA:
                    h.receive_data(await read_sock(sock))
                elif isinstance(ev, h11.Request):
                    req = ev
                elif isinstance(ev, h11.Data):
                    body.append(ev.data)
                elif isinstance(ev, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed (or PAUSED): done with this client
                    return
            assert req is not None
            await self._relay(client, h, req, b"".join(body))
            if h.our_state is not h11.DONE:
                return
            h.start_next_cycle()

    async def _relay(
        self, client: trio.SocketStream, h: h11.Connection, req: h11.Request, body: bytes
    ) -> None:
        up = self.idle.pop() if self.idle else await self.connect()
        target = req.target
        if target.startswith(b"/v1/"):
            target = target[3:]
        headers = [
            (b"host", self.authority.encode()),
            (b"authorization", b"Bearer floor"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        uh = up.h
        out = uh.send(h11.Request(method=req.method, target=target, headers=headers)) or b""
        out += (uh.send(h11.Data(data=body)) or b"") if body else b""
        out += uh.send(h11.EndOfMessage()) or b""
        await up.send(out)
        finished = False
        while not finished:
            ev = uh.next_event()
            if ev is h11.NEED_DATA:
                data = await up.receive()
                uh.receive_data(data)
                continue
            pieces = []
            tail = b""
            # Everything h11 can parse from what was read: one downstream write.
            while ev is not h11.NEED_DATA:
                if isinstance(ev, h11.Response):
                    keep = [
                        (k, v)
                        for k, v in ev.headers
                        if k in (b"content-type", b"content-length", b"transfer-encoding")
                    ]
                    tail += h.send(h11.Response(status_code=ev.status_code, headers=keep)) or b""
                elif isinstance(ev, h11.Data):
                    pieces.append(ev.data)
                elif isinstance(ev, h11.EndOfMessage):
                    finished = True
                    break
                else:
                    raise ConnectionError("upstream closed mid-response")
                ev = uh.next_event()
            if pieces:
                tail += h.send(h11.Data(data=b"".join(pieces))) or b""
            if finished:
                tail += h.send(h11.EndOfMessage()) or b""
            if tail:
                await client.send_all(tail)
        if uh.our_state is h11.DONE and uh.their_state is h11.DONE:
            uh.start_next_cycle()
            self.idle.append(up)
        else:
            await trio.aclose_forcefully(up.tcp)


async def serve(args: argparse.Namespace) -> None:
    floor = Floor(args.upstream, args.cafile)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, floor.handle, args.port, host="127.0.0.1", backlog=4096)
        )
        port = listeners[0].socket.getsockname()[1]
        sys.stdout.write(f"listening on http://127.0.0.1:{port}\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.floor")
    ap.add_argument("--upstream", required=True, help="http(s)://host:port of the fake")
    ap.add_argument("--cafile", default="", help="CA to trust for an https upstream")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        trio.run(serve, args)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # pragma: no cover - a bind failure, reported in one line
        if exc.errno != errno.EINTR:
            sys.exit(f"floor: {exc}")


if __name__ == "__main__":
    main()

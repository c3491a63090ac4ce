"""TLSStream against real TLS peers on 127.0.0.1 (trustme certificates).

The peer under test's control writes its TLS records through an ``ssl.SSLObject``
of its own, so the test decides exactly which records exist and when their bytes
hit the socket. Every test is a plain function running ``trio.run``; ordering goes
through ``trio.Event``s and conditions with a deadline, never sleeps.
"""

from __future__ import annotations

import fcntl
import ssl
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import pytest
import trio
import trio.testing
import trustme

from tokn_router.net.streams import TLSStream

GUARD = 10  # seconds; only against hangs, never a timing assertion


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        with trio.fail_after(GUARD):
            await fn()

    trio.run(main)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    return ctx


class Peer:
    """The server end of one connection: a raw socket plus an SSLObject we drive."""

    def __init__(self, stream: trio.SocketStream, ctx: ssl.SSLContext) -> None:
        self.stream = stream
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    await self.stream.send_all(self.outgoing.read())
                data = await self.stream.receive_some(65536)
                if not data:
                    raise trio.BrokenResourceError("client went away mid-handshake") from None
                self.incoming.write(data)
        if self.outgoing.pending:
            await self.stream.send_all(self.outgoing.read())

    def records(self, *payloads: bytes) -> bytes:
        """Ciphertext with one TLS record per payload (nothing sent yet)."""
        for p in payloads:
            self.tls.write(p)
        return self.outgoing.read()

    async def read_plain(self) -> bytes:
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = await self.stream.receive_some(65536)
                if not data:
                    return b""
                self.incoming.write(data)

    def close_notify(self) -> bytes:
        with suppress(ssl.SSLWantReadError):  # sent; not waiting for the client's
            self.tls.unwrap()
        return self.outgoing.read()


@asynccontextmanager
async def tls_pair(
    ca: trustme.CA, peer_ctx: ssl.SSLContext | None = None, *, handshake: bool = True
) -> AsyncIterator[tuple[TLSStream, Peer]]:
    """A connected (client TLSStream, server Peer), handshake done unless told not to."""
    got: trio.MemorySendChannel[Peer]
    got, get = trio.open_memory_channel[Peer](1)
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await got.send(Peer(stream, peer_ctx or server_ctx(ca)))
        await done.wait()
        await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        client = TLSStream(tcp, client_ctx(ca), server_hostname="127.0.0.1")
        peer = await get.receive()
        if handshake:
            async with trio.open_nursery() as hs:
                hs.start_soon(client.do_handshake)
                hs.start_soon(peer.handshake)
        try:
            yield client, peer
        finally:
            done.set()
            await trio.aclose_forcefully(client)
            nursery.cancel_scope.cancel()


def readable_bytes(stream: trio.SocketStream) -> int:
    """Bytes waiting in the kernel receive buffer of ``stream``'s socket."""
    buf = fcntl.ioctl(stream.socket.fileno(), termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", buf)[0])


async def until_buffered(client: TLSStream, n: int) -> None:
    """Wait (bounded by GUARD) until ``n`` bytes sit unread in the client's socket."""
    tcp = client.transport_stream
    assert isinstance(tcp, trio.SocketStream)
    # A kernel condition no trio event reports: poll it (bounded by GUARD).
    while readable_bytes(tcp) < n:  # noqa: ASYNC110
        await trio.sleep(0.001)


# -- many records, one receive ---------------------------------------------------


def test_every_complete_record_in_one_receive(ca: trustme.CA) -> None:
    events = [b'data: {"n": %d}\n\n' % i for i in range(50)]

    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            wire = peer.records(*events)
            await peer.stream.send_all(wire)
            await until_buffered(client, len(wire))
            # 50 records were waiting: all of their plaintext comes out of one call.
            assert await client.receive_some(65536) == b"".join(events)

    run(main)


def test_partial_record_waits_for_its_rest(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            wire = peer.records(b"first", b"second")
            cut = len(wire) - 3  # the second record is incomplete
            await peer.stream.send_all(wire[:cut])
            await until_buffered(client, cut)
            assert await client.receive_some(65536) == b"first"
            await peer.stream.send_all(wire[cut:])
            assert await client.receive_some(65536) == b"second"

    run(main)


def test_max_bytes_keeps_the_rest_for_the_next_receive(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            wire = peer.records(b"abc", b"defgh")
            await peer.stream.send_all(wire)
            await until_buffered(client, len(wire))
            assert await client.receive_some(4) == b"abcd"
            assert await client.receive_some(65536) == b"efgh"

    run(main)


def test_send_and_receive_from_two_tasks(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await client.receive_some())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await client.send_all(b"ping")
                assert await peer.read_plain() == b"ping"
                await peer.stream.send_all(peer.records(b"pong"))
            assert got == [b"pong"]

    run(main)


def test_two_concurrent_receives_are_refused(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer), trio.open_nursery() as nursery:
            nursery.start_soon(client.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await client.receive_some()
            await peer.stream.send_all(peer.records(b"x"))

    run(main)


# -- the end of the stream -------------------------------------------------------


def test_close_notify_ends_the_stream_cleanly(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            wire = peer.records(b"last words") + peer.close_notify()
            await peer.stream.send_all(wire)
            await until_buffered(client, len(wire))
            assert await client.receive_some() == b"last words"
            assert await client.receive_some() == b""
            assert client.clean_close
            assert await client.receive_some() == b""  # and stays ended

    run(main)


def test_bare_eof_ends_the_stream_without_clean_close(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            await peer.stream.send_all(peer.records(b"cut short"))
            await peer.stream.aclose()  # TCP FIN, no close_notify
            data = b""
            while chunk := await client.receive_some():
                data += chunk
            assert data == b"cut short"
            assert not client.clean_close

    run(main)


def test_aclose_sends_close_notify(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            await client.aclose()
            with pytest.raises(ssl.SSLZeroReturnError):
                # The peer reads our close_notify (SSLObject raises it as ZeroReturn
                # or returns b"" depending on the OpenSSL state; both mean the same).
                if not await peer.read_plain():
                    raise ssl.SSLZeroReturnError
            with pytest.raises(trio.ClosedResourceError):
                await client.receive_some()

    run(main)


def test_tls_error_after_data_is_raised_after_the_data(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            good = peer.records(b"intact")
            bad = bytearray(peer.records(b"tampered"))
            bad[-1] ^= 0xFF  # breaks the record's authentication tag
            await peer.stream.send_all(good + bytes(bad))
            await until_buffered(client, len(good) + len(bad))
            assert await client.receive_some() == b"intact"
            with pytest.raises(trio.BrokenResourceError) as ei:
                await client.receive_some()
            assert isinstance(ei.value.__cause__, ssl.SSLError)
            with pytest.raises(trio.BrokenResourceError):
                await client.send_all(b"after the damage")

    run(main)


# -- handshake -------------------------------------------------------------------


def test_untrusted_certificate_fails_the_handshake(ca: trustme.CA) -> None:
    async def main() -> None:
        other = trustme.CA()
        async with tls_pair(ca, server_ctx(other), handshake=False) as (client, peer):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ignore_broken, peer.handshake)
                with pytest.raises(trio.BrokenResourceError) as ei:
                    await client.do_handshake()
                nursery.cancel_scope.cancel()
            assert isinstance(ei.value.__cause__, ssl.SSLCertVerificationError)
            with pytest.raises(trio.BrokenResourceError):
                await client.receive_some()

    run(main)


def test_server_side_handshake_on_garbage(ca: trustme.CA) -> None:
    async def main() -> None:
        result: list[BaseException] = []
        failed = trio.Event()

        async def handler(stream: trio.SocketStream) -> None:
            tls = TLSStream(stream, server_ctx(ca), server_side=True)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                result.append(exc)
                failed.set()
            finally:
                await trio.aclose_forcefully(tls)

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with await trio.open_tcp_stream("127.0.0.1", port) as tcp:
                await tcp.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await failed.wait()
            nursery.cancel_scope.cancel()
        assert isinstance(result[0].__cause__, ssl.SSLError)

    run(main)


def test_server_side_with_bytes_already_read(ca: trustme.CA) -> None:
    """``initial``: a ClientHello peeked before the stream existed is not lost."""

    async def main() -> None:
        got: list[bytes] = []

        async def handler(stream: trio.SocketStream) -> None:
            first = await stream.receive_some(65536)
            tls = TLSStream(stream, server_ctx(ca), server_side=True, initial=bytes(first))
            got.append(bytes(await tls.receive_some()))
            await tls.send_all(b"hello back")
            await tls.aclose()

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            client = TLSStream(tcp, client_ctx(ca), server_hostname="127.0.0.1")
            await client.send_all(b"hello")  # handshake first, then the data
            assert await client.receive_some() == b"hello back"
            assert await client.receive_some() == b""
            assert client.clean_close
            await client.aclose()
            nursery.cancel_scope.cancel()
        assert got == [b"hello"]

    run(main)


async def _ignore_broken(fn: Callable[[], Awaitable[None]]) -> None:
    with suppress(trio.BrokenResourceError, ssl.SSLError):
        await fn()


# -- cancellation ----------------------------------------------------------------


def test_cancelled_receive_loses_nothing(ca: trustme.CA) -> None:
    async def main() -> None:
        async with tls_pair(ca) as (client, peer):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def cancel_once_blocked() -> None:
                        await trio.testing.wait_all_tasks_blocked()
                        scope.cancel()

                    nursery.start_soon(cancel_once_blocked)
                    await client.receive_some()  # nothing sent yet: blocks until cancelled
            assert scope.cancelled_caught
            # The stream is intact: what comes next is read in full.
            await peer.stream.send_all(peer.records(b"after the cancel"))
            assert await client.receive_some() == b"after the cancel"

    run(main)


def test_socket_closed_by_another_task_mid_read(ca: trustme.CA) -> None:
    """What the transport's read-timeout watchdog does: close the socket under a reader."""

    async def main() -> None:
        async with tls_pair(ca) as (client, _peer):
            tcp = client.transport_stream
            assert isinstance(tcp, trio.SocketStream)
            async with trio.open_nursery() as nursery:

                async def close_once_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    tcp.socket.close()

                nursery.start_soon(close_once_blocked)
                with pytest.raises(trio.ClosedResourceError):
                    await client.receive_some()

    run(main)

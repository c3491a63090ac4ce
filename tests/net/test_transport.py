"""TrioH11Transport against real (tiny, in-process) h11 servers on 127.0.0.1.

Every test is a plain function running ``trio.run``; the server runs in the same
run. Ordering between client and server goes through ``trio.Event``s, never sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx2 as httpx
import pytest
import trio
import trio.lowlevel
import trustme

from tests.fakes import Exchange, serve_h11
from tokn_router.net.transport import TrioH11Transport, cancel_safe_body

GUARD = 10  # seconds; only against hangs, never a timing assertion


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        with trio.fail_after(GUARD):
            await fn()

    trio.run(main)


def client(
    *,
    timeout: httpx.Timeout | None = None,
    verify: ssl.SSLContext | bool = True,
    max_keepalive_connections: int | None = 200,
    keepalive_expiry: float | None = 60.0,
) -> httpx.AsyncClient:
    transport = TrioH11Transport(
        verify=verify,
        max_keepalive_connections=max_keepalive_connections,
        keepalive_expiry=keepalive_expiry,
    )
    return httpx.AsyncClient(transport=transport, timeout=timeout or httpx.Timeout(5.0))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def _client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    return ctx


async def echo(ex: Exchange) -> None:
    """JSON description of the request, Content-Length framed unless ?chunked."""
    body = json.dumps(
        {
            "method": ex.method,
            "target": ex.target,
            "headers": ex.headers,
            "body": ex.body.decode(),
            "n": ex.server.requests,
        }
    ).encode()
    await ex.respond(
        body, headers=[("Content-Type", "application/json")], chunked="chunked" in ex.target
    )


# -- basics --------------------------------------------------------------------


def test_get_content_length_and_chunked() -> None:
    async def main() -> None:
        async with serve_h11(echo) as srv, client() as c:
            r = await c.get(srv.url + "/a?x=1", headers={"X-Test": "yes"})
            assert r.status_code == 200
            assert r.http_version == "HTTP/1.1"
            assert r.reason_phrase == ""  # h11 sends no reason phrase
            assert r.headers["content-length"] == str(len(r.content))
            data = r.json()
            assert data["method"] == "GET"
            assert data["target"] == "/a?x=1"
            assert data["headers"]["host"] == f"127.0.0.1:{srv.port}"
            assert data["headers"]["x-test"] == "yes"

            r = await c.get(srv.url + "/chunked")
            assert r.headers["transfer-encoding"] == "chunked"
            assert r.json()["target"] == "/chunked"

    run(main)


def test_post_bytes_json_and_streamed_bodies() -> None:
    async def main() -> None:
        async with serve_h11(echo) as srv, client() as c:
            r = await c.post(srv.url + "/p", content=b"hello")
            d = r.json()
            assert (d["method"], d["body"]) == ("POST", "hello")
            assert d["headers"]["content-length"] == "5"

            r = await c.post(srv.url + "/p", json={"a": 1})
            assert json.loads(r.json()["body"]) == {"a": 1}

            async def gen() -> AsyncIterator[bytes]:
                yield b"part1-"
                yield b""
                yield b"part2"

            r = await c.post(srv.url + "/p", content=gen())
            d = r.json()
            assert d["body"] == "part1-part2"
            assert d["headers"]["transfer-encoding"] == "chunked"

            r = await c.post(srv.url + "/p")  # empty body: httpx sends Content-Length: 0
            assert r.json()["headers"]["content-length"] == "0"

    run(main)


def test_large_bodies_both_ways() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB

    async def app(ex: Exchange) -> None:
        await ex.respond(ex.body[::-1], chunked=ex.method == "PUT")

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            r = await c.post(srv.url, content=big)
            assert r.content == big[::-1]
            r = await c.put(srv.url, content=big[:200_000])
            assert r.content == big[:200_000][::-1]

    run(main)


def test_head_and_no_content_keep_the_connection() -> None:
    async def app(ex: Exchange) -> None:
        if ex.method == "HEAD":
            await ex.start(200, [("Content-Length", "1234")])
            await ex.end()
        else:
            await ex.start(204)
            await ex.end()

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            r = await c.head(srv.url)
            assert (r.status_code, r.content) == (200, b"")
            r = await c.delete(srv.url)
            assert (r.status_code, r.content) == (204, b"")
            r = await c.head(srv.url)
            assert srv.connections == 1

    run(main)


def test_httpx_client_api_on_top() -> None:
    async def main() -> None:
        async with serve_h11(echo) as srv, client() as c:
            async with c.stream("GET", srv.url + "/s") as r:
                assert r.status_code == 200
                body = b"".join([chunk async for chunk in r.aiter_bytes()])
            assert json.loads(body)["target"] == "/s"

            req = c.build_request("POST", srv.url + "/send", json={"k": "v"})
            r = await c.send(req, stream=True)
            try:
                assert (await r.aread()) == r.content
                assert r.json()["method"] == "POST"
            finally:
                await r.aclose()

            r = await c.get(srv.url + "/chunked")
            lines = [line async for line in r.aiter_lines()]
            assert json.loads("".join(lines))["target"] == "/chunked"
            assert srv.connections == 1

    run(main)


# -- streaming -----------------------------------------------------------------


def test_streaming_arrives_incrementally() -> None:
    first_seen = trio.Event()

    async def app(ex: Exchange) -> None:
        await ex.start(
            200, [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked")]
        )
        await ex.send(b"data: one\n\n")
        await first_seen.wait()  # the client must have got chunk one without chunk two
        await ex.send(b"data: two\n\n")
        await ex.end()

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c, c.stream("GET", srv.url) as r:
            chunks = []
            async for chunk in r.aiter_raw():
                chunks.append(chunk)
                first_seen.set()
            # One item per receive: no re-chunking, no buffering.
            assert chunks == [b"data: one\n\n", b"data: two\n\n"]

    run(main)


def test_closing_mid_stream_closes_the_upstream_connection() -> None:
    disconnected = trio.Event()

    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(b"data: one\n\n")
        await ex.wait_disconnect()  # no more data is ever sent: only a close ends this
        disconnected.set()
        await ex.close()

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            async with (
                c.stream("GET", srv.url) as r,
                contextlib.aclosing(r.aiter_bytes()) as body,
            ):
                async for _ in body:
                    break
            # Leaving the block closed the response mid-body: the server sees EOF.
            await disconnected.wait()

            # Same with a cancelled reader (client disconnect in the daemon).
            disconnected_before = srv.closed_connections
            with trio.move_on_after(0) as scope:
                async with c.stream("GET", srv.url) as r:
                    async for _ in r.aiter_bytes():
                        await trio.sleep_forever()
            assert scope.cancelled_caught
            while srv.closed_connections == disconnected_before:
                await srv.connection_closed.wait()

    run(main)


def test_server_closing_mid_body_is_remote_protocol_error() -> None:
    async def app(ex: Exchange) -> None:
        if ex.target == "/cl":
            await ex.start(200, [("Content-Length", "100")])
        else:
            await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(b"0123456789")
        await ex.close()

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            for path in ("/cl", "/chunked"):
                with pytest.raises(httpx.RemoteProtocolError):
                    await c.get(srv.url + path)
                got = []
                with pytest.raises(httpx.RemoteProtocolError):
                    async with c.stream("GET", srv.url + path) as r:
                        async for chunk in r.aiter_bytes():
                            got.append(chunk)
                assert b"".join(got) == b"0123456789"

    run(main)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_read_timeout_between_chunks(tls: bool, ca: trustme.CA) -> None:
    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(b"data: one\n\n")
        await ex.wait_disconnect()  # never sends the next chunk
        await ex.close()

    async def main() -> None:
        server_ctx = _server_ctx(ca) if tls else None
        timeout = httpx.Timeout(5.0, read=0.2)
        async with (
            serve_h11(app, server_ctx) as srv,
            client(timeout=timeout, verify=_client_ctx(ca)) as c,
        ):
            url = f"{'https' if tls else 'http'}://127.0.0.1:{srv.port}/"
            got = []
            with pytest.raises(httpx.ReadTimeout):
                async with c.stream("GET", url) as r:
                    async for chunk in r.aiter_bytes():
                        got.append(chunk)
            assert got == [b"data: one\n\n"]
            # The timed-out connection was closed, not pooled: the server sees it go.
            while srv.closed_connections < 1:
                await srv.connection_closed.wait()

    run(main)


def test_read_timeout_waiting_for_the_head() -> None:
    async def app(ex: Exchange) -> None:
        await ex.wait_disconnect()
        await ex.close()

    async def main() -> None:
        async with serve_h11(app) as srv, client(timeout=httpx.Timeout(5.0, read=0.2)) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(srv.url)

    run(main)


# -- pool ----------------------------------------------------------------------


def test_keep_alive_reuses_one_connection() -> None:
    async def main() -> None:
        async with serve_h11(echo) as srv, client() as c:
            for i in range(5):
                r = await c.get(srv.url + f"/{i}" + ("?chunked" if i % 2 else ""))
                assert r.json()["target"].startswith(f"/{i}")
            async with c.stream("GET", srv.url) as r:
                await r.aread()
            assert srv.connections == 1
            assert srv.requests == 6

    run(main)


def test_unread_but_complete_response_returns_connection() -> None:
    async def main() -> None:
        async with serve_h11(echo) as srv, client() as c:
            # The body came with the head (one write, one receive), so it is already
            # in h11's buffer: closing the response unread keeps the connection.
            r = await c.send(c.build_request("GET", srv.url), stream=True)
            await r.aclose()
            await c.get(srv.url)
            assert srv.connections == 1

    run(main)


def test_server_closing_idle_connection_is_detected() -> None:
    async def app(ex: Exchange) -> None:
        await ex.respond(b"ok")
        await ex.close()  # no Connection: close header; just drops it while idle

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            assert (await c.get(srv.url)).content == b"ok"
            while srv.closed_connections < 1:
                await srv.connection_closed.wait()
            assert (await c.get(srv.url)).content == b"ok"
            assert srv.connections == 2

    run(main)


def test_reused_connection_closed_before_response_is_retried_once() -> None:
    async def app(ex: Exchange) -> None:
        if ex.server.requests == 2:
            # Reads the request on the kept-alive connection, then drops it unanswered,
            # as a server does when its idle timeout races the client's next request.
            await ex.close()
            return
        await ex.respond(ex.body or b"ok")

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            assert (await c.get(srv.url)).content == b"ok"
            r = await c.post(srv.url, content=b"payload")  # dropped once, then retried
            assert r.content == b"payload"
            assert (srv.connections, srv.requests) == (2, 3)

    run(main)


def test_retry_happens_only_once_and_not_on_fresh_connections() -> None:
    async def app(ex: Exchange) -> None:
        if ex.server.requests == 1:
            await ex.respond(b"ok")
        else:
            await ex.close()

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            assert (await c.get(srv.url)).content == b"ok"
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get(srv.url)  # reused: dropped, retried on a new one: dropped
            assert (srv.connections, srv.requests) == (2, 3)
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get(srv.url)  # fresh connection: no retry
            assert (srv.connections, srv.requests) == (3, 4)

    run(main)


def test_connection_close_and_keepalive_expiry() -> None:
    async def app(ex: Exchange) -> None:
        await ex.respond(b"x", headers=[("Connection", "close")] if ex.target == "/close" else [])

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            await c.get(srv.url + "/close")
            await c.get(srv.url + "/close")
            assert srv.connections == 2
        async with serve_h11(app) as srv, client(keepalive_expiry=0.0) as c:
            await c.get(srv.url)
            await trio.sleep(0.01)  # ordering only: idle for longer than 0 s
            await c.get(srv.url)
            assert srv.connections == 2
        async with serve_h11(app) as srv, client(max_keepalive_connections=0) as c:
            await c.get(srv.url)
            await c.get(srv.url)
            assert srv.connections == 2

    run(main)


def test_concurrent_requests_through_one_client() -> None:
    async def app(ex: Exchange) -> None:
        await trio.lowlevel.checkpoint()
        await ex.respond(ex.target.encode(), chunked=ex.target.endswith("7"))

    async def main() -> None:
        results: dict[int, bytes] = {}
        async with serve_h11(app) as srv, client(max_keepalive_connections=50) as c:

            async def one(i: int) -> None:
                r = await c.get(f"{srv.url}/{i}")
                results[i] = r.content

            for _round in range(2):
                async with trio.open_nursery() as nursery:
                    for i in range(100):
                        nursery.start_soon(one, i)
                assert results == {i: f"/{i}".encode() for i in range(100)}
            assert srv.requests == 200
            # Second round reused the pooled connections (at most 50 kept).
            assert srv.connections <= 150

    run(main)


def test_transport_aclose_closes_idle_connections() -> None:
    async def main() -> None:
        async with serve_h11(echo) as srv:
            async with client() as c:
                await c.get(srv.url)
                assert srv.closed_connections == 0
            while srv.closed_connections < 1:
                await srv.connection_closed.wait()

    run(main)


# -- connecting and TLS --------------------------------------------------------


def test_connect_refused_is_connect_error() -> None:
    async def main() -> None:
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        async with client() as c:
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")

    run(main)


def test_connect_timeout_covers_the_tls_handshake() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        # Accepts TCP and never answers the ClientHello.
        with contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some(65536):
                pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with client(timeout=httpx.Timeout(5.0, connect=0.2)) as c:
                with pytest.raises(httpx.ConnectTimeout):
                    await c.get(f"https://127.0.0.1:{port}/")
            nursery.cancel_scope.cancel()

    run(main)


def test_write_timeout() -> None:
    never = trio.Event()

    async def stuck(stream: trio.SocketStream) -> None:
        await never.wait()  # never reads the request: the client's send blocks

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, stuck, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with client(timeout=httpx.Timeout(5.0, write=0.2)) as c:
                with pytest.raises(httpx.WriteTimeout):
                    await c.post(f"http://127.0.0.1:{port}/", content=b"x" * (64 << 20))
            nursery.cancel_scope.cancel()

    run(main)


def test_unsupported_scheme() -> None:
    async def main() -> None:
        transport = TrioH11Transport()
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/"))

    run(main)


def test_tls_with_trusted_ca(ca: trustme.CA) -> None:
    first_seen = trio.Event()

    async def app(ex: Exchange) -> None:
        if ex.target == "/stream":
            await ex.start(200, [("Transfer-Encoding", "chunked")])
            await ex.send(b"data: one\n\n")
            await first_seen.wait()
            await ex.send(b"data: two\n\n")
            await ex.end()
        else:
            await echo(ex)

    async def main() -> None:
        async with serve_h11(app, _server_ctx(ca)) as srv, client(verify=_client_ctx(ca)) as c:
            url = f"https://127.0.0.1:{srv.port}"
            for _ in range(3):
                r = await c.post(url + "/x", content=b"secret")
                assert r.json()["body"] == "secret"
            chunks = []
            async with c.stream("GET", url + "/stream") as r:
                async for chunk in r.aiter_raw():
                    chunks.append(chunk)
                    first_seen.set()
            assert chunks == [b"data: one\n\n", b"data: two\n\n"]
            assert srv.connections == 1
            assert srv.alpn == ["http/1.1"]

    run(main)


def test_tls_untrusted_certificate_is_connect_error(ca: trustme.CA) -> None:
    async def main() -> None:
        other_ca = trustme.CA()
        async with (
            serve_h11(echo, _server_ctx(ca)) as srv,
            client(verify=_client_ctx(other_ca)) as c,
        ):
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.get(f"https://127.0.0.1:{srv.port}/")
            assert srv.requests == 0

    run(main)


# -- body framing, piece by piece ------------------------------------------------
#
# The decoder is fed through a fake stream that returns exactly the given pieces,
# one per receive_some, so every split point is exercised deterministically.


class PieceStream(trio.abc.Stream):
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise AssertionError("not used")

    async def wait_send_all_might_not_block(self) -> None:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        pass


async def read_body(
    pieces: list[bytes], framing: int, length: int = 0, buffered: bytes = b""
) -> tuple[list[bytes], bool, BaseException | None]:
    """(items yielded, connection pooled afterwards, error raised)."""
    from tokn_router.net import transport as t

    tr = TrioH11Transport(verify=False)
    a, b = trio.socket.socketpair()
    b.close()
    conn = t._Connection((b"http", "x", 80), PieceStream(pieces), a)
    request = httpx.Request("GET", "http://x/")
    stream = t._ResponseStream(tr, conn, request, None, framing, length, buffered, True)
    items: list[bytes] = []
    error: BaseException | None = None
    try:
        async for item in stream:
            assert item, "no empty items"
            assert type(item) is bytes
            items.append(item)
    except httpx.HTTPError as exc:
        error = exc
    await stream.aclose()
    pooled = tr._idle_count == 1
    a.close()
    return items, pooled, error


def _chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return out + b"0\r\n" + trailer + b"\r\n"


def test_chunked_decoding_at_every_split_point() -> None:
    from tokn_router.net.transport import _CHUNKED

    parts = [b"data: a\n\n", b"x" * 300, b"\r\n\r\n", b"z"]
    wire = _chunked(parts)
    expected = b"".join(parts)

    async def main() -> None:
        items, pooled, error = await read_body([wire], _CHUNKED)
        assert (items, pooled, error) == ([expected], True, None)  # one receive, one item
        for i in range(1, len(wire)):
            pieces = [wire[:i], wire[i:]]
            items, pooled, error = await read_body(pieces, _CHUNKED)
            assert (b"".join(items), pooled, error) == (expected, True, None), i
            assert len(items) <= 2
            # The same split, with the first piece arriving together with the head.
            items, pooled, error = await read_body(pieces[1:], _CHUNKED, buffered=pieces[0])
            assert (b"".join(items), pooled, error) == (expected, True, None), i
        bytewise = [wire[i : i + 1] for i in range(len(wire))]
        items, pooled, error = await read_body(bytewise, _CHUNKED)
        assert (b"".join(items), pooled, error) == (expected, True, None)

    run(main)


def test_chunked_extensions_whitespace_and_trailers() -> None:
    from tokn_router.net.transport import _CHUNKED

    wire = b"5;name=val\r\nhello\r\nA \r\n0123456789\r\n0;end\r\nX-Trailer: 1\r\nY: 2\r\n\r\n"

    async def main() -> None:
        items, pooled, error = await read_body([wire], _CHUNKED)
        assert (items, pooled, error) == ([b"hello0123456789"], True, None)
        items, pooled, error = await read_body(list(map(bytes, zip(wire, strict=True))), _CHUNKED)
        assert (b"".join(items), pooled, error) == (b"hello0123456789", True, None)

    run(main)


@pytest.mark.parametrize(
    ("wire", "data"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", b""),  # not hex
        (b"5\r\nhelloXX0\r\n\r\n", b"hello"),  # no CRLF after the data
        (b"5\r\nhel", b"hel"),  # EOF inside a chunk
        (b"5\r\nhello\r\n", b"hello"),  # EOF before the last chunk
        (b"5\r\nhello\r\n0\r\n", b"hello"),  # EOF inside the trailer
        (b"5" * 5000, b""),  # endless size line
    ],
)
def test_chunked_framing_errors(wire: bytes, data: bytes) -> None:
    from tokn_router.net.transport import _CHUNKED

    async def main() -> None:
        items, pooled, error = await read_body([wire], _CHUNKED)
        assert b"".join(items) == data  # what came before the damage is delivered
        assert isinstance(error, httpx.RemoteProtocolError)
        assert not pooled

    run(main)


def test_bytes_after_the_body_prevent_reuse() -> None:
    from tokn_router.net.transport import _CHUNKED, _LENGTH

    async def main() -> None:
        items, pooled, error = await read_body([_chunked([b"ab"]) + b"HTTP/1.1 200"], _CHUNKED)
        assert (items, pooled, error) == ([b"ab"], False, None)
        items, pooled, error = await read_body([b"abcdef"], _LENGTH, 3)
        assert (items, pooled, error) == ([b"abc"], False, None)

    run(main)


def test_content_length_and_read_until_close_bodies() -> None:
    from tokn_router.net.transport import _LENGTH, _UNTIL_EOF

    async def main() -> None:
        items, pooled, error = await read_body([b"ab", b"cd", b"e"], _LENGTH, 5)
        assert (items, pooled, error) == ([b"ab", b"cd", b"e"], True, None)
        items, pooled, error = await read_body([b"cde"], _LENGTH, 5, buffered=b"ab")
        assert (items, pooled, error) == ([b"ab", b"cde"], True, None)
        items, pooled, error = await read_body([b"ab"], _LENGTH, 5)
        assert items == [b"ab"] and not pooled
        assert isinstance(error, httpx.RemoteProtocolError)
        assert "received 2 bytes, expected 5" in str(error)
        items, pooled, error = await read_body([b"ab", b"cd"], _UNTIL_EOF, buffered=b"0")
        assert (items, pooled, error) == ([b"0", b"ab", b"cd"], False, None)

    run(main)


def test_unread_body_in_buffer_is_reused_on_aclose() -> None:
    from tokn_router.net import transport as t

    async def main() -> None:
        tr = TrioH11Transport(verify=False)
        a, b = trio.socket.socketpair()
        conn = t._Connection((b"http", "x", 80), PieceStream([]), a)
        request = httpx.Request("GET", "http://x/")
        stream = t._ResponseStream(tr, conn, request, None, t._CHUNKED, 0, _chunked([b"hi"]), True)
        await stream.aclose()  # never iterated
        assert tr._idle_count == 1
        await tr.aclose()
        b.close()

    run(main)


# -- read-timeout watchdog -------------------------------------------------------


def test_slow_consumer_is_not_a_read_timeout() -> None:
    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        for i in range(3):
            await ex.send(b"%d" % i)
        await ex.end()

    async def main() -> None:
        async with serve_h11(app) as srv, client(timeout=httpx.Timeout(5.0, read=0.1)) as c:
            got = []
            async with c.stream("GET", srv.url) as r:
                async for chunk in r.aiter_bytes():
                    got.append(chunk)
                    # Slower than the read timeout, but not waiting on the upstream.
                    await trio.sleep(0.3)
            assert b"".join(got) == b"012"

    run(main)


def test_one_transport_across_trio_runs() -> None:
    transport = TrioH11Transport(verify=False)

    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(b"first")
        await ex.wait_disconnect()
        await ex.close()

    async def main() -> None:
        async with serve_h11(app) as srv:
            c = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, read=0.1))
            with pytest.raises(httpx.ReadTimeout):
                async with c.stream("GET", srv.url) as r:
                    async for _ in r.aiter_bytes():
                        pass

    # The watchdog task belongs to a run; the second run needs (and gets) its own.
    run(main)
    run(main)


# -- the trust store (net/client.py tls_context) ---------------------------------


def _subject_hash(pem: Path) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-subject_hash", "-noout", "-in", str(pem)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _system_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    hashed: list[trustme.CA],
    bundle: list[trustme.CA],
    fillers: int = 0,
) -> None:
    """Make ``hashed`` the system's hashed directory and ``bundle`` its bundle file.

    ``fillers`` more hashed names make the directory look like a full root store;
    OpenSSL never opens them (no certificate asks for their hash).
    """
    certs = tmp_path / "certs"
    certs.mkdir()
    for i, ca in enumerate(hashed):
        pem = tmp_path / f"hashed-{i}.pem"
        ca.cert_pem.write_to_path(str(pem))
        (certs / f"{_subject_hash(pem)}.0").write_bytes(pem.read_bytes())
    for i in range(fillers):
        (certs / f"fffe{i:04x}.0").write_text("never read\n")
    bundle_file = tmp_path / "bundle.pem"
    bundle_file.write_bytes(b"".join(ca.cert_pem.bytes() for ca in bundle))

    def paths() -> ssl.DefaultVerifyPaths:
        # As the real one: cafile and capath reflect the variables when they are set.
        return ssl.DefaultVerifyPaths(
            os.environ.get("SSL_CERT_FILE") or str(bundle_file),
            os.environ.get("SSL_CERT_DIR") or str(certs),
            "SSL_CERT_FILE",
            str(bundle_file),
            "SSL_CERT_DIR",
            str(certs),
        )

    monkeypatch.setattr(ssl, "get_default_verify_paths", paths)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


async def _verifies(ctx: ssl.SSLContext, server_ca: trustme.CA) -> bool:
    async with serve_h11(echo, _server_ctx(server_ca)) as srv, client(verify=ctx) as c:
        try:
            r = await c.get(f"https://127.0.0.1:{srv.port}/")
        except httpx.ConnectError as exc:
            assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
            return False
        return r.status_code == 200


def test_trust_store_full_hashed_directory_is_read_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokn_router.net.client import tls_context

    root, other = trustme.CA(), trustme.CA()
    _system_store(tmp_path, monkeypatch, hashed=[root], bundle=[other], fillers=120)
    ctx = tls_context.__wrapped__()
    # Nothing parsed up front: the directory is looked up during the handshake.
    assert ctx.cert_store_stats()["x509_ca"] == 0

    async def main() -> None:
        assert await _verifies(ctx, root)
        # The directory stands for the whole store: the bundle is not read.
        assert not await _verifies(ctx, other)

    run(main)


def test_trust_store_partial_hashed_directory_keeps_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokn_router.net.client import tls_context

    local, public = trustme.CA(), trustme.CA()
    _system_store(tmp_path, monkeypatch, hashed=[local], bundle=[public])
    ctx = tls_context.__wrapped__()

    async def main() -> None:
        assert await _verifies(ctx, local)
        assert await _verifies(ctx, public)

    run(main)


def test_ssl_cert_file_adds_to_the_system_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokn_router.net.client import tls_context

    root, corporate = trustme.CA(), trustme.CA()
    _system_store(tmp_path, monkeypatch, hashed=[root], bundle=[], fillers=120)
    extra = tmp_path / "corporate.pem"
    corporate.cert_pem.write_to_path(str(extra))
    monkeypatch.setenv("SSL_CERT_FILE", str(extra))
    ctx = tls_context.__wrapped__()

    async def main() -> None:
        assert await _verifies(ctx, root)
        assert await _verifies(ctx, corporate)

    run(main)


# -- cancel-safe body reads ------------------------------------------------------


def test_a_cancelled_body_read_loses_nothing_and_reads_on() -> None:
    """The relay interrupts a silent read for a keep-alive, then reads on (serve/pump.py)."""
    interrupted = trio.Event()

    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(b"data: one\n\n")
        await interrupted.wait()
        await ex.send(b"data: two\n\n")
        await ex.end()

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            req = c.build_request("GET", srv.url)
            r = await c._transport.handle_async_request(req)
            body = cancel_safe_body(r)
            assert body is not None
            assert await body.__anext__() == b"data: one\n\n"
            with trio.CancelScope() as scope:
                scope.cancel()  # the read is cancelled as it waits
                await body.__anext__()
            assert scope.cancelled_caught
            interrupted.set()
            assert [chunk async for chunk in body] == [b"data: two\n\n"]
            # the body was read to its end: the connection went back to the pool
            await c.get(srv.url)
            assert (srv.connections, srv.closed_connections) == (1, 0)

    run(main)


def test_interrupted_reads_keep_the_read_timeout() -> None:
    """Keep-alive interruptions do not restart the silence a read timeout measures."""

    async def app(ex: Exchange) -> None:
        await ex.start(200, [("Transfer-Encoding", "chunked")])
        await ex.send(b"data: one\n\n")
        await ex.wait_disconnect()  # then silence

    async def main() -> None:
        async with serve_h11(app) as srv, client(timeout=httpx.Timeout(5.0, read=0.3)) as c:
            r = await c._transport.handle_async_request(c.build_request("GET", srv.url))
            body = cancel_safe_body(r)
            assert body is not None
            await body.__anext__()
            # interrupted every 50 ms: without the kept deadline no read would ever
            # see 0.3 s of silence, and GUARD would fail the test
            with pytest.raises(httpx.ReadTimeout):
                while True:
                    with trio.move_on_after(0.05):
                        await body.__anext__()

    run(main)


def test_cancel_safe_body_only_for_this_transports_plain_bodies() -> None:
    async def app(ex: Exchange) -> None:
        gzip = [("Content-Encoding", "gzip")] if ex.target == "/gz" else []
        await ex.respond(b"x", headers=gzip)

    async def main() -> None:
        async with serve_h11(app) as srv, client() as c:
            r = await c._transport.handle_async_request(c.build_request("GET", srv.url + "/gz"))
            assert cancel_safe_body(r) is None  # needs httpx's decoder
            await r.aclose()
            async with c.stream("GET", srv.url) as r:
                assert cancel_safe_body(r) is None  # wrapped by AsyncClient.send

    run(main)

"""The proxy listener over real sockets on 127.0.0.1: MITM, tunnels, forwarding, bad clients."""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trio
import trustme
from cryptography import x509

from tokn_router.edges.proxy.ca import CertStore
from tokn_router.edges.proxy.exchange import ProxyRequestContext
from tokn_router.edges.proxy.listener import (
    ConnectUpstream,
    Handler,
    open_direct,
    serve_proxy,
)

pytestmark = pytest.mark.anyio

INTERCEPTED = "api.example.test"
HELP = "tokn-router proxy help: use me as HTTPS_PROXY\n"


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CertStore:
    return CertStore(tmp_path_factory.mktemp("state") / "ca").load()


@pytest.fixture(scope="module")
def origin_ca() -> trustme.CA:
    return trustme.CA()


def _trusting(cafile: Path | None = None, ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if ca is not None:
        ca.configure_trust(ctx)
    return ctx


class LogWatcher(logging.Handler):
    """Lets a test wait (without sleeping) until the proxy has logged something."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pred: Callable[[logging.LogRecord], bool]) -> logging.LogRecord:
        while True:
            changed = self._changed
            for r in self.records:
                if pred(r):
                    return r
            await changed.wait()


@pytest.fixture(autouse=True)
def proxy_log() -> Iterator[LogWatcher]:
    """Every test: the proxy's log, and no per-connection error escaping as "unexpected"."""
    watcher = LogWatcher()
    logger = logging.getLogger("tokn_router.proxy")
    old_level = logger.level
    logger.addHandler(watcher)
    logger.setLevel(logging.DEBUG)
    yield watcher
    logger.removeHandler(watcher)
    logger.setLevel(old_level)
    unexpected = [r.getMessage() for r in watcher.records if "unexpected error" in r.getMessage()]
    assert not unexpected


@contextlib.asynccontextmanager
async def running_proxy(
    store: CertStore,
    handler: Handler,
    *,
    head_timeout: float = 10.0,
    handshake_timeout: float = 10.0,
    connect_upstream: ConnectUpstream = open_direct,
    intercept: Callable[[str, int], bool] = lambda host, port: host == INTERCEPTED,
) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(
                serve_proxy,
                "127.0.0.1",
                0,
                intercept=intercept,
                handler=handler,
                certstore=store,
                connect_upstream=connect_upstream,
                help_text=HELP,
                head_timeout=head_timeout,
                handshake_timeout=handshake_timeout,
                idle_timeout=10.0,
                connect_timeout=5.0,
            )
        )
        yield port
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def tls_origin(ca: trustme.CA, body: bytes = b"hello from origin") -> AsyncIterator[int]:
    """A real HTTPS server on 127.0.0.1 with a trustme certificate for ``localhost``."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)

    async def handle(stream: trio.SSLStream[trio.SocketStream]) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some()
                if not data:
                    return
                buf += data
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            await stream.aclose()  # with close_notify: the client sees a clean end

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_ssl_over_tcp, handle, 0, server_ctx, host="127.0.0.1")
        )
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def plain_origin(seen: list[bytes]) -> AsyncIterator[int]:
    """A plain HTTP server that records request heads and streams a chunked answer."""

    async def handle(stream: trio.SocketStream) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some()
            if not data:
                return
            buf += data
        seen.append(buf)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            b"X-Origin: yes\r\n\r\n5\r\nplain\r\n7\r\n origin\r\n0\r\n\r\n"
        )

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def echo_handler(ctx: ProxyRequestContext) -> None:
    body = await ctx.read_body()
    text = f"{ctx.method} {ctx.url} user={ctx.proxy_username} abs={ctx.absolute_form} body={body.decode()}"
    await ctx.respond(
        200,
        [
            ("content-type", "text/plain"),
            ("x-client-port", str(ctx.client[1] if ctx.client else 0)),
        ],
        text.encode(),
    )


async def read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some()
        assert data, f"connection closed after {buf!r}"
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


async def read_all(stream: trio.abc.Stream) -> bytes:
    buf = b""
    while data := await stream.receive_some():
        buf += data
    return buf


async def assert_help_served(port: int) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/")
    assert r.status_code == 200 and r.text == HELP


# -------------------------------------------------------------------- MITM


async def test_intercepted_connect_reaches_handler(store: CertStore) -> None:
    async with (
        running_proxy(store, echo_handler) as port,
        httpx.AsyncClient(
            proxy=f"http://passthrough@127.0.0.1:{port}", verify=_trusting(store.cert_path)
        ) as client,
    ):
        r1 = await client.post(f"https://{INTERCEPTED}/v1/chat/completions?x=1", content=b'{"a":1}')
        r2 = await client.get(f"https://{INTERCEPTED}:443/v1/models")
    assert r1.status_code == 200
    assert (
        r1.text
        == f'POST https://{INTERCEPTED}/v1/chat/completions?x=1 user=passthrough abs=False body={{"a":1}}'
    )
    assert r2.text == f"GET https://{INTERCEPTED}/v1/models user=passthrough abs=False body="
    # Keep-alive: both requests came over one connection (one CONNECT, one handshake).
    assert r1.headers["x-client-port"] == r2.headers["x-client-port"]


async def test_chunked_upload_reaches_handler(store: CertStore) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for p in (b"one,", b"two,", b"three"):
            yield p

    async with (
        running_proxy(store, echo_handler) as port,
        httpx.AsyncClient(
            proxy=f"http://127.0.0.1:{port}", verify=_trusting(store.cert_path)
        ) as client,
    ):
        r = await client.post(f"https://{INTERCEPTED}/upload", content=parts())
    assert r.text.endswith("user=None abs=False body=one,two,three")


async def test_streamed_response_is_unbuffered(store: CertStore) -> None:
    release = trio.Event()
    handler_done = trio.Event()

    async def sse_handler(ctx: ProxyRequestContext) -> None:
        await ctx.start_response(200, [("content-type", "text/event-stream")])
        await ctx.send(b"data: one\n\n")
        await release.wait()  # the client must see "one" while we are still here
        await ctx.send(b"data: two\n\n")
        handler_done.set()

    async with (
        running_proxy(store, sse_handler) as port,
        httpx.AsyncClient(
            proxy=f"http://127.0.0.1:{port}", verify=_trusting(store.cert_path)
        ) as client,
    ):
        with trio.fail_after(10):  # a buffering proxy would deadlock here
            async with client.stream("POST", f"https://{INTERCEPTED}/v1/chat/completions") as r:
                assert r.headers["transfer-encoding"] == "chunked"
                chunks = r.aiter_raw()
                first = await chunks.__anext__()
                assert first == b"data: one\n\n"
                assert not handler_done.is_set()
                release.set()
                rest = b"".join([c async for c in chunks])
    assert rest == b"data: two\n\n"
    assert handler_done.is_set()


async def test_failing_handler_gives_502_and_proxy_lives_on(
    store: CertStore, proxy_log: LogWatcher
) -> None:
    async def handler(ctx: ProxyRequestContext) -> None:
        if ctx.path == "/boom":
            raise RuntimeError("handler bug")
        if ctx.path == "/silent":
            return
        await ctx.respond(200, body=b"fine")

    async with (
        running_proxy(store, handler) as port,
        httpx.AsyncClient(
            proxy=f"http://127.0.0.1:{port}", verify=_trusting(store.cert_path)
        ) as client,
    ):
        r = await client.get(f"https://{INTERCEPTED}/boom")
        assert r.status_code == 502 and "internal error" in r.text
        r = await client.get(f"https://{INTERCEPTED}/silent")
        assert r.status_code == 502
        r = await client.get(f"https://{INTERCEPTED}/ok")
        assert r.text == "fine"
    bug = await proxy_log.wait_for(
        lambda r: r.levelno == logging.WARNING and r.exc_info is not None
    )
    assert "handler failed" in bug.getMessage()


async def _open_tunnel(port: int, target: str = f"{INTERCEPTED}:443") -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head, rest = await read_head(stream)
    assert head.startswith(b"HTTP/1.1 200 Connection Established") and rest == b""
    return stream


async def test_plain_http_inside_connect_tunnel(store: CertStore) -> None:
    # Served (curl --proxytunnel to an http:// URL does this), one request only: the
    # answer says "Connection: close" and the tunnel closes, keep-alive asked or not.
    async with running_proxy(store, echo_handler, head_timeout=30) as port:
        stream = await _open_tunnel(port, f"{INTERCEPTED}:80")
        async with stream:
            # sent in pieces: the method is recognised before its space arrives
            for piece in (b"GE", b"T /x HTTP/1.1\r\n", f"Host: {INTERCEPTED}\r\n\r\n".encode()):
                await stream.send_all(piece)
            with trio.fail_after(5):
                answer = await read_all(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower()
    assert body == f"GET http://{INTERCEPTED}/x user=None abs=False body=".encode()


@pytest.mark.parametrize(
    "garbage",
    [b"\x00garbage", b"hello there\r\n", b"A" * 40, b"\xff\xfe\r\n\r\n", b"SSH-2.0-OpenSSH\r\n"],
)
async def test_garbage_inside_an_intercepted_tunnel_closes_it_at_once(
    store: CertStore, garbage: bytes, proxy_log: LogWatcher
) -> None:
    # deadlines far longer than the bound below: the close is the proxy's decision
    async with running_proxy(store, echo_handler, head_timeout=60, handshake_timeout=60) as port:
        async with await _open_tunnel(port) as stream:
            await stream.send_all(garbage)
            with trio.fail_after(5):
                rest = await read_all(stream)
        assert not rest.startswith(b"HTTP/1.1 2")
        await proxy_log.wait_for(lambda r: "proxy client" in r.getMessage())
        await assert_help_served(port)


async def test_tls_handshake_must_finish_within_the_deadline(
    store: CertStore, proxy_log: LogWatcher
) -> None:
    async with running_proxy(store, echo_handler, head_timeout=60, handshake_timeout=0.5) as port:
        silent = await _open_tunnel(port)
        half = await _open_tunnel(port)
        async with silent, half:
            await half.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # hello start
            await assert_help_served(port)  # others are served meanwhile
            with trio.fail_after(10):
                assert await read_all(silent) == b"", "a tunnel that never starts TLS is closed"
                assert await read_all(half) == b"", "and one whose handshake stalls"
        await proxy_log.wait_for(lambda r: "TooSlowError" in r.getMessage())
        # a handshake that does finish in time is served as before
        async with httpx.AsyncClient(
            proxy=f"http://127.0.0.1:{port}", verify=_trusting(store.cert_path)
        ) as client:
            r = await client.get(f"https://{INTERCEPTED}/ok")
        assert r.status_code == 200


async def _tls_tunnel(port: int, store: CertStore) -> trio.SSLStream[trio.SocketStream]:
    tls = trio.SSLStream(
        await _open_tunnel(port), _trusting(store.cert_path), server_hostname=INTERCEPTED
    )
    await tls.do_handshake()
    return tls


async def _tls_read_all(tls: trio.SSLStream[trio.SocketStream]) -> bytes:
    out = b""
    with contextlib.suppress(trio.BrokenResourceError):  # closed without close_notify
        while data := await tls.receive_some():
            out += data
    return out


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            f"GET /x HTTP/1.1\r\nHost: {INTERCEPTED}\r\nX-Big: ".encode()
            + b"a" * (70 * 1024)
            + b"\r\n\r\n",
            431,
        ),
        (
            f"GET /x HTTP/1.1\r\nHost: {INTERCEPTED}\r\n".encode()
            + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
            + b"\r\n",
            431,
        ),
        (b"GET /x?" + b"a" * 9000 + f" HTTP/1.1\r\nHost: {INTERCEPTED}\r\n\r\n".encode(), 414),
        (f"GET /x HTTP/2.0\r\nHost: {INTERCEPTED}\r\n\r\n".encode(), 400),
    ],
)
async def test_head_limits_inside_the_tls_tunnel(
    store: CertStore, request_bytes: bytes, status: int
) -> None:
    seen: list[str] = []

    async def handler(ctx: ProxyRequestContext) -> None:
        seen.append(ctx.path)
        await echo_handler(ctx)

    async with running_proxy(store, handler) as port:
        tls = await _tls_tunnel(port, store)
        async with tls:
            # the whole head in one write: TLS hands it over in one piece
            await tls.send_all(
                request_bytes + f"GET /next HTTP/1.1\r\nHost: {INTERCEPTED}\r\n\r\n".encode()
            )
            with trio.fail_after(10):
                answer = await _tls_read_all(tls)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:100]
    assert b"connection: close" in answer.lower()
    assert answer.count(b"HTTP/1.1 ") == 1 and seen == [], "nothing after it is served"


class EagerConnect(trio.abc.Stream):
    """Client side of a CONNECT that starts TLS without waiting for the 200.

    The CONNECT head goes out in the same write as the ClientHello, so the proxy
    receives the hello as bytes trailing the head (some clients really do this).
    """

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self._stream = stream
        self._head: bytes | None = head
        self._answered = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            data, self._head = self._head + bytes(data), None
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._answered:
            head, rest = await read_head(self._stream)
            assert head.startswith(b"HTTP/1.1 200 ")
            self._answered = True
            if rest:
                return rest
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


async def test_client_hello_sent_with_the_connect_head(store: CertStore) -> None:
    async with running_proxy(store, echo_handler) as port:
        raw = await trio.open_tcp_stream("127.0.0.1", port)
        head = f"CONNECT {INTERCEPTED}:443 HTTP/1.1\r\nHost: {INTERCEPTED}:443\r\n\r\n".encode()
        tls = trio.SSLStream(
            EagerConnect(raw, head), _trusting(store.cert_path), server_hostname=INTERCEPTED
        )
        async with tls:
            await tls.send_all(
                f"GET /eager HTTP/1.1\r\nHost: {INTERCEPTED}\r\nConnection: close\r\n\r\n".encode()
            )
            answer = await read_all(tls)
    assert answer.endswith(f"GET https://{INTERCEPTED}/eager user=None abs=False body=".encode())


async def test_expect_100_continue_and_head(store: CertStore) -> None:
    async with running_proxy(store, echo_handler) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"POST http://api.example.test/up HTTP/1.1\r\nHost: api.example.test\r\n"
                b"Content-Length: 4\r\nExpect: 100-continue\r\n\r\n"
            )
            interim, rest = await read_head(stream)
            assert interim.startswith(b"HTTP/1.1 100 ") and rest == b""
            await stream.send_all(b"data")
            head, body = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 200 ")
            while not body.endswith(b"body=data"):
                body += await stream.receive_some()
            # HEAD on the same connection: the length is announced, no body follows.
            await stream.send_all(
                b"HEAD http://api.example.test/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n")
    as_get = f"HEAD http://{INTERCEPTED}/h user=None abs=True body="
    assert f"content-length: {len(as_get)}\r\n".encode() in answer.lower()


async def test_unread_body_is_drained_for_keep_alive(store: CertStore) -> None:
    async def handler(ctx: ProxyRequestContext) -> None:
        port = str(ctx.client[1] if ctx.client else 0)
        await ctx.respond(200, [("x-client-port", port)], b"ignored your body")

    async with (
        running_proxy(store, handler) as port,
        httpx.AsyncClient(
            proxy=f"http://127.0.0.1:{port}", verify=_trusting(store.cert_path)
        ) as client,
    ):
        r1 = await client.post(f"https://{INTERCEPTED}/a", content=b"x" * 100_000)
        r2 = await client.get(f"https://{INTERCEPTED}/b")
    assert r1.text == r2.text == "ignored your body"
    assert r1.headers["x-client-port"] == r2.headers["x-client-port"]


# ------------------------------------------------------------------ tunnels


async def test_other_hosts_are_tunnelled_with_their_own_certificate(
    store: CertStore, origin_ca: trustme.CA
) -> None:
    connected: list[tuple[str, int]] = []

    async def connect_upstream(host: str, port: int) -> trio.abc.Stream:
        connected.append((host, port))
        return await open_direct(host, port)

    async with (
        tls_origin(origin_ca) as origin_port,
        running_proxy(store, echo_handler, connect_upstream=connect_upstream) as port,
    ):
        # A client trusting only the origin's CA: succeeds only if bytes pass untouched.
        async with httpx.AsyncClient(
            proxy=f"http://127.0.0.1:{port}", verify=_trusting(ca=origin_ca)
        ) as client:
            r = await client.get(f"https://localhost:{origin_port}/")
        assert r.text == "hello from origin"

        # And the certificate seen through the tunnel is the origin's, not ours.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            f"CONNECT localhost:{origin_port} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        )
        head, _ = await read_head(stream)
        assert head.startswith(b"HTTP/1.1 200 ")
        tls = trio.SSLStream(stream, _trusting(ca=origin_ca), server_hostname="localhost")
        async with tls:
            await tls.do_handshake()
            der = tls.getpeercert(binary_form=True)
            await tls.send_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert (await read_all(tls)).endswith(b"hello from origin")
    cert = x509.load_der_x509_certificate(der)
    assert cert.issuer != store.certificate.subject
    assert cert.issuer == x509.load_pem_x509_certificate(origin_ca.cert_pem.bytes()).subject
    assert connected == [("localhost", origin_port)] * 2


async def test_unreachable_tunnel_target_is_502(store: CertStore) -> None:
    async def refuse(host: str, port: int) -> trio.abc.Stream:
        raise OSError(f"no route to {host}")

    async with running_proxy(store, echo_handler, connect_upstream=refuse) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"CONNECT elsewhere.example:443 HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n"
            )
            answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 502 ")
        assert b"elsewhere.example:443" in answer
        await assert_help_served(port)


# --------------------------------------------------------- absolute-form http


async def test_absolute_form_to_other_host_is_forwarded(store: CertStore) -> None:
    seen: list[bytes] = []
    async with (
        plain_origin(seen) as origin_port,
        running_proxy(store, echo_handler) as port,
        httpx.AsyncClient(proxy=f"http://switch:pw@127.0.0.1:{port}") as client,
    ):
        r = await client.get(f"http://127.0.0.1:{origin_port}/hello?x=1", headers={"X-Mine": "1"})
    assert r.status_code == 200 and r.text == "plain origin" and r.headers["x-origin"] == "yes"
    request = seen[0].lower()
    assert request.startswith(b"get /hello?x=1 http/1.1\r\n"), "origin-form upstream"
    assert b"x-mine: 1" in request
    assert b"proxy-authorization" not in request


async def test_forwarding_uses_the_url_authority_as_host(store: CertStore) -> None:
    seen: list[bytes] = []
    async with plain_origin(seen) as origin_port, running_proxy(store, echo_handler) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"GET http://127.0.0.1:{origin_port}/x HTTP/1.1\r\nHost: wrong.example\r\n"
                "Proxy-Connection: keep-alive\r\nConnection: close\r\n\r\n".encode()
            )
            answer = await read_all(stream)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"0\r\n\r\n")
    request = seen[0].lower()
    assert f"host: 127.0.0.1:{origin_port}\r\n".encode() in request
    assert b"wrong.example" not in request and b"proxy-connection" not in request


async def test_absolute_form_to_intercepted_host_goes_to_handler(store: CertStore) -> None:
    async with (
        running_proxy(store, echo_handler) as port,
        httpx.AsyncClient(proxy=f"http://route@127.0.0.1:{port}") as client,
    ):
        r = await client.post(f"http://{INTERCEPTED}/v1/models", content=b"x")
    assert r.text == f"POST http://{INTERCEPTED}/v1/models user=route abs=True body=x"


# ------------------------------------------------------------ help and bad clients


async def test_get_root_returns_help(store: CertStore) -> None:
    async with running_proxy(store, echo_handler) as port:
        await assert_help_served(port)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/elsewhere")
        assert r.status_code == 404 and HELP in r.text


async def test_garbage_gets_400_and_proxy_lives_on(store: CertStore, proxy_log: LogWatcher) -> None:
    async with running_proxy(store, echo_handler) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"\x16\x03\x01\x02\x00garbage\x00\xff\r\n\r\n")
            answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 400 ")
        await proxy_log.wait_for(
            lambda r: r.levelno == logging.DEBUG and "ProxyProtocolError" in r.getMessage()
        )
        await assert_help_served(port)


async def test_close_mid_handshake_leaves_proxy_serving(
    store: CertStore, proxy_log: LogWatcher
) -> None:
    async with running_proxy(store, echo_handler) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            f"CONNECT {INTERCEPTED}:443 HTTP/1.1\r\nHost: {INTERCEPTED}\r\n\r\n".encode()
        )
        await read_head(stream)
        await stream.send_all(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        )  # a truncated ClientHello
        await stream.aclose()
        record = await proxy_log.wait_for(lambda r: "proxy client" in r.getMessage())
        assert record.levelno == logging.DEBUG
        await assert_help_served(port)


async def test_untrusted_certificate_leaves_proxy_serving(
    store: CertStore, proxy_log: LogWatcher
) -> None:
    async with running_proxy(store, echo_handler) as port:
        async with httpx.AsyncClient(
            proxy=f"http://127.0.0.1:{port}"
        ) as client:  # system roots only
            with pytest.raises(httpx.ConnectError):
                await client.get(f"https://{INTERCEPTED}/")
        record = await proxy_log.wait_for(lambda r: "proxy client" in r.getMessage())
        assert record.levelno == logging.DEBUG and "SSL" in record.getMessage()
        await assert_help_served(port)


async def test_idle_client_is_dropped_without_blocking_others(
    store: CertStore, proxy_log: LogWatcher
) -> None:
    async with running_proxy(store, echo_handler, head_timeout=0.5) as port:
        silent = await trio.open_tcp_stream("127.0.0.1", port)
        partial = await trio.open_tcp_stream("127.0.0.1", port)
        async with silent, partial:
            await partial.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            await assert_help_served(port)  # served while both are connected
            with trio.fail_after(10):
                assert await silent.receive_some() == b"", "the proxy closes a silent client"
                assert await partial.receive_some() == b"", "and one that stops mid-head"
        await proxy_log.wait_for(lambda r: "TooSlowError" in r.getMessage())
        await assert_help_served(port)


async def test_many_bad_clients_at_once(store: CertStore) -> None:
    async def bad(port: int, payload: bytes) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(payload)

    payloads = [
        b"",
        b"\xff" * 100,
        b"CONNECT nope HTTP/1.1\r\nHost: x\r\n\r\n",
        f"CONNECT {INTERCEPTED}:443 HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03".encode(),
        b"GET http://[::1/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ] * 4
    async with running_proxy(store, echo_handler) as port:
        async with trio.open_nursery() as nursery:
            for p in payloads:
                nursery.start_soon(bad, port, p)
        await assert_help_served(port)


async def test_connect_to_uncertifiable_intercepted_host(
    store: CertStore, proxy_log: LogWatcher
) -> None:
    # A 64-character label passes CONNECT parsing but cannot go into a certificate.
    bad = "a" * 64 + ".example"
    async with running_proxy(store, echo_handler, intercept=lambda h, p: True) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"CONNECT {bad}:443 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head, _ = await read_head(stream)
            assert head.startswith(b"HTTP/1.1 200 ")
            await stream.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            assert await read_all(stream) == b""
        record = await proxy_log.wait_for(lambda r: "invalid host name" in r.getMessage())
        assert record.levelno == logging.DEBUG
        await assert_help_served(port)

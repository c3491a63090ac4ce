"""``open_upstream``: raw TCP streams direct and through HTTP, HTTPS and SOCKS5 proxies.

The targets are the fake upstream (plain HTTP on 127.0.0.1) and the fixture proxies;
small purpose-built servers in this file cover what those cannot (a TLS proxy, SOCKS
username/password, bytes sent right after the CONNECT answer, a silent proxy).
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import ssl
import struct
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import pytest
import trio
import trustme

from tests.fakes import FakeUpstream
from tests.fakes.proxies import HttpProxy, Socks5Proxy
from tokn_router.net.client import ProxySetting
from tokn_router.net.tunnels import (
    OutboundError,
    _env_no_proxy_match,
    open_upstream,
    parse_proxy_url,
    proxy_for,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


def _port(fake: FakeUpstream) -> int:
    port = urllib.parse.urlsplit(fake.url).port
    assert port is not None
    return port


async def _get_echo(stream: trio.abc.Stream, host: str) -> dict[str, Any]:
    """One HTTP/1.1 request over ``stream``; the fake's /echo answer as JSON."""
    conn = h11.Connection(h11.CLIENT)
    req = h11.Request(
        method="GET", target="/echo/ok", headers=[("Host", host), ("Connection", "close")]
    )
    await stream.send_all((conn.send(req) or b"") + (conn.send(h11.EndOfMessage()) or b""))
    body = b""
    status = 0
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(ev, h11.Response):
            status = ev.status_code
        elif isinstance(ev, h11.Data):
            body += ev.data
        elif isinstance(ev, h11.EndOfMessage):
            break
    await stream.aclose()
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert text and "\n" not in text
    assert "Traceback" not in text
    return text


@contextlib.asynccontextmanager
async def _server(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> AsyncIterator[int]:
    """A throwaway TCP server in this test's own trio loop; yields its port."""

    async def safe(stream: trio.SocketStream) -> None:
        with contextlib.suppress(Exception):
            async with stream:
                await handler(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, safe, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def _read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = await stream.receive_some(n - len(buf))
        if not data:
            raise EOFError
        buf += data
    return buf


# ----------------------------------------------------------------------- direct


async def test_direct(fake: FakeUpstream, http_proxy: HttpProxy) -> None:
    stream = await open_upstream(ProxySetting(), "127.0.0.1", _port(fake))
    assert isinstance(stream, trio.SocketStream)
    echo = await _get_echo(stream, "127.0.0.1")
    assert echo["path"] == "/echo/ok"
    assert http_proxy.records == []


async def test_direct_failure_is_one_line() -> None:
    port = _dead_port()
    with pytest.raises(OutboundError) as ei:
        await open_upstream(ProxySetting(), "127.0.0.1", port)
    assert _one_line(ei.value) == f"cannot connect to 127.0.0.1:{port}: Connection refused"


async def test_no_proxy_entry_bypasses_the_proxy(fake: FakeUpstream, http_proxy: HttpProxy) -> None:
    setting = ProxySetting(url=http_proxy.url, no_proxy=("127.0.0.1",))
    await _get_echo(await open_upstream(setting, "127.0.0.1", _port(fake)), "127.0.0.1")
    assert http_proxy.records == []


# ------------------------------------------------------------------- HTTP proxy


async def test_http_proxy_resolves_the_name(fake: FakeUpstream, http_proxy: HttpProxy) -> None:
    http_proxy.hosts["upstream.test"] = "127.0.0.1"  # only the proxy knows this name
    port = _port(fake)
    stream = await open_upstream(ProxySetting(url=http_proxy.url), "upstream.test", port)
    echo = await _get_echo(stream, f"upstream.test:{port}")
    assert echo["headers"]["host"] == f"upstream.test:{port}"
    (rec,) = http_proxy.records
    assert (rec.kind, rec.host, rec.port, rec.ok) == ("connect", "upstream.test", port, True)
    assert rec.target == f"upstream.test:{port}"
    assert "proxy-authorization" not in rec.headers


async def test_http_proxy_basic_auth(fake: FakeUpstream, http_proxy: HttpProxy) -> None:
    http_proxy.auth = ("alice", "p@ss:w rd")
    user = "alice:" + urllib.parse.quote("p@ss:w rd", safe="")
    url = http_proxy.url.replace("http://", f"http://{user}@")
    stream = await open_upstream(ProxySetting(url=url), "127.0.0.1", _port(fake))
    await _get_echo(stream, "127.0.0.1")
    (rec,) = http_proxy.records
    assert rec.auth_user == "alice"
    assert rec.ok


async def test_http_proxy_auth_missing(fake: FakeUpstream, http_proxy: HttpProxy) -> None:
    http_proxy.auth = ("alice", "secret")
    port = _port(fake)
    with pytest.raises(OutboundError) as ei:
        await open_upstream(ProxySetting(url=http_proxy.url), "127.0.0.1", port)
    where = http_proxy.url.removeprefix("http://")
    assert _one_line(ei.value) == (
        f"http proxy {where} refused CONNECT to 127.0.0.1:{port} "
        "(407 Proxy Authentication Required)"
    )


async def test_http_proxy_refused_connect(http_proxy: HttpProxy) -> None:
    with pytest.raises(OutboundError) as ei:
        await open_upstream(ProxySetting(url=http_proxy.url), "no-such-host.invalid", 443)
    assert _one_line(ei.value).endswith(
        "refused CONNECT to no-such-host.invalid:443 (502 Bad Gateway)"
    )
    assert http_proxy.records[0].error


async def test_dead_proxy() -> None:
    port = _dead_port()
    with pytest.raises(OutboundError) as ei:
        await open_upstream(ProxySetting(url=f"http://127.0.0.1:{port}"), "example.com", 443)
    assert _one_line(ei.value) == (
        f"cannot connect to http proxy 127.0.0.1:{port}: Connection refused"
    )


async def test_bytes_after_the_connect_answer_are_kept() -> None:
    async def eager_proxy(stream: trio.SocketStream) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        # A server-first protocol: its greeting arrives in the same segment as the 200.
        await stream.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\nHELLO ")
        assert await _read_exactly(stream, 4) == b"ping"
        await stream.send_all(b"WORLD")

    async with _server(eager_proxy) as port:
        stream = await open_upstream(ProxySetting(url=f"http://127.0.0.1:{port}"), "x.test", 25)
        assert isinstance(stream, trio.abc.HalfCloseableStream)
        assert await stream.receive_some(3) == b"HEL"
        assert await stream.receive_some() == b"LO "
        await stream.send_all(b"ping")
        assert await _read_exactly(stream, 5) == b"WORLD"
        await stream.aclose()


async def test_silent_proxy_times_out() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with _server(silent) as port:
        with pytest.raises(OutboundError) as ei:
            await open_upstream(
                ProxySetting(url=f"http://127.0.0.1:{port}"), "x.test", 443, timeout=0.3
            )
    assert _one_line(ei.value) == (
        f"timed out after 0.3s connecting to x.test:443 via http proxy 127.0.0.1:{port}"
    )


async def test_https_proxy(
    fake: FakeUpstream,
    http_proxy: HttpProxy,
    trustme_ca: trustme.CA,
    client_ssl_context: ssl.SSLContext,
) -> None:
    """TLS to the proxy first: a TLS front (trustme cert) in front of the fixture proxy."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme_ca.issue_cert("localhost").configure_cert(server_ctx)
    proxy_port = _port_of(http_proxy.url)

    async def tls_front(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        await tls.do_handshake()
        inner = await trio.open_tcp_stream("127.0.0.1", proxy_port)

        async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
            nursery.cancel_scope.cancel()

        async with inner, trio.open_nursery() as nursery:
            nursery.start_soon(pump, tls, inner)
            nursery.start_soon(pump, inner, tls)

    http_proxy.hosts["upstream.test"] = "127.0.0.1"
    async with _server(tls_front) as port:
        setting = ProxySetting(url=f"https://localhost:{port}")
        stream = await open_upstream(
            setting, "upstream.test", _port(fake), ssl_context=client_ssl_context
        )
        await _get_echo(stream, "upstream.test")
        assert http_proxy.records[0].host == "upstream.test"

        # the proxy's certificate is checked: an untrusting context refuses it
        with pytest.raises(OutboundError) as ei:
            await open_upstream(
                setting, "upstream.test", _port(fake), ssl_context=ssl.create_default_context()
            )
    assert _one_line(ei.value).startswith(
        f"TLS to https proxy localhost:{port} failed: certificate verify failed"
    )


def _port_of(url: str) -> int:
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    return port


# ---------------------------------------------------------------------- SOCKS5


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_socks5_sends_the_name(
    scheme: str, fake: FakeUpstream, socks_proxy: Socks5Proxy
) -> None:
    socks_proxy.hosts["upstream.test"] = "127.0.0.1"  # resolvable only at the proxy
    url = socks_proxy.url.replace("socks5://", f"{scheme}://")
    port = _port(fake)
    stream = await open_upstream(ProxySetting(url=url), "upstream.test", port)
    echo = await _get_echo(stream, "upstream.test")
    assert echo["path"] == "/echo/ok"
    (rec,) = socks_proxy.records
    assert (rec.host, rec.port, rec.atyp, rec.ok) == ("upstream.test", port, "domain", True)


async def test_socks5_ip_literal(fake: FakeUpstream, socks_proxy: Socks5Proxy) -> None:
    stream = await open_upstream(ProxySetting(url=socks_proxy.url), "127.0.0.1", _port(fake))
    await _get_echo(stream, "127.0.0.1")
    assert socks_proxy.records[0].atyp == "ipv4"


async def test_socks5_refused(socks_proxy: Socks5Proxy) -> None:
    with pytest.raises(OutboundError) as ei:
        await open_upstream(ProxySetting(url=socks_proxy.url), "no-such-host.invalid", 443)
    where = socks_proxy.url.removeprefix("socks5://")
    assert _one_line(ei.value) in {
        f"socks5 proxy {where} refused CONNECT to no-such-host.invalid:443 ({why})"
        for why in ("host unreachable", "connection refused")
    }


async def test_dead_socks_proxy() -> None:
    port = _dead_port()
    with pytest.raises(OutboundError) as ei:
        await open_upstream(ProxySetting(url=f"socks5h://127.0.0.1:{port}"), "x.test", 443)
    assert _one_line(ei.value) == (
        f"cannot connect to socks5h proxy 127.0.0.1:{port}: Connection refused"
    )


def _socks_auth_server(user: bytes, password: bytes) -> Callable[[trio.SocketStream], Any]:
    """RFC 1929 username/password, then CONNECT answered by the server itself."""

    async def handle(stream: trio.SocketStream) -> None:
        _ver, n = await _read_exactly(stream, 2)
        methods = await _read_exactly(stream, n)
        if 2 not in methods:
            await stream.send_all(b"\x05\xff")
            return
        await stream.send_all(b"\x05\x02")
        _v, ulen = await _read_exactly(stream, 2)
        got_user = await _read_exactly(stream, ulen)
        (plen,) = await _read_exactly(stream, 1)
        got_pass = await _read_exactly(stream, plen)
        if (got_user, got_pass) != (user, password):
            await stream.send_all(b"\x01\x01")
            return
        await stream.send_all(b"\x01\x00")
        _v, _cmd, _rsv, atyp = await _read_exactly(stream, 4)
        assert atyp == 3
        (ln,) = await _read_exactly(stream, 1)
        name = await _read_exactly(stream, ln)
        (port,) = struct.unpack("!H", await _read_exactly(stream, 2))
        # success + the first bytes of the "target" in the same segment
        reply = b"\x05\x00\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", 1080)
        await stream.send_all(reply + b"hi %s:%d" % (name, port))

    return handle


async def test_socks5_username_password() -> None:
    async with _server(_socks_auth_server(b"bob", b"s3:cret")) as port:
        good = ProxySetting(url=f"socks5h://bob:s3%3Acret@127.0.0.1:{port}")
        stream = await open_upstream(good, "target.test", 8443)
        assert await _read_exactly(stream, 19) == b"hi target.test:8443"
        await stream.aclose()

        with pytest.raises(OutboundError) as ei:
            await open_upstream(
                ProxySetting(url=f"socks5://bob:wrong@127.0.0.1:{port}"), "target.test", 1
            )
        assert _one_line(ei.value) == (
            f"socks5 proxy 127.0.0.1:{port} rejected the username/password"
        )

        with pytest.raises(OutboundError) as ei:
            await open_upstream(ProxySetting(url=f"socks5://127.0.0.1:{port}"), "target.test", 1)
        assert "accepts none of our authentication methods" in _one_line(ei.value)


# ----------------------------------------------------------------- environment


async def test_system_proxy_from_environment(
    fake: FakeUpstream, http_proxy: HttpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    setting = ProxySetting(use_env=True)
    port = _port(fake)

    # nothing set: direct
    await _get_echo(await open_upstream(setting, "127.0.0.1", port), "127.0.0.1")
    assert http_proxy.records == []

    # read at call time, not when the setting was made
    monkeypatch.setenv("HTTPS_PROXY", http_proxy.url)
    await _get_echo(await open_upstream(setting, "127.0.0.1", port), "127.0.0.1")
    assert [r.port for r in http_proxy.records] == [port]

    monkeypatch.setenv("NO_PROXY", "localhost, 127.0.0.1")
    await _get_echo(await open_upstream(setting, "127.0.0.1", port), "127.0.0.1")
    assert len(http_proxy.records) == 1


def test_proxy_choice_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://plain:3128")
    monkeypatch.setenv("ALL_PROXY", "socks5h://all:1080")
    env = ProxySetting(use_env=True)
    assert proxy_for(env, "api.example.com", 443) == "socks5h://all:1080"
    assert proxy_for(env, "api.example.com", 80) == "http://plain:3128"
    monkeypatch.setenv("https_proxy", "http://secure:3128")
    assert proxy_for(env, "api.example.com", 443) == "http://secure:3128"
    # config no_proxy applies on top of NO_PROXY
    assert (
        proxy_for(ProxySetting(use_env=True, no_proxy=(".example.com",)), "a.example.com", 443)
        is None
    )
    # a configured url wins and the environment is ignored
    assert proxy_for(ProxySetting(url="http://cfg:1"), "api.example.com", 443) == "http://cfg:1"
    assert proxy_for(ProxySetting(), "api.example.com", 443) is None


@pytest.mark.parametrize(
    ("value", "host", "port", "bypass"),
    [
        ("*", "anything", 443, True),
        ("example.com", "api.example.com", 443, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        (".example.com", "example.com", 443, True),
        ("internal:8443", "internal", 8443, True),
        ("internal:8443", "internal", 443, False),
        ("::1", "::1", 443, True),
        ("[::1]:443", "::1", 443, True),
        ("[::1]:443", "::1", 80, False),
        (" a , ,b ", "b", 1, True),
    ],
)
def test_env_no_proxy(value: str, host: str, port: int, bypass: bool) -> None:
    assert _env_no_proxy_match(value, host, port) is bypass


def test_parse_proxy_url() -> None:
    p = parse_proxy_url("http://us%40er:p%3Ass@proxy.example.com:8080")
    assert (p.scheme, p.host, p.port, p.username, p.password) == (
        "http",
        "proxy.example.com",
        8080,
        "us@er",
        "p:ss",
    )
    assert parse_proxy_url("socks5h://[::1]").port == 1080
    assert parse_proxy_url("proxy:3128").scheme == "http"
    with pytest.raises(OutboundError) as ei:
        parse_proxy_url("ftp://user:hunter2@proxy:21")
    assert "hunter2" not in _one_line(ei.value)
    assert "unsupported proxy scheme 'ftp'" in str(ei.value)

"""Hostile input on the MITM proxy of a real ``serve --with-proxy``, over raw sockets.

Unsupported versions, oversized heads (outside and inside the TLS tunnel), garbage
and plain HTTP inside an intercepted tunnel, deep JSON in every route mode, bodies
over ``max_body_bytes``. Every refusal is a 4xx and ends the connection; the
daemon keeps serving, and its config, tokens and ledger rows survive.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeUpstream
from tests.helpers import ledger_rows

MAX_BODY = 1024 * 1024  # above the deep bodies below (~600 KB)
DEEP = 100_000
OPENAI = "api.openai.com"
COPILOT = "api.githubcopilot.com"
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def proxy(fake: FakeUpstream, write_config, daemon, env_home, wait_for) -> Any:
    write_config(
        {
            "server": {"max_body_bytes": MAX_BODY},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon("--with-proxy", "--proxy-port", "0")
    d.proxy_port = int(d.proxy_url.rsplit(":", 1)[1])
    d.ca = env_home.state_dir / "ca" / "ca.crt"
    status, _, _ = request(mitm(d, OPENAI), post("/v1/chat/completions", CHAT))
    assert status == 200
    wait_for(lambda: "access_token" in env_home.config_path.read_text())
    d.config_before = tomllib.loads(env_home.config_path.read_text())
    return d


# --------------------------------------------------------------------- sockets


def connect(d: Any) -> socket.socket:
    return socket.create_connection(("127.0.0.1", d.proxy_port), timeout=20)


def tunnel(d: Any, host: str) -> socket.socket:
    s = connect(d)
    s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200 "), head
    return s


def mitm(d: Any, host: str) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(d.ca))
    return ctx.wrap_socket(tunnel(d, host), server_hostname=host)


def read_until_closed(s: socket.socket) -> bytes:
    """All bytes until the proxy closes (the socket timeout is the deadline)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ssl.SSLEOFError, ConnectionResetError):
        pass  # closed without close_notify: closed all the same
    return out


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def request(s: socket.socket, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request and its Content-Length answer; the connection stays open."""
    s.sendall(data)
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = s.recv(65536)
        assert chunk, raw
        raw += chunk
    status, headers, body = parse(raw)
    while len(body) < int(headers["content-length"]):
        body += s.recv(65536)
    return status, headers, body


def refused(s: socket.socket, data: bytes, status: int) -> bytes:
    """``data`` is answered ``status``, then the connection is closed."""
    s.sendall(data)
    raw = read_until_closed(s)
    got, headers, body = parse(raw)
    assert got == status, raw[:300]
    assert headers.get("connection") == "close"
    return body


def post(path: str, body: bytes | dict[str, Any], *, host: str = OPENAI, **headers: str) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n{extra}\r\n"
    ).encode() + data


def openai_invalid(body: bytes) -> dict[str, Any]:
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    return err


def assert_survived(d: Any, env_home: Any, refused_rows: int) -> None:
    status, _, body = request(mitm(d, OPENAI), post("/v1/chat/completions", CHAT))
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "Echo: hi"
    assert tomllib.loads(env_home.config_path.read_text()) == d.config_before
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    rows = ledger_rows(env_home.state_dir)
    assert [r["status"] for r in rows if r["status"] == 200] == [200, 200]
    assert len([r for r in rows if r["status"] in (400, 413)]) == refused_rows


# ----------------------------------------------------------------------- tests


def test_bad_heads_are_refused_outside_and_inside_the_tunnel(
    fake: FakeUpstream, proxy: Any, env_home: Path
) -> None:
    d = proxy
    big = b"X-Big: " + b"a" * (70 * 1024) + b"\r\n"
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
    # the proxy's own connection: CONNECT and plain-HTTP (absolute-form) requests
    for version in (b"9.9", b"2.0", b"1.2"):
        connect_line = b"CONNECT api.openai.com:443 HTTP/" + version
        refused(connect(d), connect_line + b"\r\nHost: api.openai.com:443\r\n\r\n", 400)
    echo = f"http://127.0.0.1:{fake.port}/echo"
    start = f"GET {echo} HTTP/1.1\r\nHost: 127.0.0.1:{fake.port}\r\n".encode()
    refused(connect(d), start + big + b"\r\n", 431)
    refused(connect(d), start + many + b"\r\n", 431)
    refused(connect(d), f"GET {echo}?q={'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414)
    assert not fake.requests_to("/echo"), "a refused request is never forwarded"
    # inside the MITM tunnel: the same limits
    inner = f"GET /v1/models HTTP/1.1\r\nHost: {OPENAI}\r\n".encode()
    refused(mitm(d, OPENAI), inner + big + b"\r\n", 431)
    refused(mitm(d, OPENAI), inner + many + b"\r\n", 431)
    refused(
        mitm(d, OPENAI), b"GET /v1/models?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414
    )
    refused(mitm(d, OPENAI), f"GET /v1/models HTTP/2.0\r\nHost: {OPENAI}\r\n\r\n".encode(), 400)
    # a WebSocket upgrade inside the tunnel is answered as the plain request it also is
    ws = inner + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    ws += b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    status, _, body = request(mitm(d, OPENAI), ws)
    assert status == 200 and json.loads(body)["data"]
    assert_survived(d, env_home, refused_rows=0)


def test_tunnel_garbage_closes_and_plain_http_is_one_request(proxy: Any, env_home: Any) -> None:
    d = proxy
    for garbage in (b"\x00garbage", b"GARBAGE-WITHOUT-END" * 4, b"hello\r\n\r\n"):
        s = tunnel(d, OPENAI)
        s.settimeout(5)  # far below every deadline of the proxy
        s.sendall(garbage)
        assert read_until_closed(s) == b""
    # plain HTTP inside CONNECT: served, then the tunnel closes although keep-alive was asked
    s = tunnel(d, OPENAI)
    s.settimeout(5)
    s.sendall(f"GET /v1/models HTTP/1.1\r\nHost: {OPENAI}\r\n\r\n".encode())
    status, headers, body = parse(read_until_closed(s))
    assert status == 200 and headers["connection"] == "close"
    assert json.loads(body)["data"]
    assert_survived(d, env_home, refused_rows=0)


def test_deep_json_and_big_bodies_in_every_route_mode(proxy: Any, env_home: Any) -> None:
    d = proxy
    deep_arrays = b'{"model":"gpt-4.1","messages":' + b"[" * DEEP + b"]" * DEEP + b"}"
    deep_objects = b'{"model":"gpt-4.1","messages":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}"
    cases = [
        ("/v1/chat/completions", OPENAI, {}),
        ("/v1/responses", OPENAI, {}),
        ("/v1/embeddings", OPENAI, {}),
        ("/v1/chat/completions", OPENAI, {"x_route_mode": "passthrough"}),
        ("/chat/completions", COPILOT, {"x_route_mode": "switch"}),
    ]
    for path, host, headers in cases:
        for deep in (deep_arrays, deep_objects):
            s = mitm(d, host)
            status, _, body = request(s, post(path, deep, host=host, **headers))
            assert status == 400, (path, headers, body[:200])
            assert "nests deeper" in openai_invalid(body)["message"]
    # Anthropic's endpoint answers in its own shape
    status, _, body = request(mitm(d, OPENAI), post("/v1/messages", deep_arrays))
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    # over [server] max_body_bytes: 413, in route mode and when forwarding
    big = {**CHAT, "pad": "x" * MAX_BODY}
    for headers in ({}, {"x_route_mode": "passthrough"}):
        status, _, body = request(mitm(d, OPENAI), post("/v1/chat/completions", big, **headers))
        assert status == 413, body[:200]
        assert json.loads(body)["error"]["type"] == "invalid_request_error"
    # each refused model request keeps its row
    assert_survived(d, env_home, refused_rows=2 * len(cases) + 1 + 2)


def test_a_bad_intercept_hosts_entry_is_a_config_error(fake: FakeUpstream, write_config, daemon):
    write_config(
        {
            "proxy_mode": {"intercept_hosts": ["good.example", "bad.example:http"]},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon("--with-proxy", "--proxy-port", "0", ready=False)
    assert d.wait_exit(20) == 2
    lines = d.stderr_text.strip().splitlines()
    assert lines[-1] == (
        "tokn-router: error: [proxy_mode] intercept_hosts: invalid port in 'bad.example:http'"
    )
    assert "Traceback" not in d.stderr_text

"""Sans-I/O proxy HTTP parsing: plain byte strings in, events and bytes out, no sockets."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import h11
import pytest

from tokn_router.wire.http1 import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    NEED_DATA,
    PAUSED,
    Body,
    ConnectionClosed,
    EndOfRequest,
    Event,
    ProxyProtocolError,
    RequestHead,
    RequestKind,
    ServerConnection,
    classify,
    head_problem,
    origin_path,
    parse_authority,
    proxy_username,
)


def _splits(data: bytes) -> Iterator[list[bytes]]:
    """The same bytes cut at every position, plus one byte at a time."""
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[i : i + 7] for i in range(0, len(data), 7)]


def _drain(conn: ServerConnection, pieces: list[bytes]) -> list[Event]:
    """Feed ``pieces`` one by one, collecting events until data is needed or paused.

    Empty pieces are skipped: ``receive_data(b"")`` means end of stream.
    """
    events: list[Event] = []
    for piece in [p for p in pieces if p] or [b""]:
        if piece:
            conn.receive_data(piece)
        while True:
            ev = conn.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                break
            events.append(ev)
    return events


def _head(data: bytes) -> RequestHead:
    conn = ServerConnection()
    conn.receive_data(data)
    ev = conn.next_event()
    assert isinstance(ev, RequestHead)
    return ev


def _basic(userpass: str) -> str:
    return "Basic " + base64.b64encode(userpass.encode()).decode()


# ---------------------------------------------------------------- classification


def test_connect_is_classified_with_host_and_port() -> None:
    req = classify(
        _head(b"CONNECT API.OpenAI.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
    )
    assert (req.kind, req.host, req.port, req.path, req.username) == (
        RequestKind.CONNECT,
        "api.openai.com",
        443,
        "",
        None,
    )


def test_connect_ipv6_literal() -> None:
    req = classify(_head(b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"))
    assert (req.host, req.port) == ("::1", 8443)


@pytest.mark.parametrize(
    "authority",
    [
        "api.openai.com",  # CONNECT needs a port
        "api.openai.com:0",
        "api.openai.com:65536",
        "api.openai.com:https",
        "::1:443",  # IPv6 without brackets
        "[::1",
        "[1.2.3.4]:443",
        "[::1]443",
        "user@host:443",
        "-bad.example:443",
        "bad_.exa$mple:443",
        ":443",
    ],
)
def test_invalid_authorities(authority: str) -> None:
    with pytest.raises(ProxyProtocolError) as ei:
        parse_authority(authority)
    assert ei.value.status == 400


def test_authority_default_port_and_trailing_dot() -> None:
    assert parse_authority("Example.COM.", default_port=80) == ("example.com", 80)
    assert parse_authority("[::FFFF:127.0.0.1]", default_port=80) == ("::ffff:7f00:1", 80)


def test_absolute_form_is_forward() -> None:
    req = classify(
        _head(b"GET http://Example.com:8080/v1/models?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    )
    assert (req.kind, req.host, req.port, req.path) == (
        RequestKind.FORWARD,
        "example.com",
        8080,
        "/v1/models?x=1",
    )
    req = classify(_head(b"GET HTTP://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n"))
    assert (req.port, req.path) == (80, "/?q")
    req = classify(
        _head(b"POST http://[::1]:81/x HTTP/1.1\r\nHost: [::1]:81\r\nContent-Length: 0\r\n\r\n")
    )
    assert (req.host, req.port, req.path) == ("::1", 81, "/x")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("https://example.com/", "CONNECT"),
        ("ftp://example.com/", "scheme"),
        ("http://user:pw@example.com/", "user info"),
        ("example.com/x", "target"),
    ],
)
def test_unsupported_targets(target: str, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        classify(_head(f"GET {target} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()))


def test_origin_form_is_for_the_proxy_itself() -> None:
    req = classify(_head(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:4142\r\n\r\n"))
    assert (req.kind, req.path) == (RequestKind.ORIGIN, "/")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_basic("passthrough:"), "passthrough"),
        (_basic("switch:secret:with:colons"), "switch"),
        (_basic("route"), "route"),
        (_basic(":only-password"), None),
        ("Bearer abc", None),
        ("basic " + base64.b64encode(b"p\xc3\xa4ss:x").decode(), "päss"),
    ],
)
def test_proxy_username(value: str, expected: str | None) -> None:
    assert proxy_username((("proxy-authorization", value),)) == expected
    head = _head(
        f"CONNECT a.example:443 HTTP/1.1\r\nHost: a\r\nProxy-Authorization: {value}\r\n\r\n".encode()
    )
    assert classify(head).username == expected


def test_no_proxy_authorization_means_no_username() -> None:
    assert proxy_username((("authorization", _basic("u:p")),)) is None


@pytest.mark.parametrize(
    "value", ["Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe:x").decode()]
)
def test_malformed_proxy_authorization(value: str) -> None:
    with pytest.raises(ProxyProtocolError):
        proxy_username((("proxy-authorization", value),))


def test_origin_path() -> None:
    assert origin_path("/v1/chat/completions?a=1") == "/v1/chat/completions?a=1"
    assert origin_path("https://api.openai.com/v1/models") == "/v1/models"
    assert origin_path("https://api.openai.com") == "/"
    assert origin_path("http://h?x") == "/?x"
    with pytest.raises(ProxyProtocolError):
        origin_path("api.openai.com")


# ------------------------------------------------------------- receiving bytes


CONNECT_WITH_HELLO = (
    b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
    b"Proxy-Authorization: " + _basic("passthrough:").encode() + b"\r\n\r\n"
    b"\x16\x03\x01\x00\x05hello"
)


def test_connect_at_any_split_keeps_the_eager_client_hello() -> None:
    for pieces in _splits(CONNECT_WITH_HELLO):
        _check_connect_with_hello(pieces)


def _check_connect_with_hello(pieces: list[bytes]) -> None:
    conn = ServerConnection()
    events = _drain(conn, pieces)
    assert isinstance(events[0], RequestHead)
    assert isinstance(events[1], EndOfRequest)
    assert len(events) == 2
    assert classify(events[0]).username == "passthrough"
    out = conn.connect_established()
    assert out.startswith(b"HTTP/1.1 200 Connection Established\r\n")
    assert out.endswith(b"\r\n\r\n")
    assert conn.trailing_data == b"\x16\x03\x01\x00\x05hello"


def test_connect_http10() -> None:
    conn = ServerConnection()
    events = _drain(conn, [b"CONNECT example.com:443 HTTP/1.0\r\n\r\n"])
    assert isinstance(events[0], RequestHead) and events[0].http_version == "1.0"
    conn.connect_established()
    assert conn.trailing_data == b""


CHUNKED_POST_THEN_GET = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
    b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    b'5\r\n{"a":\r\n'
    b"3\r\n 1}\r\n"
    b"0\r\n\r\n"
    b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"
)


def test_chunked_body_and_keep_alive_at_any_split() -> None:
    for pieces in _splits(CHUNKED_POST_THEN_GET):
        _check_chunked_post_then_get(pieces)


def _check_chunked_post_then_get(pieces: list[bytes]) -> None:
    conn = ServerConnection()
    events = _drain(conn, pieces)
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.get("Content-Type")) == (
        "POST",
        "/v1/chat/completions",
        "application/json",
    )
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b'{"a": 1}'
    assert isinstance(events[-1], EndOfRequest)
    assert conn.request_complete
    # The pipelined GET waits (PAUSED) until the response is done.
    conn.response(200, [("content-length", "0")])
    conn.end()
    assert conn.start_next_cycle()
    second = _drain(conn, [])  # already buffered
    assert isinstance(second[0], RequestHead) and second[0].target == "/v1/models"
    assert isinstance(second[1], EndOfRequest)


def test_content_length_body() -> None:
    conn = ServerConnection()
    events = _drain(
        conn, [b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab", b"c", b"de"]
    )
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b"abcde"
    assert isinstance(events[-1], EndOfRequest)


def test_client_close_between_requests() -> None:
    conn = ServerConnection()
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_client_close_mid_body_is_a_protocol_error() -> None:
    conn = ServerConnection()
    _drain(conn, [b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc"])
    conn.receive_data(b"")
    with pytest.raises(ProxyProtocolError):
        conn.next_event()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS without CONNECT
        b"HELLO\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",  # h11: 501
    ],
)
def test_garbage_is_a_400(garbage: bytes) -> None:
    conn = ServerConnection()
    with pytest.raises(ProxyProtocolError) as ei:
        _drain(conn, [garbage])
    assert ei.value.status == 400
    # An error response can still be produced for the client.
    assert conn.simple_response(400, "bad\n", close=True).startswith(b"HTTP/1.1 400 ")


def test_oversized_head_is_431() -> None:
    conn = ServerConnection(max_head_bytes=1024)
    with pytest.raises(ProxyProtocolError) as ei:
        _drain(conn, [b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 2000])
    assert ei.value.status == 431


_START = b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n"
OVER_LIMITS = [
    # a whole head over 64 KiB, whatever reads it arrives in
    (_START + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431, "request head larger"),
    (
        _START + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n",
        431,
        "fields",
    ),
    (b"GET /?q=" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "line"),
    (b"GET /?q=" + b"a" * (70 * 1024) + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "line"),
    (b"CONNECT api.openai.com:443 HTTP/9.9\r\nHost: api.openai.com\r\n\r\n", 400, "version"),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 400, "version"),
    (b"GET http://a.example/ HTTP/1.2\r\nHost: a.example\r\n\r\n", 400, "version"),
]


@pytest.mark.parametrize(("data", "status", "message"), OVER_LIMITS)
def test_head_limits_hold_in_one_read_and_in_many(data: bytes, status: int, message: str) -> None:
    for pieces in ([data], [data[i : i + 4096] for i in range(0, len(data), 4096)]):
        conn = ServerConnection()
        with pytest.raises(ProxyProtocolError) as ei:
            _drain(conn, pieces)
        assert ei.value.status == status and message in str(ei.value), pieces[0][:40]
        # still answerable, and the answer ends the connection
        answer = conn.simple_response(ei.value.status, "no\n", close=True)
        assert answer.startswith(b"HTTP/1.1 %d " % status) and b"connection: close" in answer


def test_heads_at_the_limits_pass() -> None:
    # Host, these, and X-Big: exactly MAX_HEADERS fields
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS - 2))
    head = _START + fields
    big = head + b"X-Big: " + b"a" * (MAX_HEAD_BYTES - len(head) - 20) + b"\r\n\r\n"
    assert len(big) <= MAX_HEAD_BYTES
    assert _head(big).get("x-big")
    line = b"GET /?q=" + b"a" * (MAX_REQUEST_LINE - 40) + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    assert _head(line).method == "GET"
    assert _head(b"CONNECT a.example:443 HTTP/1.0\r\n\r\n").http_version == "1.0"


def test_head_problem_is_the_api_listeners_rule_too() -> None:
    ok = [(b"host", b"a")]
    assert head_problem("GET", 10, "1.1", ok) is None
    assert head_problem("GET", 10, "2", ok, versions=frozenset({"1.1", "2"})) is None
    assert head_problem("GET", 10, "9.9", ok)[0] == 400  # type: ignore[index]
    assert head_problem("GET", MAX_REQUEST_LINE, "1.1", ok)[0] == 414  # type: ignore[index]
    many = [(b"x", b"1")] * (MAX_HEADERS + 1)
    assert head_problem("GET", 10, "1.1", many)[0] == 431  # type: ignore[index]
    huge = [(b"x", b"a" * MAX_HEAD_BYTES)]
    assert head_problem("GET", 10, "1.1", huge)[0] == 431  # type: ignore[index]


def test_expect_100_continue() -> None:
    conn = ServerConnection()
    _drain(
        conn, [b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"]
    )
    assert conn.continue_100().startswith(b"HTTP/1.1 100 ")
    assert conn.continue_100() == b""
    events = _drain(conn, [b"abc"])
    assert events == [Body(b"abc"), EndOfRequest()]


# ---------------------------------------------------------------- sending bytes


def _client_parse(request: bytes, response_bytes: list[bytes]) -> tuple[h11.Response, list[bytes]]:
    """Parse what we sent with an independent h11 client, chunk by chunk."""
    client = h11.Connection(h11.CLIENT)
    head, _, _ = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].split(b" ")
    headers = [(k.strip(), v.strip()) for k, v in (line.split(b":", 1) for line in lines[1:])]
    client.send(h11.Request(method=method, target=target, headers=headers))
    client.send(h11.EndOfMessage())
    resp: h11.Response | None = None
    chunks: list[bytes] = []
    for piece in response_bytes:
        client.receive_data(piece)
        while (ev := client.next_event()) is not h11.NEED_DATA:
            if isinstance(ev, h11.Response):
                resp = ev
            elif isinstance(ev, h11.Data):
                chunks.append(bytes(ev.data))
            elif isinstance(ev, h11.EndOfMessage):
                assert resp is not None
                return resp, chunks
    raise AssertionError("response incomplete")


def test_streamed_response_is_chunked_and_each_chunk_is_emitted_at_once() -> None:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 0\r\n\r\n"
    )
    conn = ServerConnection()
    _drain(conn, [request])
    head = conn.response(
        200,
        [
            ("Content-Type", "text/event-stream"),
            ("Transfer-Encoding", "chunked"),  # upstream's framing: replaced, not doubled
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            (b"X-Request-Id", b"abc"),
        ],
    )
    assert b"transfer-encoding: chunked" in head.lower()
    assert head.lower().count(b"transfer-encoding") == 1
    assert b"keep-alive" not in head.lower()
    events = [b'data: {"n":1}\n\n', b'data: {"n":2}\n\n', b"data: [DONE]\n\n"]
    out = [head]
    for e in events:
        piece = conn.body(e)
        assert e in piece, "a chunk must be emitted whole, immediately"
        out.append(piece)
    assert conn.body(b"") == b"", "an empty chunk must not end the body"
    out.append(conn.end())
    resp, chunks = _client_parse(request, out)
    assert resp.status_code == 200
    assert chunks == events
    assert conn.response_complete and conn.start_next_cycle()


def test_content_length_response_is_kept() -> None:
    request = b"GET /v1/models HTTP/1.1\r\nHost: h\r\n\r\n"
    conn = ServerConnection()
    _drain(conn, [request])
    out = [conn.response(200, [("content-length", "2")]), conn.body(b"ok"), conn.end()]
    assert b"transfer-encoding" not in out[0].lower()
    _resp, chunks = _client_parse(request, out)
    assert chunks == [b"ok"]


def test_http10_client_gets_close_delimited_body() -> None:
    conn = ServerConnection()
    _drain(conn, [b"GET /x HTTP/1.0\r\n\r\n"])
    head = conn.response(200, [("content-type", "text/plain")])
    assert b"chunked" not in head.lower() and b"connection: close" in head.lower()
    assert conn.body(b"abc") == b"abc"
    conn.end()
    assert not conn.start_next_cycle()


def test_connection_close_from_handler_ends_keep_alive() -> None:
    conn = ServerConnection()
    _drain(conn, [b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"])
    head = conn.response(200, [("content-length", "0"), ("connection", "Close")])
    assert b"connection: close" in head.lower()
    conn.end()
    assert not conn.start_next_cycle()


def test_simple_response_only_before_a_response() -> None:
    conn = ServerConnection()
    _drain(conn, [b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"])
    out = conn.simple_response(200, "help\n")
    assert out.endswith(b"\r\n\r\nhelp\n") and b"content-length: 5" in out.lower()
    assert conn.simple_response(500, "again") == b""

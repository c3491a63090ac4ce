"""Hostile input on the API listener: deep JSON, WebSocket upgrades, oversized heads.

Each answer is a 4xx in the endpoint's own error shape, never a 5xx; the daemon keeps
serving, and its config, tokens and ledger rows survive. Unit tests of the depth scan
(:mod:`tokn_router.wire.jsondepth`) and of the body decoder come first.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import FakeUpstream
from tests.helpers import ledger_rows
from tokn_router.errors import RequestError
from tokn_router.serve.call import decode_object
from tokn_router.wire import jsondepth
from tokn_router.wire.jsondepth import MAX_DEPTH, depth, too_deep

DEEP = 100_000

# ------------------------------------------------------------------ depth scan


def _reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    return 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1", 0),
        (b'"[[[{{{"', 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[", "b": "]]]]"}', 1),
        (b'{"a": "\\\\", "b": [[]]}', 3),  # an escaped backslash ends no string
        (b'{"a": "\\"[[[", "b": []}', 2),  # an escaped quote ends no string
        (b'{"a": "\\\\\\"[[[\\\\"}', 1),
        (b"[[],[[]],[[[]]]]", 4),
    ],
)
def test_depth_ignores_brackets_in_strings(text: bytes, expected: int) -> None:
    assert depth(text) == expected
    assert too_deep(text, expected) is False
    if expected:
        assert too_deep(text, expected - 1) is True


def test_depth_matches_a_decoder_on_random_documents() -> None:
    rng = random.Random(13)
    tricky = ['[{"', "\\", '"', "a]b}", '\\"', "\\\\[", "", 1, None, 2.5]

    def doc(level: int) -> Any:
        roll = rng.random()
        if level > 9 or roll < 0.2:
            return rng.choice(tricky)
        if roll < 0.6:
            return [doc(level + 1) for _ in range(rng.randint(0, 3))]
        return {f"{rng.choice(tricky)}{i}": doc(level + 1) for i in range(rng.randint(0, 3))}

    for _ in range(3000):
        value = doc(0)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        want = _reference_depth(value)
        assert depth(text) == want, text
        limit = rng.randint(0, 10)
        assert too_deep(text, limit) is (want > limit), (text, limit)


def test_too_deep_at_the_limit() -> None:
    for kind in (b"[", b'{"k":'):
        close = b"]" if kind == b"[" else b"}"
        fits = kind * MAX_DEPTH + b"0" + close * MAX_DEPTH
        over = kind * (MAX_DEPTH + 1) + b"0" + close * (MAX_DEPTH + 1)
        assert not too_deep(fits) and too_deep(over)
        # many shallow siblings are not depth
        assert not too_deep(b"[" + b",".join([b"[[]]"] * 5000) + b"]")
    # unterminated and unbalanced input is measured as far as it goes
    assert too_deep(b"[" * (MAX_DEPTH + 1))
    assert not too_deep(b"]" * 5000 + b"[" * 10)


def test_decode_object_refuses_deep_and_odd_bodies_with_a_400() -> None:
    cases = {
        b"[" * DEEP + b"]" * DEEP: "nests deeper than",
        b'{"a":' * DEEP + b"1" + b"}" * DEEP: "nests deeper than",
        b"[" * DEEP: "nests deeper than",
        b"[1, 2]": "must be a JSON object",
        b'{"a": 1e999}': "malformed JSON",  # out of range: not "must be an object"
        b'{"a": "\\ud800"}': "malformed JSON",
        b"{not json": "malformed JSON",
    }
    for raw, message in cases.items():
        with pytest.raises(RequestError) as err:
            decode_object(raw)
        assert err.value.status == 400 and message in err.value.message, raw[:40]
        assert err.value.code == "invalid_json"
    deep_ok = b'{"m":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert decode_object(deep_ok)["m"] is not None
    assert jsondepth.MAX_DEPTH < 500  # far below the interpreter's recursion limit


# --------------------------------------------------------------------- daemon


CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
# (path, body with the nesting under a field the endpoint reads, error shape)
ENDPOINTS = [
    ("/v1/chat/completions", "messages", "openai"),
    ("/v1/responses", "input", "openai"),
    ("/v1/messages", "messages", "anthropic"),
    ("/v1/messages/count_tokens", "messages", "anthropic"),
    ("/v1/embeddings", "input", "openai"),
]


def deep_body(field: str, kind: str) -> bytes:
    opener, closer = (b"[", b"]") if kind == "array" else (b'{"x":', b"}")
    inner = opener * DEEP + b"1" + closer * DEEP if kind == "object" else b"[" * DEEP + b"]" * DEEP
    return b'{"model":"gpt-4.1","max_tokens":5,"' + field.encode() + b'":' + inner + b"}"


def assert_invalid_request(r: httpx.Response, shape: str) -> None:
    assert r.status_code == 400, (r.status_code, r.text[:200])
    body = r.json()
    if shape == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert "nests deeper" in body["error"]["message"]
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        assert "nests deeper" in body["error"]["message"]


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything received until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def openai_error(raw: bytes, status: int) -> dict[str, Any]:
    got, headers, body = split_response(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def config_snapshot(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


@pytest.fixture
def served(fake: FakeUpstream, write_config, daemon, env_home, wait_for):
    """A daemon that has served one chat, with its persisted token on disk."""
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    assert httpx.post(d.url + "/v1/chat/completions", json=CHAT).status_code == 200
    wait_for(lambda: "access_token" in env_home.config_path.read_text())
    return d, config_snapshot(env_home.config_path)


def assert_survived(d: Any, env_home: Any, before: dict[str, Any], rows_at_least: int) -> None:
    """Still serving; config and tokens untouched; every row kept after a clean stop."""
    r = httpx.post(d.url + "/v1/chat/completions", json=CHAT)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Echo: hi"
    assert config_snapshot(env_home.config_path) == before
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    rows = ledger_rows(env_home.state_dir)
    assert len(rows) >= rows_at_least
    assert next(r["status"] for r in rows if r["endpoint"] == "/v1/chat/completions") == 200


def test_deeply_nested_json_is_a_400_on_every_endpoint(served, env_home) -> None:
    d, before = served
    for path, field, shape in ENDPOINTS:
        for kind in ("array", "object"):
            r = httpx.post(
                d.url + path,
                content=deep_body(field, kind),
                headers={"content-type": "application/json"},
                timeout=30,
            )
            assert_invalid_request(r, shape)
    # deep, but within the limit: served as usual
    nested: Any = "deep"
    for _ in range(MAX_DEPTH - 4):
        nested = [nested]
    r = httpx.post(d.url + "/v1/chat/completions", json={**CHAT, "metadata": {"n": nested}})
    assert r.status_code == 200, r.text[:200]
    # a row per refused model request (count_tokens calls no model and keeps none),
    # beside the chats before and after
    assert_survived(d, env_home, before, rows_at_least=3 + 2 * (len(ENDPOINTS) - 1))


WS_HANDSHAKE = (
    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def test_websocket_upgrade_is_a_clean_400(served, env_home) -> None:
    d, before = served
    port = int(d.url.rsplit(":", 1)[1])
    for path in (b"/v1/models", b"/v1/responses", b"/nowhere"):
        raw = raw_exchange(port, WS_HANDSHAKE.replace(b"/v1/models", path))
        err = openai_error(raw, 400)
        assert err["code"] == "websocket_not_supported"
        assert err["type"] == "invalid_request_error"
    # the Host guard still holds for a plain request naming a foreign host
    r = httpx.get(d.url + "/v1/models", headers={"Host": "evil.example"})
    assert r.status_code == 403
    assert_survived(d, env_home, before, rows_at_least=1)


def test_oversized_and_unsupported_heads_are_refused(served, env_home) -> None:
    d, before = served
    port = int(d.url.rsplit(":", 1)[1])
    start = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    cases = [
        (start + b"X-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431, "request head larger"),
        (start + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431, "header fields"),
        (
            b"GET /v1/models?q=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            414,
            "request line",
        ),
        (b"GET /v1/models HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", 400, "HTTP version"),
    ]
    for data, status, message in cases:
        # the server closes after refusing (raw_exchange reads until it does)
        raw = raw_exchange(port, data)
        assert split_response(raw)[1]["connection"] == "close"
        if status == 431 and split_response(raw)[1].get("content-length") == "0":
            # hypercorn's own 431: its 64 KiB buffer filled before the head was
            # complete (it depends on how the bytes were split); the app never saw it
            assert split_response(raw)[0] == 431
            continue
        err = openai_error(raw, status)
        assert message in err["message"]
    # at the limits: served
    fine = start + b"".join(b"X-%d: 1\r\n" % i for i in range(90)) + b"X-Big: " + b"a" * 60_000
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(fine + b"\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200 ")
    assert_survived(d, env_home, before, rows_at_least=1)

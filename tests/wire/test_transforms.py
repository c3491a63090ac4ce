"""The native stream transforms, as tables: SSE bytes in -> what the client and the ledger get.

No servers: each row is an upstream body (fed whole, and again split at every
byte), and what must come out of it: the bytes relayed unchanged, the error
event appended when the API's terminal event never came, the error the ledger
records, the usage read on the side, and whether content went through (TTFT).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tokn_router.wire.transforms import NativeMessagesStream, NativeResponsesStream, NativeStream
from tokn_router.wire.usage import TokenUsage


def ev(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


MSG_START = ev(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "model": "claude-sonnet-4.5",
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 1000,
            },
        },
    },
)
MSG_BLOCK = ev(
    "content_block_delta",
    {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
)
MSG_DELTA = ev(
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
)
MSG_STOP = ev("message_stop", {"type": "message_stop"})
MSG_ERROR = ev("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})

RESP_CREATED = ev(
    "response.created",
    {"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5", "created_at": 5}},
)
RESP_DELTA = ev("response.output_text.delta", {"type": "response.output_text.delta", "delta": "x"})
RESP_DONE = ev(
    "response.completed",
    {
        "type": "response.completed",
        "response": {
            "id": "resp_1",
            "model": "gpt-5",
            "usage": {
                "input_tokens": 50,
                "output_tokens": 9,
                "input_tokens_details": {"cached_tokens": 40},
                "output_tokens_details": {"reasoning_tokens": 3},
            },
        },
        "copilot_usage": {"total_nano_aiu": 2_500_000_000},
    },
)
RESP_FAILED = ev(
    "response.failed",
    {
        "type": "response.failed",
        "response": {"id": "resp_1", "error": {"code": "server_error", "message": "boom"}},
    },
)


@dataclass(frozen=True)
class Row:
    name: str
    make: Callable[[], NativeStream]
    body: bytes
    appended: str | None  # the error event appended at the end (its event name), if any
    error: str | None  # a fragment of the ledger's error, if any
    usage: TokenUsage | None
    first_content: bool


def messages() -> NativeStream:
    return NativeMessagesStream()


def responses() -> NativeStream:
    return NativeResponsesStream("gpt-5", {"model": "gpt-5", "input": "hi"})


ROWS = [
    Row(
        "messages complete",
        messages,
        MSG_START + MSG_BLOCK + MSG_DELTA + MSG_STOP,
        None,
        None,
        TokenUsage(input=1110, output=7, cache_read=100, cache_write=1000),
        True,
    ),
    Row(
        "messages cut before message_stop",
        messages,
        MSG_START + MSG_BLOCK,
        "error",
        "ended before the response was complete",
        TokenUsage(input=1110, cache_read=100, cache_write=1000),
        True,
    ),
    Row(
        "messages upstream error event",
        messages,
        MSG_START + MSG_ERROR,
        None,
        "upstream error mid-stream: busy",
        TokenUsage(input=1110, cache_read=100, cache_write=1000),
        False,
    ),
    Row("messages empty body", messages, b"", "error", "ended before", None, False),
    Row(
        "responses complete, with cost",
        responses,
        RESP_CREATED + RESP_DELTA + RESP_DONE,
        None,
        None,
        TokenUsage(input=50, output=9, cache_read=40, reasoning=3, nano_aiu=2_500_000_000),
        True,
    ),
    Row(
        "responses cut after a delta",
        responses,
        RESP_CREATED + RESP_DELTA,
        "response.failed",
        "ended before the response was complete",
        None,
        True,
    ),
    Row(
        "responses failed upstream",
        responses,
        RESP_CREATED + RESP_FAILED,
        None,
        "upstream response failed: boom",
        None,
        False,
    ),
]


def _run(row: Row, chunks: list[bytes]) -> tuple[bytes, bytes, NativeStream]:
    t = row.make()
    relayed = b"".join(t.feed(c) for c in chunks)
    return relayed, t.flush(), t


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_native_stream_table(row: Row) -> None:
    relayed, tail, t = _run(row, [row.body])
    assert relayed == row.body  # native bodies are relayed byte for byte
    if row.appended is None:
        assert tail == b""
    else:
        assert tail.startswith(f"event: {row.appended}\n".encode())
    if row.error is None:
        assert t.error is None
    else:
        assert t.error is not None and row.error in t.error
    assert t.usage == row.usage
    assert t.first_content is row.first_content


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_native_stream_reads_the_same_at_every_split(row: Row) -> None:
    whole_tail = _run(row, [row.body])[1]
    for cut in range(1, len(row.body)):
        relayed, tail, t = _run(row, [row.body[:cut], row.body[cut:]])
        assert relayed == row.body
        assert t.usage == row.usage and (t.error is None) == (row.error is None)
        if row.appended != "response.failed":  # that event carries a fresh timestamp
            assert tail == whole_tail


def test_fail_after_the_terminal_event_adds_nothing() -> None:
    t = NativeMessagesStream()
    t.feed(MSG_START + MSG_STOP)
    assert t.fail("server shutting down") == b"" and t.error is None


def test_fail_mid_stream_appends_one_error_event() -> None:
    t = NativeMessagesStream()
    t.feed(MSG_START + MSG_BLOCK)
    out = t.fail("server shutting down")
    assert out.startswith(b"event: error\n") and b"server shutting down" in out
    assert t.flush() == b""  # the stream already ended with its error event
    assert t.error == "server shutting down"

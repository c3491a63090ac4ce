"""The one usage normaliser: each API's usage shape -> the ledger's reading (no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokn_router.wire.transforms import NativeMessagesStream
from tokn_router.wire.usage import TokenUsage, UsageSniffer, usage_from

ANTHROPIC = {
    "input_tokens": 10,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 1000,
    "output_tokens": 7,
}
ANTHROPIC_READING = TokenUsage(input=1110, output=7, cache_read=100, cache_write=1000)

TABLE: list[tuple[str, Any, TokenUsage | None]] = [
    (
        "chat",
        {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
        TokenUsage(input=12, output=5, cache_read=2, reasoning=3),
    ),
    ("chat, no details", {"prompt_tokens": 3, "total_tokens": 3}, TokenUsage(input=3)),
    (
        "responses",
        {
            "input_tokens": 12,
            "output_tokens": 5,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens_details": {"reasoning_tokens": 3},
        },
        TokenUsage(input=12, output=5, cache_read=2, reasoning=3),
    ),
    ("anthropic, cache read and write", ANTHROPIC, ANTHROPIC_READING),
    (
        "anthropic, cache read only",
        {"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 1},
        TokenUsage(input=110, output=1, cache_read=100),
    ),
    (
        "anthropic without cache fields reads like responses",
        {"input_tokens": 10, "output_tokens": 1},
        TokenUsage(input=10, output=1),
    ),
    ("not an object", [1, 2], None),
    ("no known key", {"foo": 1}, None),
    ("booleans are not counts", {"prompt_tokens": True}, TokenUsage()),
]


@pytest.mark.parametrize(("name", "usage", "expected"), TABLE, ids=[r[0] for r in TABLE])
def test_usage_from(name: str, usage: Any, expected: TokenUsage | None) -> None:
    assert usage_from(usage) == expected


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _messages_stream() -> bytes:
    start = {**ANTHROPIC, "output_tokens": 1}
    return b"".join(
        [
            _sse(
                "message_start",
                {"type": "message_start", "message": {"model": "m", "usage": start}},
            ),
            _sse("content_block_start", {"type": "content_block_start", "index": 0}),
            _sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 7}}),
            _sse("message_stop", {"type": "message_stop"}),
        ]
    )


def test_passthrough_sniffer_and_native_stream_read_a_messages_stream_alike() -> None:
    body = _messages_stream()
    sniff = UsageSniffer("text/event-stream")
    native = NativeMessagesStream()
    for i in range(0, len(body), 7):  # any split
        sniff.feed(body[i : i + 7])
        native.feed(body[i : i + 7])
    native.flush()
    assert sniff.finish() == (ANTHROPIC_READING, "m")
    assert native.usage == ANTHROPIC_READING


def test_passthrough_sniffer_reads_a_whole_messages_answer() -> None:
    sniff = UsageSniffer("application/json")
    sniff.feed(json.dumps({"type": "message", "model": "m", "usage": ANTHROPIC}).encode())
    assert sniff.finish() == (ANTHROPIC_READING, "m")

"""The one usage normaliser: each API's usage shape -> the ledger's reading (no servers).

Also the cost (``copilot_usage.total_nano_aiu``): read alike by every transform
(relayed, native, translated, whole) and by the passthrough sniffer.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tokn_router.wire.transforms import (
    ChatTransform,
    ChatWhole,
    NativeMessagesStream,
    NativeResponsesStream,
    NativeWhole,
    TranslatedStream,
    TranslatedWhole,
)
from tokn_router.wire.translate import ChatToMessagesStream, ChatToResponsesStream
from tokn_router.wire.usage import (
    TokenUsage,
    UsageSniffer,
    anthropic_usage,
    copilot_nano_aiu,
    usage_from,
)

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


# ------------------------------------------------------- copilot_usage (what it cost)

NANO = 2_500_000_000  # 2.5 credits
COST = {"copilot_usage": {"total_nano_aiu": NANO}}

COST_TABLE: list[tuple[str, Any, int | None]] = [
    ("top level (chat, whole answers, Responses events)", {"x": 1, **COST}, NANO),
    ("inside response (a Responses event's envelope)", {"response": COST}, NANO),
    ("inside message (Messages message_start)", {"message": COST}, NANO),
    ("top level wins over the envelope", {**COST, "response": {"copilot_usage": {}}}, NANO),
    ("a float is rounded", {"copilot_usage": {"total_nano_aiu": 1.6}}, 2),
    ("zero is a cost", {"copilot_usage": {"total_nano_aiu": 0}}, 0),
    ("absent", {"usage": {"prompt_tokens": 1}}, None),
    ("null", {"copilot_usage": None}, None),
    ("a string is not a number", {"copilot_usage": {"total_nano_aiu": "5"}}, None),
    ("negative", {"copilot_usage": {"total_nano_aiu": -1}}, None),
    ("a boolean is not a number", {"copilot_usage": {"total_nano_aiu": True}}, None),
    ("not an object", [COST], None),
]


@pytest.mark.parametrize(("name", "obj", "expected"), COST_TABLE, ids=[r[0] for r in COST_TABLE])
def test_copilot_nano_aiu(name: str, obj: Any, expected: int | None) -> None:
    assert copilot_nano_aiu(obj) == expected


CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
CHAT_READING = TokenUsage(input=12, output=5)


def _data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chat_stream(*, cost_chunk: bool) -> bytes:
    """Copilot's chat SSE: content, finish, usage chunk, then (maybe) a cost-only chunk."""
    chunk = {"model": "gpt-4.1", "object": "chat.completion.chunk", "usage": None}
    parts = [
        _data(
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}
        ),
        _data({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        _data({**chunk, "choices": [], "usage": CHAT_USAGE}),
    ]
    if cost_chunk:
        parts.append(_data({**chunk, "choices": [], **COST}))
    return b"".join([*parts, b"data: [DONE]\n\n"])


def _feed_split(transform: Any, body: bytes, step: int = 5) -> bytes:
    out = b"".join(transform.feed(body[i : i + step]) for i in range(0, len(body), step))
    return out + transform.flush()


def test_chat_relay_reads_the_cost_chunk_and_keeps_it_for_the_client() -> None:
    body = _chat_stream(cost_chunk=True)
    relayed = ChatTransform(drop_usage_chunk=True)
    out = _feed_split(relayed, body)
    assert relayed.usage == TokenUsage(input=12, output=5, nano_aiu=NANO)
    # the usage-only chunk is hidden (not asked for); the cost chunk is not usage: it stays
    assert b'"prompt_tokens"' not in out and b"total_nano_aiu" in out
    plain = ChatTransform(drop_usage_chunk=False)
    _feed_split(plain, _chat_stream(cost_chunk=False))
    assert plain.usage == CHAT_READING  # no cost sent: none recorded


@pytest.mark.parametrize(
    ("make", "error_event"),
    [
        (ChatToMessagesStream, b"error"),
        (lambda m: ChatToResponsesStream(m, {}), b"response.failed"),
    ],
    ids=["messages", "responses"],
)
def test_translated_chat_stream_keeps_the_cost(make: Any, error_event: bytes) -> None:
    t = TranslatedStream(make("gpt-4.1"), error_event)
    out = _feed_split(t, _chat_stream(cost_chunk=True))
    # the cost comes in a chunk after the usage, when the translator has ended
    assert t.usage == TokenUsage(input=12, output=5, cache_read=0, reasoning=0, nano_aiu=NANO)
    assert t.error is None and out
    # a body cut off before its finish is still an error (the end check now made here)
    body = _chat_stream(cost_chunk=False)
    cut = TranslatedStream(make("gpt-4.1"), error_event)
    _feed_split(cut, body[: body.index(b'"finish_reason"')].rpartition(b"data: ")[0])
    assert cut.error is not None and "ended before the response was complete" in cut.error


def test_native_streams_read_the_cost_where_copilot_puts_it() -> None:
    messages = NativeMessagesStream()
    start = {**ANTHROPIC, "output_tokens": 1}
    body = b"".join(
        [
            _sse("message_start", {"type": "message_start", "message": {"usage": start}}),
            _sse("content_block_start", {"type": "content_block_start", "index": 0}),
            _sse(
                "message_delta",
                {"type": "message_delta", "usage": {"output_tokens": 7}, **COST},
            ),
            _sse("message_stop", {"type": "message_stop"}),
        ]
    )
    _feed_split(messages, body)
    assert messages.usage == TokenUsage(
        input=1110, output=7, cache_read=100, cache_write=1000, nano_aiu=NANO
    )

    responses = NativeResponsesStream("gpt-5", {})
    usage = {"input_tokens": 12, "output_tokens": 5}
    done = {"type": "response.completed", "response": {"model": "gpt-5", "usage": usage}, **COST}
    _feed_split(responses, _sse("response.completed", done))
    assert responses.usage == TokenUsage(input=12, output=5, nano_aiu=NANO)
    assert responses.error is None


def test_whole_answers_read_the_cost() -> None:
    chat = json.dumps({"model": "gpt-4.1", "choices": [], "usage": CHAT_USAGE, **COST}).encode()
    relayed = ChatWhole()
    assert relayed.convert(chat) == chat
    assert relayed.usage == TokenUsage(input=12, output=5, nano_aiu=NANO)

    native = NativeWhole(anthropic_usage)
    native.convert(json.dumps({"type": "message", "usage": ANTHROPIC, **COST}).encode())
    assert native.usage == msgspec.structs.replace(ANTHROPIC_READING, nano_aiu=NANO)

    translated = TranslatedWhole(lambda c: {"translated": True})
    assert translated.convert(chat) == b'{"translated":true}'
    assert translated.usage == TokenUsage(input=12, output=5, nano_aiu=NANO)

    bare = ChatWhole()  # a cost without token counts is still recorded
    bare.convert(json.dumps({"model": "m", **COST}).encode())
    assert bare.usage == TokenUsage(nano_aiu=NANO)


def test_passthrough_sniffer_reads_the_cost_like_the_pool_paths() -> None:
    sniff = UsageSniffer("text/event-stream")
    body = _chat_stream(cost_chunk=True)
    for i in range(0, len(body), 9):
        sniff.feed(body[i : i + 9])
    assert sniff.finish() == (TokenUsage(input=12, output=5, nano_aiu=NANO), "gpt-4.1")

    whole = UsageSniffer("application/json")
    whole.feed(json.dumps({"type": "message", "model": "m", "usage": ANTHROPIC, **COST}).encode())
    usage, _ = whole.finish()
    assert usage is not None and usage.nano_aiu == NANO

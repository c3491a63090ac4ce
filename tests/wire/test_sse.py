"""The sans-I/O SSE framer, relay, readers and encoder: bytes in, bytes out."""

from __future__ import annotations

import json

import pytest

from tokn_router.wire.sse import ChatStreamRelay, ChunkReader, EventScanner, _event_end, sse_event

FILTER = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [{"prompt_index": 0}],
}


def chunk(content: str | None = None, finish: str | None = None) -> dict:
    delta = {"content": content} if content is not None else {}
    return {
        "choices": [{"delta": delta, "finish_reason": finish, "index": 0}],
        "created": 1,
        "id": "chatcmpl-1",
        "model": "gpt-4.1-2025",
        "object": "chat.completion.chunk",
        "usage": None,
    }


USAGE = {
    "choices": [],
    "created": 1,
    "id": "chatcmpl-1",
    "model": "gpt-4.1-2025",
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}


def sse(*events: dict | str, sep: bytes = b"\n\n") -> tuple[bytes, list[bytes]]:
    parts = []
    for e in events:
        payload = e if isinstance(e, str) else json.dumps(e)
        parts.append(b"data: " + payload.encode() + sep)
    return b"".join(parts), parts


STREAM, PARTS = sse(FILTER, chunk("Hel"), chunk("lo"), chunk(finish="stop"), USAGE, "[DONE]")


def run(relay: ChatStreamRelay, pieces: list[bytes]) -> bytes:
    out = b"".join(relay.feed(p) for p in pieces)
    return out + relay.flush()


def test_passthrough_is_byte_identical_and_extracts_usage() -> None:
    relay = ChatStreamRelay(drop_usage_chunk=False)
    assert run(relay, [STREAM]) == STREAM
    assert relay.usage is not None
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (12, 5)
    assert relay.usage.cached_tokens == 3
    assert relay.usage.reasoning_tokens == 2
    assert relay.model == "gpt-4.1-2025"
    assert relay.done


def test_passthrough_forwards_partial_events_immediately() -> None:
    relay = ChatStreamRelay(drop_usage_chunk=False)
    half = PARTS[1][:10]
    assert relay.feed(half) == half  # nothing held back when nothing is dropped


def test_drop_mode_removes_only_the_usage_chunk() -> None:
    relay = ChatStreamRelay(drop_usage_chunk=True)
    expected = b"".join(p for p in PARTS if b'"usage": {' not in p)
    assert run(relay, [STREAM]) == expected
    assert relay.usage is not None and relay.usage.total_tokens == 17


@pytest.mark.parametrize("drop", [False, True])
def test_every_split_point_gives_the_same_output(drop: bool) -> None:
    whole = ChatStreamRelay(drop_usage_chunk=drop)
    reference = run(whole, [STREAM])
    for i in range(1, len(STREAM)):
        relay = ChatStreamRelay(drop_usage_chunk=drop)
        assert run(relay, [STREAM[:i], STREAM[i:]]) == reference, i
        assert relay.usage is not None and relay.usage.prompt_tokens == 12


def test_byte_at_a_time_with_crlf_separators() -> None:
    stream, _ = sse(chunk("a"), USAGE, "[DONE]", sep=b"\r\n\r\n")
    relay = ChatStreamRelay(drop_usage_chunk=True)
    out = run(relay, [stream[i : i + 1] for i in range(len(stream))])
    assert b"usage" not in out.replace(b'"usage": null', b"")
    assert out.endswith(b"data: [DONE]\r\n\r\n")
    assert relay.usage is not None


def test_usage_on_a_content_chunk_is_kept() -> None:
    c = chunk("x")
    c["usage"] = USAGE["usage"]
    stream, _ = sse(c)
    relay = ChatStreamRelay(drop_usage_chunk=True)
    assert run(relay, [stream]) == stream
    assert relay.usage is not None


def test_mid_stream_error_payload_is_captured() -> None:
    stream, _ = sse(chunk("a"), {"error": {"message": "boom", "code": "x"}})
    relay = ChatStreamRelay(drop_usage_chunk=False)
    run(relay, [stream])
    assert relay.error is not None and b"boom" in relay.error


def test_non_json_and_comment_lines_pass_untouched() -> None:
    stream = b": keep-alive\n\ndata: not json\n\nevent: ping\ndata: {}\n\n"
    relay = ChatStreamRelay(drop_usage_chunk=True)
    assert run(relay, [stream]) == stream


# ------------------------------------------------------------------------- framing

# buffer, start -> (index of the event's end, terminator length)
FRAMES = [
    (b"data: a\n\n", 0, (7, 2)),
    (b"data: a\r\n\r\n", 0, (7, 4)),
    (b"data: a\n\r\n", 0, (7, 3)),  # LF line end, CRLF blank line
    (b"data: a\r\n\n", 0, (8, 2)),  # CRLF line end, LF blank line: the \r stays in the event
    (b"data: a\r\n\r\ndata: b\n\n", 0, (7, 4)),  # the earlier terminator wins
    (b"data: a\n\ndata: b\r\n\r\n", 9, (16, 4)),
    (b"data: a\n", 0, (-1, 0)),
    (b"data: a\r\n\r", 0, (-1, 0)),
    (b"\n\r\n", 0, (0, 3)),
]


@pytest.mark.parametrize(("buf", "start", "expected"), FRAMES)
def test_event_end(buf: bytes, start: int, expected: tuple[int, int]) -> None:
    assert _event_end(buf, start) == expected
    assert _event_end(bytearray(buf), start) == expected


MIXED = (
    b': keep-alive\n\nevent: x\ndata: {"a":\ndata: 1}\n\ndata:{"b":2}\r\n\r\n'
    b'data: {"c":3}\n\r\ndata: {"d":4}\r\n\n\ndata: [DONE]\n\n'
)


def test_every_reader_frames_alike_at_every_split() -> None:
    expected = [{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}]
    for i in range(len(MIXED) + 1):
        reader, scanner = ChunkReader(), EventScanner()
        got = reader.feed(MIXED[:i]) + reader.feed(MIXED[i:]) + reader.close()
        assert got == expected and reader.done, i
        events = scanner.feed(MIXED[:i]) + scanner.feed(MIXED[i:]) + scanner.flush()
        assert [p for _, p in events] == [
            b'{"a":\n1}',
            b'{"b":2}',
            b'{"c":3}',
            b'{"d":4}',
            b"[DONE]",
        ]
        assert events[0][0] == b"x"


def test_relay_is_byte_exact_on_mixed_terminators_and_drops_usage() -> None:
    usage = json.dumps(USAGE).encode()
    stream = b"data: " + json.dumps(chunk("a")).encode() + b"\n\r\n"
    stream += b"data: " + usage + b"\n\r\n" + b"data: [DONE]\r\n\n"
    relay = ChatStreamRelay(drop_usage_chunk=False)
    assert run(relay, [stream[i : i + 1] for i in range(len(stream))]) == stream
    assert relay.usage is not None and relay.done
    dropping = ChatStreamRelay(drop_usage_chunk=True)
    out = run(dropping, [stream])
    assert out == stream.replace(b"data: " + usage + b"\n\r\n", b"")
    assert dropping.usage is not None and dropping.usage.total_tokens == 17


def test_chunk_reader_turns_malformed_data_into_an_error_chunk() -> None:
    r = ChunkReader()
    assert r.feed(b"data: {nope\n\n") == [
        {"error": {"message": "upstream sent malformed stream data: {nope"}}
    ]
    assert not r.done


# ------------------------------------------------------------------------ encoding


def test_sse_event_encodes_one_event() -> None:
    assert sse_event("ping", {"a": "x\ny"}) == b'event: ping\ndata: {"a":"x\\ny"}\n\n'
    assert sse_event(None, [1]) == b"data: [1]\n\n"
    assert sse_event(None, b'{"error":{}}') == b'data: {"error":{}}\n\n'  # JSON already


def test_encoded_events_read_back() -> None:
    body = sse_event("a", {"n": 1}) + sse_event(None, {"n": 2})
    assert EventScanner().feed(body) == [(b"a", b'{"n":1}'), (None, b'{"n":2}')]
    assert ChunkReader().feed(body) == [{"n": 1}, {"n": 2}]

"""Stream translators: upstream chat-completions SSE bytes → Messages / Responses events.

Every scenario is built from chunk dicts shaped like Copilot's
(as its chat completions stream sends them), framed as upstream SSE bytes, and fed split at every possible
byte boundary: the produced event bytes must be identical each time. The
sequences are checked for validity and parsed by the official SDKs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from tokn_router.wire.sse import ChunkReader
from tokn_router.wire.translate._chat import ChatStreamTranslator
from tokn_router.wire.translate.anthropic import ChatToMessagesStream
from tokn_router.wire.translate.responses import ChatToResponsesStream, responses_to_chat

# ---------------------------------------------------------------------------
# upstream chunks
# ---------------------------------------------------------------------------

PROMPT_FILTER = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
        }
    ],
}


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "choices": [
            {
                "content_filter_results": {},
                "delta": delta or {},
                "finish_reason": finish,
                "index": 0,
                "logprobs": None,
            }
        ],
        "created": 1749821284,
        "id": "chatcmpl-abc",
        "model": "gpt-4o-mini-2024-07-18",
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_1",
        "usage": None,
        **extra,
    }


USAGE_VALUES = {
    "completion_tokens": 93,
    "completion_tokens_details": {"reasoning_tokens": 12},
    "prompt_tokens": 965,
    "prompt_tokens_details": {"cached_tokens": 200},
    "total_tokens": 1058,
}
USAGE = {
    "choices": [],
    "created": 1749821284,
    "id": "chatcmpl-abc",
    "model": "gpt-4o-mini-2024-07-18",
    "object": "chat.completion.chunk",
    "usage": USAGE_VALUES,
}


def tc(
    index: int, id_: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    out: dict[str, Any] = {"index": index, "function": fn}
    if id_ is not None:
        out["id"] = id_
        out["type"] = "function"
    return out


SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "text": [
        PROMPT_FILTER,
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo ✓ wörld"}),
        chunk({}, "stop"),
        USAGE,
    ],
    "reasoning_then_text": [
        PROMPT_FILTER,
        chunk({"role": "assistant", "reasoning_text": "Let me "}),
        chunk({"reasoning_text": "think."}),
        chunk({"reasoning_opaque": "c2lnbmF0dXJl"}),
        chunk({"content": "Done."}),
        chunk({}, "stop"),
        USAGE,
    ],
    "text_then_tool": [
        PROMPT_FILTER,
        chunk({"content": "Running it."}),
        chunk({"tool_calls": [tc(0, "call_1", "Bash", "")]}),
        chunk({"tool_calls": [tc(0, args='{"comm')]}),
        chunk({"tool_calls": [tc(0, args='and": "ls -la"}')]}),
        chunk({}, "tool_calls"),
        USAGE,
    ],
    "parallel_interleaved": [
        PROMPT_FILTER,
        chunk({"tool_calls": [tc(0, "call_a", "Read", ""), tc(1, "call_b", "Grep", "")]}),
        chunk({"tool_calls": [tc(0, args='{"path"'), tc(1, args='{"pattern"')]}),
        chunk({"tool_calls": [tc(1, args=': "TODO"}')]}),
        chunk({"tool_calls": [tc(0, args=': "a.py"}')]}),
        chunk({"tool_calls": [tc(2, "call_c", "Glob", '{"glob": "*.md"}')]}),
        chunk({}, "tool_calls"),
        USAGE,
    ],
    "parallel_sequential": [
        chunk({"role": "assistant", "content": None, "tool_calls": [tc(0, "call_1", "Read", "")]}),
        chunk({"tool_calls": [tc(0, args='{"path": "x"}')]}),
        chunk({"tool_calls": [tc(1, "call_2", "Read", "")]}),
        chunk({"tool_calls": [tc(1, args='{"path": "y"}')]}),
        chunk({}, "tool_calls"),
        USAGE,
    ],
    "no_usage": [
        chunk({"content": "short"}),
        chunk({}, "stop"),
    ],
    "usage_in_finish_chunk": [  # Z.ai style: reasoning_content, usage on the last chunk
        chunk({"reasoning_content": "hmm"}),
        chunk({"content": "ok"}),
        chunk({}, "stop", usage=USAGE_VALUES),
    ],
    "length": [
        chunk({"content": "truncat"}),
        chunk({}, "length"),
        USAGE,
    ],
    "opaque_only_then_text": [
        chunk({"reasoning_opaque": "ZW5jcnlwdGVk"}),
        chunk({"content": "answer"}),
        chunk({}, "stop"),
        USAGE,
    ],
    "tool_without_args": [
        chunk({"tool_calls": [tc(0, "call_x", "get_goal", "")]}),
        chunk({}, "tool_calls"),
        USAGE,
    ],
    "tool_name_late": [
        chunk({"tool_calls": [tc(0, "call_n", None, '{"a"')]}),
        chunk({"tool_calls": [tc(0, name="Write", args=": 1}")]}),
        chunk({}, "tool_calls"),
    ],
    "no_finish_reason": [
        chunk({"content": "cut short"}),
    ],
    "copilot_references_null_choices": [
        {"choices": None, "copilot_references": [{"type": "x"}]},
        chunk({"content": "hi"}),
        chunk({}, "stop"),
        USAGE,
    ],
    "text_after_tool": [  # late text while a tool streams: buffered behind it
        chunk({"tool_calls": [tc(0, "call_1", "Bash", '{"command": "ls"}')]}),
        chunk({"content": "and more"}),
        chunk({"reasoning_opaque": "bGF0ZQ=="}),
        chunk({}, "tool_calls"),
        USAGE,
    ],
}

ERROR_SCENARIO = [
    PROMPT_FILTER,
    chunk({"content": "partial"}),
    {"error": {"message": "upstream exploded", "code": "server_error"}},
]


def sse_bytes(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

Factory = Callable[[], ChatStreamTranslator]

CODEX_TOOLS_REQUEST: dict[str, Any] = {
    "model": "gpt-5-mini",
    "stream": True,
    "input": "hi",
    "tools": [
        {"type": "function", "name": "Bash", "parameters": {"type": "object"}},
        {"type": "function", "name": "Read", "parameters": {"type": "object"}},
        {"type": "function", "name": "Grep", "parameters": {"type": "object"}},
        {"type": "function", "name": "Glob", "parameters": {"type": "object"}},
        {"type": "function", "name": "Write", "parameters": {"type": "object"}},
        {"type": "function", "name": "get_goal", "parameters": {"type": "object"}},
    ],
}


def messages_stream() -> ChatToMessagesStream:
    return ChatToMessagesStream("claude-sonnet-4-5", message_id="msg_test", input_tokens=7)


def responses_stream(request: dict[str, Any] | None = None) -> ChatToResponsesStream:
    return ChatToResponsesStream(
        "gpt-5-mini", request or CODEX_TOOLS_REQUEST, response_id="resp_test", created_at=1700000000
    )


FACTORIES: dict[str, Factory] = {"messages": messages_stream, "responses": responses_stream}


def run_bytes(factory: Factory, pieces: Iterator[bytes] | list[bytes]) -> bytes:
    t = factory()
    out: list[bytes] = []
    for p in pieces:
        out += t.feed_bytes(p)
    out += t.finish()
    return b"".join(out)


def parse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Our own output, parsed strictly: every event is exactly `event:` + `data:`."""
    events = []
    assert raw.endswith(b"\n\n")
    for block in raw[:-2].split(b"\n\n"):
        lines = block.split(b"\n")
        assert len(lines) == 2, block
        assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block
        name = lines[0][7:].decode()
        data = json.loads(lines[1][6:])
        assert data["type"] == name
        events.append((name, data))
    return events


# ---------------------------------------------------------------------------
# byte-split invariance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("api", sorted(FACTORIES))
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_split_at_every_byte_gives_identical_events(api: str, name: str) -> None:
    factory = FACTORIES[api]
    data = sse_bytes(SCENARIOS[name])
    whole = run_bytes(factory, [data])
    assert whole
    for i in range(1, len(data)):
        assert run_bytes(factory, [data[:i], data[i:]]) == whole, f"split at {i}"
    assert run_bytes(factory, (data[i : i + 1] for i in range(len(data)))) == whole
    # feeding decoded chunk dicts gives the same bytes as feeding upstream bytes
    t = factory()
    out: list[bytes] = []
    for c in SCENARIOS[name]:
        out += t.feed(c)
    out += t.finish()
    assert b"".join(out) == whole


@pytest.mark.parametrize("api", sorted(FACTORIES))
def test_crlf_and_three_way_splits(api: str) -> None:
    factory = FACTORIES[api]
    data = sse_bytes(SCENARIOS["parallel_interleaved"])
    whole = run_bytes(factory, [data])
    crlf = data.replace(b"\n", b"\r\n")
    assert run_bytes(factory, [crlf]) == whole
    step = 7
    for i in range(1, len(crlf), step):
        for j in range(i, len(crlf), step * 5):
            assert run_bytes(factory, [crlf[:i], crlf[i:j], crlf[j:]]) == whole


# ---------------------------------------------------------------------------
# Messages: validity and SDK
# ---------------------------------------------------------------------------

_anthropic_event = TypeAdapter(RawMessageStreamEvent)


def check_messages_sequence(
    events: list[tuple[str, dict[str, Any]]], *, error: bool = False
) -> None:
    names = [n for n, _ in events]
    assert names[0] == "message_start"
    assert names.count("message_start") == 1
    if error:
        assert names[-1] == "error" and "message_stop" not in names
    else:
        assert names[-2:] == ["message_delta", "message_stop"]
    open_index: int | None = None
    open_type = ""
    next_index = 0
    for name, data in events:
        if name != "error":
            _anthropic_event.validate_python(data)
        if name == "content_block_start":
            assert open_index is None, "a block started while another is open"
            assert data["index"] == next_index
            open_index, open_type = data["index"], data["content_block"]["type"]
            next_index += 1
        elif name == "content_block_delta":
            assert data["index"] == open_index, "delta without its start"
            allowed = {
                "text": {"text_delta"},
                "tool_use": {"input_json_delta"},
                "thinking": {"thinking_delta", "signature_delta"},
            }[open_type]
            assert data["delta"]["type"] in allowed
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif name in ("message_delta", "message_stop"):
            assert open_index is None, "message ended with an open block"
    if not error:
        assert open_index is None


def sdk_final_message(raw: bytes) -> anthropic.types.Message:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://upstream.test",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with client.messages.stream(
        model="tokn-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_messages_sequences_are_valid_and_parse_with_the_sdk(name: str) -> None:
    raw = run_bytes(messages_stream, [sse_bytes(SCENARIOS[name])])
    events = parse_events(raw)
    check_messages_sequence(events)
    final = sdk_final_message(raw)
    assert final.id == "msg_test"
    assert final.model == "claude-sonnet-4-5"
    for block in final.content:
        if block.type == "tool_use":
            assert isinstance(block.input, dict)


def test_messages_text_stream_content_and_usage() -> None:
    raw = run_bytes(messages_stream, [sse_bytes(SCENARIOS["text"])])
    final = sdk_final_message(raw)
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == "Hello ✓ wörld"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 965 - 200
    assert final.usage.cache_read_input_tokens == 200
    assert final.usage.output_tokens == 93


def test_messages_reasoning_then_text_carries_signature() -> None:
    final = sdk_final_message(
        run_bytes(messages_stream, [sse_bytes(SCENARIOS["reasoning_then_text"])])
    )
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert thinking.thinking == "Let me think."
    assert thinking.signature == "c2lnbmF0dXJl"
    assert text.type == "text" and text.text == "Done."


def test_messages_opaque_only_reasoning_is_redacted_thinking() -> None:
    final = sdk_final_message(
        run_bytes(messages_stream, [sse_bytes(SCENARIOS["opaque_only_then_text"])])
    )
    assert [b.type for b in final.content] == ["redacted_thinking", "text"]
    assert final.content[0].data == "ZW5jcnlwdGVk"  # type: ignore[union-attr]


def test_messages_parallel_interleaved_tool_calls_keep_their_arguments() -> None:
    final = sdk_final_message(
        run_bytes(messages_stream, [sse_bytes(SCENARIOS["parallel_interleaved"])])
    )
    calls = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert calls == [
        ("call_a", "Read", {"path": "a.py"}),
        ("call_b", "Grep", {"pattern": "TODO"}),
        ("call_c", "Glob", {"glob": "*.md"}),
    ]
    assert final.stop_reason == "tool_use"


def test_messages_text_then_tool_and_late_name() -> None:
    final = sdk_final_message(run_bytes(messages_stream, [sse_bytes(SCENARIOS["text_then_tool"])]))
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"command": "ls -la"}  # type: ignore[union-attr]
    final = sdk_final_message(run_bytes(messages_stream, [sse_bytes(SCENARIOS["tool_name_late"])]))
    assert final.content[0].name == "Write"  # type: ignore[union-attr]
    assert final.content[0].input == {"a": 1}  # type: ignore[union-attr]


def test_messages_first_tool_streams_live() -> None:
    """The first tool call's arguments go out as they arrive, not at the end."""
    t = messages_stream()
    chunks = SCENARIOS["text_then_tool"]
    seen: list[bytes] = []
    for c in chunks[:4]:
        seen += t.feed(c)
    assert any(b'"partial_json":"{\\"comm"' in e for e in seen)


def test_messages_stop_reasons_and_missing_usage() -> None:
    final = sdk_final_message(run_bytes(messages_stream, [sse_bytes(SCENARIOS["length"])]))
    assert final.stop_reason == "max_tokens"
    final = sdk_final_message(run_bytes(messages_stream, [sse_bytes(SCENARIOS["no_usage"])]))
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 0
    assert final.usage.input_tokens == 7  # the estimate from message_start
    final = sdk_final_message(
        run_bytes(messages_stream, [sse_bytes(SCENARIOS["usage_in_finish_chunk"])])
    )
    assert final.usage.output_tokens == 93
    assert [b.type for b in final.content] == ["thinking", "text"]


def test_messages_ends_at_usage_without_waiting_for_done() -> None:
    t = messages_stream()
    out: list[bytes] = []
    for c in SCENARIOS["text"]:
        out += t.feed(c)
    assert parse_events(b"".join(out))[-1][0] == "message_stop"
    assert t.ended
    assert t.finish() == []


def test_messages_mid_stream_error_event() -> None:
    raw = run_bytes(messages_stream, [sse_bytes(ERROR_SCENARIO, done=False)])
    events = parse_events(raw)
    check_messages_sequence(events, error=True)
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream exploded"},
    }
    with pytest.raises(anthropic.APIStatusError, match="upstream exploded"):
        sdk_final_message(raw)


def test_messages_error_from_caller_and_after_end() -> None:
    t = messages_stream()
    t.feed(chunk({"content": "x"}))
    out = t.error("connection reset by upstream", status=503)
    assert parse_events(b"".join(out)) == [
        (
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "connection reset by upstream"},
            },
        )
    ]
    assert t.feed(chunk({"content": "more"})) == [] and t.finish() == [] and t.error("again") == []


def test_messages_malformed_upstream_data_ends_with_error() -> None:
    raw = run_bytes(
        messages_stream,
        [b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\ndata: {oops\n\n'],
    )
    events = parse_events(raw)
    assert events[-1][0] == "error"
    assert "malformed" in events[-1][1]["error"]["message"]


@pytest.mark.parametrize("api", sorted(FACTORIES))
def test_truncated_body_ends_with_error_not_a_normal_stop(api: str) -> None:
    data = sse_bytes([chunk({"content": "half an ans"})], done=False)
    events = parse_events(run_bytes(FACTORIES[api], [data]))
    assert events[-1][0] in ("error", "response.failed")
    # with a finish_reason, a missing [DONE] is fine
    data = sse_bytes([chunk({"content": "whole"}), chunk({}, "stop")], done=False)
    events = parse_events(run_bytes(FACTORIES[api], [data]))
    assert events[-1][0] in ("message_stop", "response.completed")


def test_messages_ping_and_start() -> None:
    t = messages_stream()
    assert t.ping() == []
    start = t.start()
    assert parse_events(b"".join(start))[0][1]["message"]["usage"]["input_tokens"] == 7
    assert t.ping() == [b'event: ping\ndata: {"type":"ping"}\n\n']
    assert t.start() == []


# ---------------------------------------------------------------------------
# Responses: validity and SDK
# ---------------------------------------------------------------------------

_responses_event = TypeAdapter(ResponseStreamEvent)


def check_responses_sequence(
    events: list[tuple[str, dict[str, Any]]], final: str = "response.completed"
) -> None:
    names = [n for n, _ in events]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    if final != "response.failed":
        assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == final
    assert (
        sum(n in ("response.completed", "response.incomplete", "response.failed") for n in names)
        == 1
    )
    open_item: dict[str, Any] | None = None
    done_items: list[dict[str, Any]] = []
    for name, data in events:
        _responses_event.validate_python(data)
        if name == "response.output_item.added":
            assert open_item is None, "items must not overlap"
            assert data["output_index"] == len(done_items)
            open_item = data["item"]
        elif name == "response.output_item.done":
            assert open_item is not None and data["item"]["id"] == open_item["id"]
            item = data["item"]
            if item["type"] == "function_call":
                assert item["name"] and item["call_id"] and item["status"] == "completed"
                json.loads(item["arguments"])
            elif item["type"] == "custom_tool_call":
                assert item["name"] and item["call_id"] and isinstance(item["input"], str)
            elif item["type"] == "message":
                assert item["content"][0]["type"] == "output_text"
            done_items.append(item)
            open_item = None
        elif "item_id" in data:
            assert open_item is not None and data["item_id"] == open_item["id"], name
            assert data["output_index"] == len(done_items)
    assert open_item is None or final == "response.failed"
    if final != "response.failed":
        assert events[-1][1]["response"]["output"] == done_items


def sdk_final_response(raw: bytes) -> openai.types.responses.Response:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    client = openai.OpenAI(
        api_key="k",
        base_url="http://upstream.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with client.responses.stream(model="gpt-5-mini", input="hi") as stream:
        for _event in stream:
            pass
        return stream.get_final_response()


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - {"length"}))
def test_responses_sequences_are_valid_and_parse_with_the_sdk(name: str) -> None:
    raw = run_bytes(responses_stream, [sse_bytes(SCENARIOS[name])])
    events = parse_events(raw)
    check_responses_sequence(events)
    final = sdk_final_response(raw)
    assert final.id == "resp_test" and final.status == "completed"


def test_responses_text_usage_and_items() -> None:
    final = sdk_final_response(run_bytes(responses_stream, [sse_bytes(SCENARIOS["text"])]))
    assert final.output_text == "Hello ✓ wörld"
    assert final.usage is not None
    assert final.usage.input_tokens == 965
    assert final.usage.input_tokens_details.cached_tokens == 200
    assert final.usage.output_tokens == 93
    assert final.usage.output_tokens_details.reasoning_tokens == 12
    assert final.usage.total_tokens == 1058


def test_responses_reasoning_item_carries_summary_and_encrypted_content() -> None:
    raw = run_bytes(responses_stream, [sse_bytes(SCENARIOS["reasoning_then_text"])])
    final = sdk_final_response(raw)
    reasoning, message = final.output
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == "Let me think."
    assert reasoning.encrypted_content == "c2lnbmF0dXJl"
    assert message.type == "message"
    names = [n for n, _ in parse_events(raw)]
    assert "response.reasoning_summary_text.delta" in names


def test_responses_parallel_function_calls() -> None:
    final = sdk_final_response(
        run_bytes(responses_stream, [sse_bytes(SCENARIOS["parallel_interleaved"])])
    )
    calls = [
        (o.call_id, o.name, json.loads(o.arguments))
        for o in final.output
        if o.type == "function_call"
    ]
    assert calls == [
        ("call_a", "Read", {"path": "a.py"}),
        ("call_b", "Grep", {"pattern": "TODO"}),
        ("call_c", "Glob", {"glob": "*.md"}),
    ]


def test_responses_length_is_incomplete() -> None:
    raw = run_bytes(responses_stream, [sse_bytes(SCENARIOS["length"])])
    events = parse_events(raw)
    check_responses_sequence(events, final="response.incomplete")
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_responses_mid_stream_error_is_response_failed() -> None:
    raw = run_bytes(responses_stream, [sse_bytes(ERROR_SCENARIO, done=False)])
    events = parse_events(raw)
    check_responses_sequence(events, final="response.failed")
    err = events[-1][1]["response"]["error"]
    assert err == {"code": "server_error", "message": "upstream exploded"}
    assert events[-1][1]["response"]["status"] == "failed"


def test_responses_error_before_anything_was_sent() -> None:
    t = responses_stream()
    events = parse_events(b"".join(t.error("no account could serve the request", status=503)))
    assert [n for n, _ in events] == ["response.failed"]
    assert events[0][1]["sequence_number"] == 0


NAMESPACE_REQUEST: dict[str, Any] = {
    "model": "gpt-5-mini",
    "stream": True,
    "input": "go",
    "tools": [
        {
            "type": "namespace",
            "name": "multi_agent_v1",
            "description": "Sub-agents",
            "tools": [
                {"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}
            ],
        },
        {
            "type": "custom",
            "name": "apply_patch",
            "description": "Apply a patch",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
        },
    ],
}


def test_responses_namespace_and_custom_tool_calls_come_back_in_client_terms() -> None:
    chat = responses_to_chat(NAMESPACE_REQUEST)
    names = [t["function"]["name"] for t in chat["tools"]]
    assert names == ["multi_agent_v1__spawn_agent", "apply_patch"]
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"
    chunks = [
        chunk({"tool_calls": [tc(0, "call_ns", "multi_agent_v1__spawn_agent", '{"task": "x"}')]}),
        chunk({"tool_calls": [tc(1, "call_cp", "apply_patch", "")]}),
        chunk({"tool_calls": [tc(1, args=json.dumps({"input": patch})[:20])]}),
        chunk({"tool_calls": [tc(1, args=json.dumps({"input": patch})[20:])]}),
        chunk({}, "tool_calls"),
        USAGE,
    ]
    factory = lambda: responses_stream(NAMESPACE_REQUEST)  # noqa: E731
    data = sse_bytes(chunks)
    raw = run_bytes(factory, [data])
    for i in range(1, len(data)):
        assert run_bytes(factory, [data[:i], data[i:]]) == raw
    events = parse_events(raw)
    check_responses_sequence(events)
    done = [d["item"] for n, d in events if n == "response.output_item.done"]
    assert done[0]["type"] == "function_call"
    assert done[0]["name"] == "spawn_agent" and done[0]["namespace"] == "multi_agent_v1"
    assert done[1]["type"] == "custom_tool_call"
    assert done[1]["name"] == "apply_patch" and done[1]["input"] == patch
    names = [n for n, _ in events]
    assert "response.custom_tool_call_input.done" in names
    final = sdk_final_response(raw)
    assert final.output[1].type == "custom_tool_call"

    # Codex echoes both items back: they map to the same chat tool calls
    echo = dict(
        NAMESPACE_REQUEST,
        input=[
            "go",
            *done,
            *(
                {"type": f"{d['type']}_output", "call_id": d["call_id"], "output": "ok"}
                for d in done
            ),
        ],
    )
    echo["input"][0] = {"role": "user", "content": "go"}
    msgs = responses_to_chat(echo)["messages"]
    assistant = msgs[1]
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == [
        "multi_agent_v1__spawn_agent",
        "apply_patch",
    ]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_ns", "call_cp"]
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"input": patch}
    assert [(m["role"], m["tool_call_id"]) for m in msgs[2:]] == [
        ("tool", "call_ns"),
        ("tool", "call_cp"),
    ]


def test_responses_function_call_echo_round_trip_keeps_upstream_call_id() -> None:
    """What output_item.done gave Codex, sent back as input, reaches upstream with the same id."""
    raw = run_bytes(
        responses_stream,
        [sse_bytes(SCENARIOS["reasoning_then_text"][:-3] + SCENARIOS["text_then_tool"][1:])],
    )
    done = [d["item"] for n, d in parse_events(raw) if n == "response.output_item.done"]
    fc = next(i for i in done if i["type"] == "function_call")
    assert fc["id"].startswith("fc_") and fc["call_id"] == "call_1"
    body = dict(
        CODEX_TOOLS_REQUEST,
        input=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ls"}]},
            *done,
            {
                "type": "function_call_output",
                "id": "fco_1",
                "call_id": fc["call_id"],
                "output": "a.py\n",
            },
        ],
    )
    msgs = responses_to_chat(body)["messages"]
    assert msgs[1]["role"] == "assistant"
    assert msgs[1]["tool_calls"][0]["id"] == "call_1"
    assert msgs[1]["reasoning_text"] == "Let me think."
    assert msgs[1]["reasoning_opaque"] == "c2lnbmF0dXJl"
    assert msgs[2] == {"role": "tool", "tool_call_id": "call_1", "content": "a.py\n"}


# ---------------------------------------------------------------------------
# ChunkReader
# ---------------------------------------------------------------------------


def test_chunk_reader_handles_comments_multiline_and_done() -> None:
    r = ChunkReader()
    out = r.feed(
        b': keep-alive\n\nevent: x\ndata: {"a":\ndata: 1}\n\ndata:{"b":2}\r\n\r\ndata: [DONE]\n\n'
    )
    assert out == [{"a": 1}, {"b": 2}]
    assert r.done


def test_chunk_reader_flushes_unterminated_event_on_close() -> None:
    r = ChunkReader()
    assert r.feed(b'data: {"a": 1}') == []
    assert r.close() == [{"a": 1}]
    assert r.close() == []

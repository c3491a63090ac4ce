"""Anthropic Messages ↔ chat completions: request and (non-streamed) answer bodies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from anthropic.types import Message

from tokn_router.wire.translate import TranslationError, anthropic_error, translation_error_body
from tokn_router.wire.translate.anthropic import chat_to_message, messages_to_chat

SCHEMA = "https://json-schema.org/draft/2020-12/schema"

# Shaped like Claude Code 2.1's first request (agents-wire.md).
CLAUDE_CODE: dict[str, Any] = {
    "model": "claude-sonnet-4",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>agents</system-reminder>"},
                {"type": "text", "text": "<system-reminder>skills</system-reminder>"},
                {"type": "text", "text": "<system-reminder>date</system-reminder>"},
                {"type": "text", "text": "list the files", "cache_control": {"type": "ephemeral"}},
            ],
        }
    ],
    "system": [
        {
            "type": "text",
            "text": "x-anthropic-billing-header: cc_version=2.1.197; cc_entrypoint=sdk-cli;",
        },
        {
            "type": "text",
            "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "MAIN PROMPT", "cache_control": {"type": "ephemeral"}},
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Run a command",
            "input_schema": {
                "$schema": SCHEMA,
                "type": "object",
                "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                "required": ["command"],
                "additionalProperties": False,
            },
        },
        {
            "name": "Read",
            "description": "Read a file",
            "input_schema": {
                "$schema": SCHEMA,
                "type": "object",
                "properties": {"file_path": {"type": "string"}},
            },
        },
    ],
    "metadata": {"user_id": '{"device_id":"d","account_uuid":"a","session_id":"s"}'},
    "max_tokens": 32000,
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "stream": True,
}

ROUND_TRIP = copy.deepcopy(CLAUDE_CODE)
ROUND_TRIP["messages"] += [
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "I should list.", "signature": "sig-1"},
            {"type": "text", "text": "Listing."},
            {"type": "tool_use", "id": "call_up_1", "name": "Bash", "input": {"command": "ls"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "call_up_1",
                "content": "a.py\nb.py\n",
                "is_error": False,
                "cache_control": {"type": "ephemeral"},
            }
        ],
    },
]


def test_claude_code_first_request() -> None:
    out = messages_to_chat(CLAUDE_CODE)
    assert out["model"] == "claude-sonnet-4"
    assert out["max_tokens"] == 32000
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    system, user = out["messages"]
    # three system blocks joined, the billing marker dropped, cache_control gone
    assert system == {
        "role": "system",
        "content": "You are a Claude agent, built on Anthropic's Claude Agent SDK.\n\nMAIN PROMPT",
    }
    assert user["role"] == "user"
    assert user["content"].endswith("\n\nlist the files")
    assert "cache_control" not in json.dumps(out)
    assert "$schema" not in json.dumps(out["tools"])
    assert out["tools"][0] == {
        "type": "function",
        "function": {
            "name": "Bash",
            "description": "Run a command",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                "required": ["command"],
                "additionalProperties": False,
            },
        },
    }
    # no capabilities known: the thinking budget has nowhere to go
    for key in (
        "thinking",
        "thinking_budget",
        "reasoning_effort",
        "metadata",
        "context_management",
        "user",
    ):
        assert key not in out
    assert "tool_choice" not in out


def test_claude_code_tool_round_trip() -> None:
    msgs = messages_to_chat(ROUND_TRIP)["messages"]
    assistant, tool = msgs[2], msgs[3]
    assert assistant == {
        "role": "assistant",
        "content": "Listing.",
        "tool_calls": [
            {
                "id": "call_up_1",
                "type": "function",
                "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
            }
        ],
        "reasoning_text": "I should list.",
        "reasoning_opaque": "sig-1",
    }
    # a user turn made only of tool_result → just the tool message
    assert tool == {"role": "tool", "tool_call_id": "call_up_1", "content": "a.py\nb.py\n"}
    assert len(msgs) == 4


def test_model_override_is_the_upstream_id() -> None:
    out = messages_to_chat(base(model="claude-sonnet-4-5-20250929"), model="claude-sonnet-4.5")
    assert out["model"] == "claude-sonnet-4.5"


def test_title_request_with_empty_tools_and_temperature() -> None:
    body = {
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "hello"}],
        "system": [{"type": "text", "text": "Generate a concise, sentence-case title"}],
        "tools": [],
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "disabled"},
        "temperature": 1,
        "stream": False,
    }
    out = messages_to_chat(body)
    assert "tools" not in out and "tool_choice" not in out
    assert out["temperature"] == 1
    assert "stream" not in out and "stream_options" not in out
    assert out["messages"] == [
        {"role": "system", "content": "Generate a concise, sentence-case title"},
        {"role": "user", "content": "hello"},
    ]


def base(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    body.update(kw)
    return body


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    out = messages_to_chat(base(tools=CLAUDE_CODE["tools"], tool_choice=choice))
    assert out["tool_choice"] == expected


def test_disable_parallel_tool_use_and_sampling_and_stops() -> None:
    out = messages_to_chat(
        base(
            tools=CLAUDE_CODE["tools"],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            stop_sequences=["\n\nHuman:", "END"],
            temperature=0.2,
            top_p=0.9,
            top_k=5,
            service_tier="auto",
        )
    )
    assert out["parallel_tool_calls"] is False
    assert out["stop"] == ["\n\nHuman:", "END"]
    assert out["temperature"] == 0.2 and out["top_p"] == 0.9
    assert "top_k" not in out and "service_tier" not in out


def test_anthropic_defined_tools_are_dropped() -> None:
    tools = [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "bash_20250124", "name": "bash"},
        *CLAUDE_CODE["tools"][:1],
    ]
    out = messages_to_chat(base(tools=tools))
    assert [t["function"]["name"] for t in out["tools"]] == ["Bash"]


def test_images_base64_and_url() -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    out = messages_to_chat(base(messages=[{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_tool_result_blocks_errors_and_images() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "a.png"}},
                {"type": "tool_use", "id": "t2", "name": "Bash", "input": {"command": "false"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "the image:"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                        },
                    ],
                },
                {"type": "tool_result", "tool_use_id": "t2", "content": "exit 1", "is_error": True},
                {"type": "text", "text": "now fix it"},
            ],
        },
    ]
    msgs = messages_to_chat(base(messages=messages))["messages"]
    assert msgs[1]["content"] == "" and len(msgs[1]["tool_calls"]) == 2
    assert msgs[2] == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "the image:\n[1 image(s) attached in the next message]",
    }
    assert msgs[3] == {"role": "tool", "tool_call_id": "t2", "content": "Error: exit 1"}
    assert msgs[4]["role"] == "user"
    assert msgs[4]["content"] == [
        {"type": "text", "text": "Image(s) returned by tool call t1:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "now fix it"},
    ]


def test_unknown_blocks_and_fields_are_ignored() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi", "citations": None, "brand_new": 1},
                {"type": "container_upload", "file_id": "f"},
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "DOC"},
                },
                {
                    "type": "document",
                    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
                {"type": "redacted_thinking", "data": "ENCRYPTED"},
                {"type": "text", "text": "ok"},
            ],
        },
    ]
    out = messages_to_chat(
        base(messages=messages, mcp_servers=[], container="c", some_future_field={"x": 1})
    )
    user, assistant = out["messages"]
    assert user["content"].startswith("hi\n\nDOC\n\n[document of type application/pdf omitted")
    assert assistant == {"role": "assistant", "content": "ok", "reasoning_opaque": "ENCRYPTED"}


def test_foreign_reasoning_signature_dropped_for_claude_models() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "t", "signature": "gAAA@openai"}],
        },
        {"role": "user", "content": "b"},
    ]
    assert (
        "reasoning_opaque"
        not in messages_to_chat(base(model="claude-sonnet-4", messages=messages))["messages"][1]
    )
    assert (
        messages_to_chat(base(model="gpt-5-mini", messages=messages))["messages"][1][
            "reasoning_opaque"
        ]
        == "gAAA@openai"
    )


COPILOT_CLAUDE_CAPS = {
    "limits": {"max_output_tokens": 16000},
    "supports": {"max_thinking_budget": 32000, "min_thinking_budget": 1024, "tool_calls": True},
}
GPT_CAPS = {"supports": {"reasoning_effort": ["low", "medium", "high"]}}


@pytest.mark.parametrize(
    ("thinking", "caps", "expected"),
    [
        (
            {"type": "enabled", "budget_tokens": 31999},
            COPILOT_CLAUDE_CAPS,
            {"thinking_budget": 15999},
        ),
        ({"type": "enabled", "budget_tokens": 500}, COPILOT_CLAUDE_CAPS, {"thinking_budget": 1024}),
        ({"type": "enabled", "budget_tokens": 31999}, GPT_CAPS, {"reasoning_effort": "high"}),
        ({"type": "enabled", "budget_tokens": 2000}, GPT_CAPS, {"reasoning_effort": "low"}),
        (
            {"type": "enabled", "budget_tokens": 2000},
            {"supports": {"reasoning_effort": ["high"]}},
            {"reasoning_effort": "high"},
        ),
        ({"type": "adaptive"}, GPT_CAPS, {"reasoning_effort": "medium"}),
        ({"type": "disabled"}, GPT_CAPS, {}),
        ({"type": "enabled", "budget_tokens": 31999}, {"supports": {}}, {}),
        ({"type": "enabled", "budget_tokens": 31999}, None, {}),
    ],
)
def test_thinking_budget_mapping(
    thinking: dict[str, Any], caps: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    out = messages_to_chat(base(thinking=thinking), capabilities=caps)
    got = {k: out[k] for k in ("thinking_budget", "reasoning_effort") if k in out}
    assert got == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": "10", "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": True, "messages": []}, "max_tokens"),
        ({"model": "m", "max_tokens": 0, "messages": []}, "max_tokens"),
        ({"max_tokens": 10, "messages": []}, "model"),
        ({"model": "m", "max_tokens": 10}, "messages"),
        ({"model": "m", "max_tokens": 10, "messages": {"role": "user"}}, "messages"),
        ({"model": "m", "max_tokens": 10, "messages": ["hi"]}, "messages.0"),
        (
            {"model": "m", "max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]},
            "messages.0.role",
        ),
        (
            {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": 5}]},
            "messages.0.content",
        ),
        (
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            },
            "messages.0.content.0.text",
        ),
        (
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
            },
            "messages.0.content.0.tool_use_id",
        ),
        (
            {
                "model": "m",
                "max_tokens": 10,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ],
            },
            "messages.0.content.0.source.type",
        ),
        ({"model": "m", "max_tokens": 10, "messages": [], "tools": {"name": "x"}}, "tools"),
        ({"model": "m", "max_tokens": 10, "messages": [], "system": 5}, "system"),
    ],
)
def test_invalid_input_raises_translation_error(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as exc:
        messages_to_chat(body)
    assert exc.value.param == param
    assert exc.value.status == 400
    status, err = translation_error_body(exc.value, "anthropic")
    assert (
        status == 400 and err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    )
    assert param.split(".")[0] in err["error"]["message"]


# ---------------------------------------------------------------------------
# chat completion → Message
# ---------------------------------------------------------------------------


def completion(
    message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-xyz",
        "object": "chat.completion",
        "created": 1,
        "model": "claude-sonnet-4",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": usage
        or {
            "prompt_tokens": 1000,
            "completion_tokens": 50,
            "total_tokens": 1050,
            "prompt_tokens_details": {"cached_tokens": 800},
        },
    }


def test_chat_to_message_full() -> None:
    resp = completion(
        {
            "content": "I'll run it.",
            "reasoning_text": "thinking...",
            "reasoning_opaque": "sig==",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "Bash", "arguments": '{"command": "ls"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_goal", "arguments": ""},
                },
            ],
        },
        finish="tool_calls",
    )
    msg = chat_to_message(resp, "claude-sonnet-4-5-20250929")
    Message.model_validate(msg)
    assert msg["model"] == "claude-sonnet-4-5-20250929"
    assert msg["id"] == "msg_xyz"
    assert msg["content"] == [
        {"type": "thinking", "thinking": "thinking...", "signature": "sig=="},
        {"type": "text", "text": "I'll run it."},
        {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "call_2", "name": "get_goal", "input": {}},
    ]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {
        "input_tokens": 200,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 800,
        "output_tokens": 50,
    }


@pytest.mark.parametrize(
    ("finish", "tools", "expected"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("stop", True, "tool_use"),  # some upstreams say stop after tool calls
        ("content_filter", False, "refusal"),
        (None, False, "end_turn"),
    ],
)
def test_chat_to_message_stop_reasons(finish: str | None, tools: bool, expected: str) -> None:
    message: dict[str, Any] = {"content": "x"}
    if tools:
        message["tool_calls"] = [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]
    resp = completion(message)
    resp["choices"][0]["finish_reason"] = finish
    out = chat_to_message(resp, "m")
    assert out["stop_reason"] == expected
    Message.model_validate(out)


def test_chat_to_message_opaque_only_and_zai_reasoning_and_no_usage() -> None:
    out = chat_to_message(completion({"content": "a", "reasoning_opaque": "enc"}), "m")
    assert out["content"][0] == {"type": "redacted_thinking", "data": "enc"}
    resp = completion({"content": "a", "reasoning_content": "glm thoughts"})
    del resp["usage"]
    out = chat_to_message(resp, "m")
    assert out["content"][0] == {"type": "thinking", "thinking": "glm thoughts", "signature": ""}
    assert out["usage"]["input_tokens"] == 0 and out["usage"]["output_tokens"] == 0
    Message.model_validate(out)


def test_chat_to_message_bad_upstream() -> None:
    with pytest.raises(TranslationError) as exc:
        chat_to_message({"choices": []}, "m")
    assert exc.value.status == 502
    bad = completion(
        {
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
            ]
        }
    )
    with pytest.raises(TranslationError, match="invalid JSON arguments") as exc:
        chat_to_message(bad, "m")
    assert exc.value.status == 502
    assert translation_error_body(exc.value, "anthropic")[1]["error"]["type"] == "api_error"


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error_shape(status: int, type_: str) -> None:
    assert anthropic_error(status, "boom") == (
        status,
        {"type": "error", "error": {"type": type_, "message": "boom"}},
    )


def test_messages_initiator() -> None:
    from tokn_router.wire.translate import messages_initiator

    assert messages_initiator(CLAUDE_CODE) == "user"
    assert messages_initiator(ROUND_TRIP) == "agent"  # user turn made only of tool_result
    mixed = copy.deepcopy(ROUND_TRIP)
    mixed["messages"][-1]["content"].append({"type": "text", "text": "also this"})
    assert messages_initiator(mixed) == "user"
    assert (
        messages_initiator(
            base(
                messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "pre"}]
            )
        )
        == "agent"
    )
    assert messages_initiator({"messages": "junk"}) == "user"


def test_system_message_inside_messages_is_kept_in_place() -> None:
    # Claude Code sends this for non-Claude models (its agent list), with adaptive thinking
    body = {
        "model": "gpt-4.1",
        "max_tokens": 32000,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Available agent types: claude"},
        ],
    }
    out = messages_to_chat(body)
    assert [m["role"] for m in out["messages"]] == ["user", "system"]
    assert out["messages"][1]["content"] == "Available agent types: claude"

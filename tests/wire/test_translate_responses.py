"""OpenAI Responses ↔ chat completions: request and (non-streamed) answer bodies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from openai.types.responses import Response

from tokn_router.wire.translate import TranslationError, openai_error, translation_error_body
from tokn_router.wire.translate.responses import (
    CUSTOM_TOOL_PARAM,
    chat_to_response,
    flat_tool_name,
    responses_to_chat,
)

EXEC_PARAMS = {
    "type": "object",
    "properties": {
        "cmd": {"type": "string"},
        "workdir": {"type": "string"},
        "yield_time_ms": {"type": "number"},
    },
    "required": ["cmd"],
    "additionalProperties": False,
}

# Shaped like Codex CLI 0.169's first request (agents-wire.md).
CODEX: dict[str, Any] = {
    "model": "gpt-5-mini",
    "stream": True,
    "input": [
        {
            "type": "message",
            "id": "msg_1",
            "role": "developer",
            "content": [
                {"type": "input_text", "text": "You are a coding agent running in the Codex CLI."}
            ],
        },
        {
            "type": "message",
            "id": "msg_2",
            "role": "developer",
            "content": [
                {"type": "input_text", "text": "<skills>…</skills>"},
                {"type": "input_text", "text": "<permissions>…</permissions>"},
            ],
        },
        {
            "type": "message",
            "id": "msg_3",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "<environment_context>cwd</environment_context>"}
            ],
        },
        {
            "type": "message",
            "id": "msg_4",
            "role": "user",
            "content": [{"type": "input_text", "text": "list files"}],
        },
    ],
    "tools": [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Run a command",
            "strict": False,
            "parameters": EXEC_PARAMS,
        },
        {
            "type": "function",
            "name": "get_goal",
            "description": "Get the goal",
            "strict": False,
            "parameters": {"type": "object", "properties": {}},
        },
        {
            "type": "namespace",
            "name": "multi_agent_v1",
            "description": "Tools to manage sub-agents",
            "tools": [
                {
                    "type": "function",
                    "name": "spawn_agent",
                    "description": "Spawn",
                    "strict": False,
                    "parameters": {"type": "object", "properties": {"task": {"type": "string"}}},
                },
                {
                    "type": "function",
                    "name": "wait_agent",
                    "description": "Wait",
                    "strict": False,
                    "parameters": {"type": "object", "properties": {}},
                },
            ],
        },
        {"type": "web_search", "external_web_access": False},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "store": False,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199-session",
    "client_metadata": {"session_id": "s", "x-codex-turn-metadata": "{}"},
}

FUNCTION_CALL = {
    "type": "function_call",
    "status": "completed",
    "id": "fc_abc_1",
    "name": "exec_command",
    "arguments": '{"cmd":"ls"}',
    "call_id": "call_upstream_1",
}
FUNCTION_OUTPUT = {
    "type": "function_call_output",
    "id": "fco_1",
    "call_id": "call_upstream_1",
    "output": "Chunk ID: 1\nWall time: 0.01s\nProcess exited with code 0\nOutput:\na.py\n",
}


def test_codex_first_request() -> None:
    out = responses_to_chat(CODEX)
    assert out["model"] == "gpt-5-mini"
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["messages"] == [
        {
            "role": "system",
            "content": "You are a coding agent running in the Codex CLI.\n\n<skills>…</skills>\n\n<permissions>…</permissions>",
        },
        {"role": "user", "content": "<environment_context>cwd</environment_context>"},
        {"role": "user", "content": "list files"},
    ]
    names = [t["function"]["name"] for t in out["tools"]]
    # web_search dropped, the namespace flattened
    assert names == [
        "exec_command",
        "get_goal",
        "multi_agent_v1__spawn_agent",
        "multi_agent_v1__wait_agent",
    ]
    assert out["tools"][0] == {
        "type": "function",
        "function": {
            "name": "exec_command",
            "parameters": EXEC_PARAMS,
            "description": "Run a command",
        },
    }
    assert "Tools to manage sub-agents" in out["tools"][2]["function"]["description"]
    assert out["tool_choice"] == "auto"
    assert out["parallel_tool_calls"] is True
    for key in (
        "store",
        "include",
        "prompt_cache_key",
        "client_metadata",
        "reasoning",
        "reasoning_effort",
        "max_tokens",
    ):
        assert key not in out


def test_codex_tool_round_trip_uses_call_id() -> None:
    body = copy.deepcopy(CODEX)
    body["input"] += [
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [
                {"type": "summary_text", "text": "**Listing**"},
                {"type": "summary_text", "text": "then run"},
            ],
            "encrypted_content": "OPAQUE==",
        },
        FUNCTION_CALL,
        FUNCTION_OUTPUT,
    ]
    msgs = responses_to_chat(body)["messages"]
    assert msgs[3] == {
        "role": "assistant",
        "content": "",
        "reasoning_text": "**Listing**\n\nthen run",
        "reasoning_opaque": "OPAQUE==",
        "tool_calls": [
            {
                "id": "call_upstream_1",
                "type": "function",
                "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
            }
        ],
    }
    assert msgs[4] == {
        "role": "tool",
        "tool_call_id": "call_upstream_1",
        "content": FUNCTION_OUTPUT["output"],
    }


def test_model_override_and_legacy_object_output() -> None:
    body = {
        "model": "codex-mini-latest",
        "input": [
            {"role": "user", "content": "x"},
            FUNCTION_CALL,
            {
                "type": "function_call_output",
                "call_id": "call_upstream_1",
                "output": {"content": "done", "success": True},
            },
        ],
    }
    out = responses_to_chat(body, model="gpt-5-mini")
    assert out["model"] == "gpt-5-mini"
    assert out["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_upstream_1",
        "content": "done",
    }


def test_parallel_calls_merge_into_one_assistant_message() -> None:
    second = dict(FUNCTION_CALL, id="fc_2", call_id="call_2", arguments='{"cmd":"pwd"}')
    body = dict(
        CODEX,
        input=[
            {"role": "user", "content": "go"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Running both."}],
            },
            FUNCTION_CALL,
            second,
            FUNCTION_OUTPUT,
            {"type": "function_call_output", "call_id": "call_2", "output": "/tmp"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Done."}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
        ],
    )
    msgs = responses_to_chat(body)["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "assistant", "user"]
    assert msgs[1]["content"] == "Running both."
    assert [c["id"] for c in msgs[1]["tool_calls"]] == ["call_upstream_1", "call_2"]
    assert msgs[4] == {"role": "assistant", "content": "Done."}


def test_instructions_string_input_and_sampling_fields() -> None:
    body = {
        "model": "gpt-4.1",
        "instructions": "Be terse.",
        "input": "hello",
        "max_output_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.8,
        "reasoning": {"effort": "high", "summary": "detailed"},
        "text": {
            "verbosity": "low",
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object"},
                "strict": True,
            },
        },
        "truncation": "auto",
        "user": "u",
        "metadata": {"k": "v"},
        "service_tier": "auto",
        "top_logprobs": 0,
    }
    out = responses_to_chat(body)
    assert out == {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "hello"},
        ],
        "max_tokens": 256,
        "temperature": 0.3,
        "top_p": 0.8,
        "reasoning_effort": "high",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
    }


def test_images_files_and_refusals() -> None:
    body = {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AAAA",
                        "detail": "high",
                    },
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/x.png",
                        "detail": "auto",
                    },
                    {"type": "input_image", "file_id": "file_1"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,JVBE",
                        "filename": "a.pdf",
                    },
                    {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "refusal", "refusal": "I can't."}],
            },
        ],
    }
    user, assistant = responses_to_chat(body)["messages"]
    assert user["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png", "detail": "auto"}},
        {"type": "text", "text": "[image omitted: file ids are not supported]"},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
        },
    ]
    assert assistant == {"role": "assistant", "content": "I can't."}


def test_tool_output_with_image_parts() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "shot"},
            dict(FUNCTION_CALL, name="view_image"),
            {
                "type": "function_call_output",
                "call_id": "call_upstream_1",
                "output": [
                    {"type": "input_text", "text": "screenshot:"},
                    {"type": "input_image", "image_url": "data:image/png;base64,BBBB"},
                ],
            },
        ],
    }
    msgs = responses_to_chat(body)["messages"]
    assert msgs[2] == {
        "role": "tool",
        "tool_call_id": "call_upstream_1",
        "content": "screenshot:\n[1 image(s) attached in the next message]",
    }
    assert msgs[3]["role"] == "user"
    assert msgs[3]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,BBBB"},
    }


def test_custom_tools_become_one_string_parameter_functions() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "patch it"},
            {
                "type": "custom_tool_call",
                "id": "ctc_1",
                "call_id": "call_p",
                "name": "apply_patch",
                "input": "*** Begin Patch",
            },
            {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Success"},
        ],
        "tools": [
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Patch files",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"},
            },
            {"type": "custom", "name": "note"},
        ],
        "tool_choice": {"type": "custom", "name": "apply_patch"},
    }
    out = responses_to_chat(body)
    fn = out["tools"][0]["function"]
    assert fn["name"] == "apply_patch"
    assert fn["parameters"]["required"] == [CUSTOM_TOOL_PARAM]
    assert fn["parameters"]["properties"][CUSTOM_TOOL_PARAM]["type"] == "string"
    assert "start: x" in fn["parameters"]["properties"][CUSTOM_TOOL_PARAM]["description"]
    assert fn["description"].startswith("Patch files")
    assert (
        out["tools"][1]["function"]["parameters"]["properties"][CUSTOM_TOOL_PARAM]["description"]
        == "The raw input text."
    )
    assert out["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}
    call = out["messages"][1]["tool_calls"][0]
    assert call["id"] == "call_p" and json.loads(call["function"]["arguments"]) == {
        "input": "*** Begin Patch"
    }
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "call_p", "content": "Success"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        (
            {"type": "function", "name": "exec_command"},
            {"type": "function", "function": {"name": "exec_command"}},
        ),
        (
            {"type": "function", "name": "spawn_agent", "namespace": "multi_agent_v1"},
            {"type": "function", "function": {"name": "multi_agent_v1__spawn_agent"}},
        ),
        ({"type": "allowed_tools", "mode": "required", "tools": []}, "required"),
        ({"type": "web_search_preview"}, None),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    out = responses_to_chat(dict(CODEX, tool_choice=choice))
    assert out.get("tool_choice") == expected


def test_only_hosted_tools_means_no_tools() -> None:
    out = responses_to_chat(
        {
            "model": "m",
            "input": "x",
            "tools": [{"type": "web_search"}, {"type": "file_search"}],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        }
    )
    assert "tools" not in out and "tool_choice" not in out and "parallel_tool_calls" not in out


def test_flat_tool_names() -> None:
    assert flat_tool_name("multi_agent_v1", "spawn_agent") == "multi_agent_v1__spawn_agent"
    assert flat_tool_name("mcp__github__", "search") == "mcp__github__search"
    assert flat_tool_name("my.ns", "x y") == "my_ns__x_y"
    long = flat_tool_name("n" * 50, "t" * 50)
    assert len(long) == 64 and long != flat_tool_name("n" * 50, "t" * 49 + "u")


def test_reasoning_before_user_message_goes_to_previous_assistant() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "q"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "a"}],
            },
            {"type": "reasoning", "summary": [], "encrypted_content": "LATE"},
            {"role": "user", "content": "q2"},
            {
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "raw"}],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "b"}],
            },
        ],
    }
    msgs = responses_to_chat(body)["messages"]
    assert msgs[1] == {"role": "assistant", "content": "a", "reasoning_opaque": "LATE"}
    assert msgs[3] == {"role": "assistant", "content": "b", "reasoning_text": "raw"}


def test_unknown_items_and_fields_are_ignored() -> None:
    body = dict(
        CODEX,
        input=[
            {
                "type": "web_search_call",
                "id": "ws",
                "status": "completed",
                "action": {"type": "search"},
            },
            {"type": "compaction", "encrypted_content": "xx"},
            {"type": "local_shell_call", "call_id": "c", "status": "completed", "action": {}},
            {"role": "user", "content": "hi", "some_new_field": True},
        ],
        brand_new_option={"a": 1},
    )
    out = responses_to_chat(body)
    assert out["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "m"}, "input", None),
        ({"model": "m", "input": 5}, "input", None),
        ({"input": "x"}, "model", None),
        (
            {"model": "m", "input": "x", "previous_response_id": "resp_1", "store": True},
            "previous_response_id",
            "previous_response_not_found",
        ),
        ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation", None),
        ({"model": "m", "input": ["x"]}, "input.0", None),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input.0.role", None),
        ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input.0.content", None),
        (
            {"model": "m", "input": [{"type": "function_call", "name": "f"}]},
            "input.0.call_id",
            None,
        ),
        (
            {"model": "m", "input": [{"type": "function_call_output", "output": "x"}]},
            "input.0.call_id",
            None,
        ),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0", None),
        ({"model": "m", "input": "x", "tools": {"type": "function"}}, "tools", None),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools.0.name", None),
        ({"model": "m", "input": "x", "max_output_tokens": "5"}, "max_output_tokens", None),
        ({"model": "m", "input": "x", "instructions": 5}, "instructions", None),
    ],
)
def test_invalid_input_raises_translation_error(
    body: dict[str, Any], param: str, code: str | None
) -> None:
    with pytest.raises(TranslationError) as exc:
        responses_to_chat(body)
    assert exc.value.param == param and exc.value.code == code and exc.value.status == 400
    status, err = translation_error_body(exc.value, "openai")
    assert status == 400
    assert err == {
        "error": {
            "message": exc.value.message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }


def test_previous_response_id_message_says_send_full_history() -> None:
    with pytest.raises(TranslationError, match=r"full conversation.*store: false"):
        responses_to_chat({"model": "m", "input": "x", "previous_response_id": "resp_1"})


def test_openai_error_shape() -> None:
    assert openai_error(404, "model x not found", param="model", code="model_not_found") == (
        404,
        {
            "error": {
                "message": "model x not found",
                "type": "not_found_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
    )
    # one OpenAI table for every endpoint: what the chat endpoint always answered
    assert openai_error(503, "busy")[1]["error"]["type"] == "service_unavailable"
    assert openai_error(502, "bad gateway")[1]["error"]["type"] == "upstream_error"
    assert openai_error(500, "boom")[1]["error"]["type"] == "api_error"


# ---------------------------------------------------------------------------
# chat completion → Response
# ---------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-5-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": {
            "prompt_tokens": 500,
            "completion_tokens": 40,
            "total_tokens": 540,
            "prompt_tokens_details": {"cached_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 16},
        },
    }


def test_chat_to_response_full() -> None:
    request = dict(CODEX, tools=[*CODEX["tools"], {"type": "custom", "name": "apply_patch"}])
    resp = completion(
        {
            "content": "Running.",
            "reasoning_text": "plan",
            "reasoning_opaque": "ENC",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {
                        "name": "multi_agent_v1__spawn_agent",
                        "arguments": '{"task":"t"}',
                    },
                },
                {
                    "id": "call_3",
                    "type": "function",
                    "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'},
                },
            ],
        },
        finish="tool_calls",
    )
    out = chat_to_response(resp, "gpt-5-mini", request)
    parsed = Response.model_validate(out)
    assert parsed.status == "completed" and parsed.output_text == "Running."
    assert (
        out["id"].startswith("resp_")
        and out["object"] == "response"
        and out["created_at"] == 1700000000
    )
    kinds = [o["type"] for o in out["output"]]
    assert kinds == ["reasoning", "message", "function_call", "function_call", "custom_tool_call"]
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "plan"}]
    assert out["output"][0]["encrypted_content"] == "ENC"
    fc = out["output"][2]
    assert fc["id"].startswith("fc_") and fc["call_id"] == "call_1" and fc["name"] == "exec_command"
    assert fc["arguments"] == '{"cmd":"ls"}' and fc["status"] == "completed"
    assert (
        out["output"][3]["name"] == "spawn_agent"
        and out["output"][3]["namespace"] == "multi_agent_v1"
    )
    assert (
        out["output"][4]["input"] == "*** Begin Patch" and out["output"][4]["call_id"] == "call_3"
    )
    assert out["usage"] == {
        "input_tokens": 500,
        "input_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 0},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 16},
        "total_tokens": 540,
    }
    assert out["tools"] == request["tools"] and out["store"] is False


def test_chat_to_response_incomplete_and_refusal() -> None:
    out = chat_to_response(completion({"content": "trunc"}, finish="length"), "m", {"input": "x"})
    assert out["status"] == "incomplete" and out["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    Response.model_validate(out)
    out = chat_to_response(
        completion({"content": None, "refusal": "no"}, finish="content_filter"), "m", {"input": "x"}
    )
    assert out["output"][0]["content"] == [{"type": "refusal", "refusal": "no"}]
    assert out["incomplete_details"] == {"reason": "content_filter"}
    Response.model_validate(out)


def test_chat_to_response_bad_upstream() -> None:
    with pytest.raises(TranslationError) as exc:
        chat_to_response({"error": {"message": "x"}}, "m", {})
    assert exc.value.status == 502


def test_responses_initiator() -> None:
    from tokn_router.wire.translate import responses_initiator

    assert responses_initiator(CODEX) == "user"
    assert (
        responses_initiator(dict(CODEX, input=[*CODEX["input"], FUNCTION_CALL, FUNCTION_OUTPUT]))
        == "agent"
    )
    dev_last = {"type": "message", "role": "developer", "content": "perm update"}
    assert (
        responses_initiator(
            dict(CODEX, input=[*CODEX["input"], FUNCTION_CALL, FUNCTION_OUTPUT, dev_last])
        )
        == "agent"
    )
    assert responses_initiator({"input": "hello"}) == "user"

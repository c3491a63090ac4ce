"""The deterministic "model" behind the chat upstreams (Copilot and Z.ai).

What a fake generation answers, from the request alone (no randomness, no clock):

* text: ``"Echo: " + <last user text>``, or ``"Tool result: " + <content>`` when the last
  turn is a tool result; ``Script.reply`` / ``Script.chunks`` replace it;
* one tool call when the request has ``tools``, the last turn is the user's and
  ``tool_choice != "none"`` (arguments built from the tool's JSON schema);
* stream pieces: one per word, whitespace kept;
* usage numbers: ``prompt = 10 + words in all messages``, ``cached = 2``,
  ``completion = pieces (5 for a tool call) + reasoning``; ``Script.usage`` is deep-merged.

``chat_completion`` renders a plan in the OpenAI Chat Completions shape, whole or as SSE,
in the Copilot flavour (filter results, prelude chunk, separate usage chunk) or the Z.ai
one (usage on the finish chunk, ``reasoning_content``). The Responses and Messages shapes
are Copilot-only and live in ``copilot.py``.
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.fakes.server import SSE_HEADERS, Reply, Script, Stream, deep_merge, json_reply, sse

_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER}]


def message_text(content: Any) -> str:
    """Text of an OpenAI/Anthropic/Responses message content (str or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") == "tool_result":
                    out.append(message_text(part.get("content")))
        return "".join(out)
    return str(content)


def split_words(text: str) -> list[str]:
    """Stream pieces: one per word, trailing whitespace kept (``"".join == text``)."""
    lead = re.match(r"\s*", text)
    pieces = re.findall(r"\S+\s*", text)
    if lead and lead.group(0) and pieces:
        pieces[0] = lead.group(0) + pieces[0]
    return pieces or [text]


def count_words(text: str) -> int:
    return len(text.split())


def _schema_args(schema: dict[str, Any] | None, text: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    keys = schema.get("required") or list(props)
    out: dict[str, Any] = {}
    for key in keys:
        ptype = (props.get(key) or {}).get("type", "string")
        if isinstance(ptype, list):
            ptype = next((t for t in ptype if t != "null"), "string")
        out[key] = {
            "string": text,
            "integer": 1,
            "number": 1,
            "boolean": True,
            "array": [],
            "object": {},
        }.get(ptype)
    return out


def _tool_name(tool: dict[str, Any]) -> str | None:
    fn = tool.get("function")
    if isinstance(fn, dict):
        return fn.get("name")
    return tool.get("name")


def _tool_schema(tool: dict[str, Any]) -> dict[str, Any] | None:
    fn = tool.get("function")
    if isinstance(fn, dict):
        return fn.get("parameters")
    return tool.get("parameters") or tool.get("input_schema")


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass
class Plan:
    """What a generation replies: text deltas or one tool call, and usage."""

    deltas: list[str]
    tool: ToolCall | None
    reasoning: str
    prompt_tokens: int
    usage_override: dict[str, Any] | None

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def usage_numbers(self, reasoning_tokens: int) -> dict[str, int]:
        completion = (len(self.deltas) if self.tool is None else 5) + reasoning_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": 2,
            "completion_tokens": completion,
            "reasoning_tokens": reasoning_tokens,
        }


def plan_reply(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    tool_choice: Any,
    script: Script | None,
    next_id: Callable[[], int],
) -> Plan:
    """Decide the reply to ``messages`` (``next_id`` numbers the tool call id)."""
    # like real models, a trailing system message (aider's reminder, Claude
    # Code's agent list) does not change whose turn it is
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    last = turns[-1] if turns else {}
    user_text = next(
        (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
        "",
    )
    prompt_tokens = 10 + sum(count_words(message_text(m.get("content"))) for m in messages)
    last_role = last.get("role")
    last_is_tool_result = (
        last_role == "tool"
        or (
            isinstance(last.get("content"), list)
            and last["content"]
            and all(
                isinstance(p, dict) and p.get("type") in ("tool_result", "function_call_output")
                for p in last["content"]
            )
        )
        or last.get("type") == "function_call_output"
    )
    tool: ToolCall | None = None
    if tools and last_role == "user" and not last_is_tool_result and tool_choice != "none":
        chosen = tools[0]
        wanted = None
        if isinstance(tool_choice, dict):
            wanted = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        for t in tools:
            if _tool_name(t) == wanted:
                chosen = t
        schema = _tool_schema(chosen)
        tool = ToolCall(
            call_id=f"call_fake_{next_id()}",
            name=_tool_name(chosen) or "tool",
            arguments=jsonlib.dumps(_schema_args(schema, user_text)),
        )
    if script is not None and script.reply is not None:
        text = script.reply
    elif last_is_tool_result:
        if last.get("type") == "function_call_output":
            text = "Tool result: " + str(last.get("output", ""))
        else:
            text = "Tool result: " + message_text(last.get("content"))
    else:
        text = "Echo: " + user_text
    if script is not None and isinstance(script.chunks, list):
        deltas = list(script.chunks)
    elif script is not None and isinstance(script.chunks, int):
        n = script.chunks
        deltas = [f"chunk{i}" + (" " if i < n - 1 else "") for i in range(n)]
    else:
        deltas = split_words(text)
    return Plan(
        deltas=deltas,
        tool=tool,
        reasoning="",
        prompt_tokens=prompt_tokens,
        usage_override=script.usage if script is not None else None,
    )


def chat_usage(plan: Plan, reasoning_tokens: int) -> dict[str, Any]:
    """The Chat Completions ``usage`` object for ``plan`` (override merged in)."""
    n = plan.usage_numbers(reasoning_tokens)
    usage = {
        "completion_tokens": n["completion_tokens"],
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": n["reasoning_tokens"],
            "rejected_prediction_tokens": 0,
        },
        "prompt_tokens": n["prompt_tokens"],
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": n["cached_tokens"]},
        "total_tokens": n["prompt_tokens"] + n["completion_tokens"],
    }
    if plan.usage_override:
        usage = deep_merge(usage, plan.usage_override)
    return usage


def chat_completion(
    cid: str,
    body: dict[str, Any],
    plan: Plan,
    usage: dict[str, Any],
    headers: list[tuple[str, str]],
    *,
    copilot: bool,
) -> Reply | Stream:
    """``plan`` as a Chat Completions answer (SSE when ``body["stream"]``)."""
    model = body["model"]
    created = int(time.time())
    finish = "tool_calls" if plan.tool is not None else "stop"
    extra_choice: dict[str, Any] = {"content_filter_results": CONTENT_FILTER} if copilot else {}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if plan.tool else plan.text}
        if plan.reasoning:
            message["reasoning_content"] = plan.reasoning
        if plan.tool is not None:
            message["tool_calls"] = [
                {
                    "id": plan.tool.call_id,
                    "type": "function",
                    "function": {"name": plan.tool.name, "arguments": plan.tool.arguments},
                }
            ]
        obj: dict[str, Any] = {
            "choices": [
                {
                    **extra_choice,
                    "finish_reason": finish,
                    "index": 0,
                    "logprobs": None,
                    "message": message,
                }
            ],
            "created": created,
            "id": cid,
            "model": model,
            "object": "chat.completion",
            "usage": usage,
        }
        if copilot:
            obj["prompt_filter_results"] = PROMPT_FILTER_RESULTS
            obj["system_fingerprint"] = "fp_fake"
        else:
            obj["request_id"] = cid
        return json_reply(200, obj, headers)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events: list[tuple[bytes, bool]] = []

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None, usage_: Any = None
    ) -> dict[str, Any]:
        c: dict[str, Any] = {
            "choices": [
                {
                    **extra_choice,
                    "delta": delta,
                    "finish_reason": finish_reason,
                    "index": 0,
                    "logprobs": None,
                }
            ],
            "created": created,
            "id": cid,
            "model": model,
            "object": "chat.completion.chunk",
        }
        if copilot:
            c["system_fingerprint"] = "fp_fake"
            c["usage"] = usage_
        elif usage_ is not None:
            c["usage"] = usage_
        return c

    if copilot:
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }
        events.append((sse(first), False))
    role_sent = False
    if plan.reasoning:
        for piece in split_words(plan.reasoning):
            d: dict[str, Any] = {"reasoning_content": piece}
            if not role_sent:
                d = {"role": "assistant", "content": "", **d}
                role_sent = True
            events.append((sse(chunk(d)), True))
    if plan.tool is not None:
        tc0 = {
            "index": 0,
            "id": plan.tool.call_id,
            "type": "function",
            "function": {"name": plan.tool.name, "arguments": ""},
        }
        events.append(
            (sse(chunk({"role": "assistant", "content": None, "tool_calls": [tc0]})), True)
        )
        args = plan.tool.arguments
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            events.append(
                (sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})), True)
            )
    else:
        for piece in plan.deltas:
            d = {"content": piece}
            if not role_sent:
                d = {"role": "assistant", **d}
                role_sent = True
            events.append((sse(chunk(d)), True))
    if copilot:
        events.append((sse(chunk({}, finish)), False))
        if include_usage:
            u = {
                "choices": [],
                "created": created,
                "id": cid,
                "model": model,
                "object": "chat.completion.chunk",
                "system_fingerprint": "fp_fake",
                "usage": usage,
            }
            events.append((sse(u), False))
    else:
        # Z.ai: usage rides on the final chunk
        events.append((sse(chunk({}, finish, usage)), False))
    events.append((b"data: [DONE]\n\n", False))
    return Stream(events, [*SSE_HEADERS, *headers])

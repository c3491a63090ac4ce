"""Anthropic Messages API ↔ chat completions.

``messages_to_chat`` maps a ``POST /v1/messages`` body to a chat-completions
body, ``chat_to_message`` maps a chat completion back to a Message, and
:class:`ChatToMessagesStream` turns upstream chunks into Messages SSE events.

Thinking travels through Copilot's assistant-message fields: ``thinking``
text → ``reasoning_text``, its ``signature`` (or a ``redacted_thinking``
block's ``data``) → ``reasoning_opaque``, and back.

It is one module of over 400 lines because the request and answer mappings of one API
share their field tables and are read side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeGuard

import msgspec

from tokn_router.wire.initiator import classify_messages
from tokn_router.wire.sse import sse_event
from tokn_router.wire.translate._chat import (
    REASONING_OPAQUE_KEYS,
    REASONING_TEXT_KEYS,
    Block,
    ChatStreamTranslator,
    ChatUsage,
    first_str,
    new_id,
    str_or,
    text_of,
)
from tokn_router.wire.translate.errors import TranslationError, anthropic_error

__all__ = [
    "ChatToMessagesStream",
    "anthropic_error",
    "chat_to_message",
    "messages_initiator",
    "messages_to_chat",
]

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# Claude Code's first system block is a billing marker meant for Anthropic's
# own API (which strips it); it is not prompt text for another model.
_BILLING_PREFIX = "x-anthropic-billing-header:"


# ---------------------------------------------------------------------------
# request: Messages → chat
# ---------------------------------------------------------------------------


def messages_to_chat(
    body: Mapping[str, Any],
    *,
    model: str | None = None,
    capabilities: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Translate an Anthropic Messages request body to a chat-completions body.

    ``model`` is the resolved upstream id (default: the body's ``model``).

    ``capabilities`` is the upstream model's ``/models`` ``capabilities`` object
    when known: it decides how a ``thinking`` budget is carried (Copilot's
    ``thinking_budget`` clamped to the model's range, else ``reasoning_effort``
    when the model lists efforts); without it the budget is dropped, since chat
    has no portable equivalent and an unsupported field is an upstream 400.
    """
    if not isinstance(body, Mapping):
        raise TranslationError("request body must be a JSON object")
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise TranslationError("model: field required (a string)", "model")
    model = model or requested
    max_tokens = body.get("max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise TranslationError("max_tokens: field required (a positive integer)", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages: field required (a list)", "messages")

    out: dict[str, Any] = {"model": model}
    chat_messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        chat_messages.append({"role": "system", "content": system})
    drop_foreign_signatures = model.startswith("claude")
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise TranslationError(f"messages.{i}: must be an object", f"messages.{i}")
        role = msg.get("role")
        content = msg.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        elif not isinstance(content, list):
            raise TranslationError(
                f"messages.{i}.content: must be a string or a list of content blocks",
                f"messages.{i}.content",
            )
        if role == "user":
            chat_messages += _user_message(content, i)
        elif role == "assistant":
            chat_messages.append(_assistant_message(content, i, drop_foreign_signatures))
        elif role in ("system", "developer"):
            # Claude Code puts a system message inside `messages` for non-Claude
            # models (its agent list); chat completions takes it where it stands.
            text = _blocks_text(content)
            if text:
                chat_messages.append({"role": "system", "content": text})
        else:
            raise TranslationError(
                f"messages.{i}.role: must be 'user' or 'assistant'", f"messages.{i}.role"
            )
    out["messages"] = chat_messages
    out["max_tokens"] = max_tokens

    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping):
            mapped = _tool_choice(choice)
            if mapped is not None:
                out["tool_choice"] = mapped
            if choice.get("disable_parallel_tool_use") is True:
                out["parallel_tool_calls"] = False

    stop = body.get("stop_sequences")
    if isinstance(stop, list):
        stops = [s for s in stop if isinstance(s, str) and s]
        if stops:
            out["stop"] = stops
    for key in ("temperature", "top_p"):
        v = body.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = v
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _thinking(body, out, capabilities)
    return out


def messages_initiator(body: Mapping[str, Any]) -> Literal["user", "agent"]:
    """X-Initiator for a Messages request (see :func:`classify_messages`)."""
    return classify_messages(body.get("messages"))


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        if system is None:
            return ""
        raise TranslationError("system: must be a string or a list of text blocks", "system")
    texts: list[str] = []
    for block in system:
        if isinstance(block, Mapping) and block.get("type", "text") == "text":
            text = block.get("text")
            if isinstance(text, str) and text and not text.startswith(_BILLING_PREFIX):
                texts.append(text)
    return "\n\n".join(texts)


def _image_part(block: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    src = block.get("source")
    if not isinstance(src, Mapping):
        raise TranslationError(f"{where}.source: field required", f"{where}.source")
    kind = src.get("type")
    if kind == "base64":
        data, media = src.get("data"), src.get("media_type")
        if not isinstance(data, str) or not isinstance(media, str):
            raise TranslationError(
                f"{where}.source: base64 images need media_type and data", f"{where}.source"
            )
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        url = src.get("url")
        if not isinstance(url, str) or not url:
            raise TranslationError(f"{where}.source.url: field required", f"{where}.source.url")
        return {"type": "image_url", "image_url": {"url": url}}
    raise TranslationError(
        f"{where}.source.type: {kind!r} is not supported (use base64 or url)",
        f"{where}.source.type",
    )


def document_text(block: Mapping[str, Any]) -> str:
    """Plain-text documents become text; others a placeholder (chat has no PDFs)."""
    src = block.get("source")
    title = block.get("title")
    head = f"[document: {title}]\n" if isinstance(title, str) and title else ""
    if isinstance(src, Mapping):
        if src.get("type") == "text" and isinstance(src.get("data"), str):
            return head + str(src["data"])
        if src.get("type") == "content" and isinstance(src.get("content"), list | str):
            return head + _blocks_text(src["content"])
        media = src.get("media_type") or src.get("type")
        return f"{head}[document of type {media} omitted: not supported by this model endpoint]"
    return head


def _blocks_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"]
            for b in content
            if isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _user_message(content: list[Any], i: int) -> list[dict[str, Any]]:
    """One Anthropic user turn → tool messages first, then the user's own content.

    Chat requires the tool messages right after the assistant's tool calls;
    images inside tool results cannot ride in a tool message, so they move to
    the user message that follows.
    """
    tool_msgs: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        if not isinstance(block, Mapping):
            raise TranslationError(f"{where}: must be an object", where)
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise TranslationError(f"{where}.text: must be a string", f"{where}.text")
            if text:
                parts.append({"type": "text", "text": text})
        elif kind == "image":
            img = _image_part(block, where)
            if img:
                parts.append(img)
        elif kind == "document":
            parts.append({"type": "text", "text": document_text(block)})
        elif kind == "tool_result":
            tool_msgs.append(_tool_result(block, where, parts))
        elif kind == "search_result":
            text = _blocks_text(block.get("content"))
            if text:
                parts.append({"type": "text", "text": text})
        # thinking, redacted_thinking, server-tool results, unknown types: nothing to carry
    out = tool_msgs
    if parts:
        if all(p["type"] == "text" for p in parts):
            out.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result(
    block: Mapping[str, Any], where: str, user_parts: list[dict[str, Any]]
) -> dict[str, Any]:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise TranslationError(f"{where}.tool_use_id: field required", f"{where}.tool_use_id")
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, b in enumerate(content):
            if not isinstance(b, Mapping):
                continue
            t = b.get("type")
            if t == "text" and isinstance(b.get("text"), str):
                texts.append(b["text"])
            elif t == "image":
                img = _image_part(b, f"{where}.content.{k}")
                if img:
                    images.append(img)
            elif t == "document":
                texts.append(document_text(b))
            elif t == "search_result":
                texts.append(_blocks_text(b.get("content")))
    text = "\n".join(texts)
    if images:
        text += ("\n" if text else "") + f"[{len(images)} image(s) attached in the next message]"
        user_parts.append(
            {"type": "text", "text": f"Image(s) returned by tool call {tool_use_id}:"}
        )
        user_parts += images
    if block.get("is_error") is True:
        # chat has no error flag on tool messages: say it in the content
        text = "Error: " + text if text else "Error"
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _assistant_message(content: list[Any], i: int, drop_foreign_signatures: bool) -> dict[str, Any]:
    texts: list[str] = []
    thinking: list[str] = []
    opaque = ""
    tool_calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        if not isinstance(block, Mapping):
            raise TranslationError(f"{where}: must be an object", where)
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                texts.append(text)
        elif kind == "tool_use":
            tid, name = block.get("id"), block.get("name")
            if not isinstance(tid, str) or not tid or not isinstance(name, str) or not name:
                raise TranslationError(f"{where}: tool_use needs id and name", where)
            args = block.get("input", {})
            tool_calls.append(
                {
                    "id": tid,
                    "type": "function",
                    "function": {"name": name, "arguments": _encode(args).decode()},
                }
            )
        elif kind == "thinking":
            t = block.get("thinking")
            if isinstance(t, str) and t:
                thinking.append(t)
            sig = block.get("signature")
            if isinstance(sig, str) and sig:
                opaque = sig
        elif kind == "redacted_thinking":
            data = block.get("data")
            if isinstance(data, str) and data:
                opaque = data
    # "" (not null) when there is no text: the shape Copilot is known to accept
    msg: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts)}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    if thinking:
        msg["reasoning_text"] = "\n\n".join(thinking)
    # Copilot rejects a Claude request carrying an OpenAI-model reasoning blob
    # (those contain "@"), which happens after a mid-session model switch.
    if opaque and not (drop_foreign_signatures and "@" in opaque):
        msg["reasoning_opaque"] = opaque
    return msg


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise TranslationError("tools: must be a list", "tools")
    out: list[dict[str, Any]] = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise TranslationError(f"tools.{k}: must be an object", f"tools.{k}")
        schema = tool.get("input_schema")
        if tool.get("type") not in (None, "custom") or not isinstance(schema, Mapping):
            # Anthropic-defined tools (bash_2025…, text_editor_…, web_search_…)
            # have no schema we could hand to another model: dropped.
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(f"tools.{k}.name: field required", f"tools.{k}.name")
        params = {k2: v for k2, v in schema.items() if k2 != "$schema"}
        fn: dict[str, Any] = {"name": name, "parameters": params}
        desc = tool.get("description")
        if isinstance(desc, str) and desc:
            fn["description"] = desc
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Mapping[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    return None


_EFFORT_ORDER = ("minimal", "low", "medium", "high", "xhigh")


def _thinking(
    body: Mapping[str, Any], out: dict[str, Any], capabilities: Mapping[str, Any] | None
) -> None:
    thinking = body.get("thinking")
    if not isinstance(thinking, Mapping) or thinking.get("type") not in ("enabled", "adaptive"):
        return
    if not isinstance(capabilities, Mapping):
        return
    supports = capabilities.get("supports")
    supports = supports if isinstance(supports, Mapping) else {}
    limits = capabilities.get("limits")
    limits = limits if isinstance(limits, Mapping) else {}
    budget = thinking.get("budget_tokens")
    max_budget = supports.get("max_thinking_budget")
    if _is_int(budget) and _is_int(max_budget) and max_budget > 0:
        # Copilot's chat endpoint takes a budget for models that declare one.
        cap = max_budget
        max_out = limits.get("max_output_tokens")
        if _is_int(max_out) and max_out > 1:
            cap = min(cap, max_out - 1)
        floor = supports.get("min_thinking_budget")
        floor = floor if _is_int(floor) and floor > 0 else 1024
        out["thinking_budget"] = max(min(budget, cap), min(floor, cap))
        return
    efforts = supports.get("reasoning_effort")
    if isinstance(efforts, list) and efforts:
        want = "medium"
        if _is_int(budget):
            want = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
        effort = _nearest_effort(want, [e for e in efforts if isinstance(e, str)])
        if effort:
            out["reasoning_effort"] = effort


def _nearest_effort(want: str, available: Sequence[str]) -> str | None:
    if want in available:
        return want
    ranked = [e for e in _EFFORT_ORDER if e in available]
    if not ranked:
        return None
    target = _EFFORT_ORDER.index(want)
    return min(ranked, key=lambda e: abs(_EFFORT_ORDER.index(e) - target))


# ---------------------------------------------------------------------------
# response: chat completion → Message
# ---------------------------------------------------------------------------


def _stop_reason(finish: str | None, has_tools: bool) -> str:
    if finish == "length":
        return "max_tokens"
    if finish == "content_filter":
        return "refusal"
    if has_tools or finish in ("tool_calls", "function_call"):
        return "tool_use"
    return "end_turn"


def _usage(u: ChatUsage | None) -> dict[str, int]:
    if u is None:
        u = ChatUsage()
    return {
        "input_tokens": u.prompt - u.cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached,
        "output_tokens": u.completion,
    }


def _message_id(upstream_id: Any) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return "msg_" + upstream_id.removeprefix("chatcmpl-")
    return new_id("msg_")


def chat_to_message(resp: Mapping[str, Any], requested_model: str) -> dict[str, Any]:
    """Translate a (non-streamed) chat completion into an Anthropic Message.

    Raises :class:`TranslationError` with status 502 when the upstream answer
    has no choice or a tool call whose arguments are not a JSON object.
    """
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise TranslationError("upstream answer has no choices", status=502)
    choice = choices[0]
    msg = choice.get("message")
    msg = msg if isinstance(msg, Mapping) else {}
    content: list[dict[str, Any]] = []
    reasoning = first_str(msg, REASONING_TEXT_KEYS)
    opaque = first_str(msg, REASONING_OPAQUE_KEYS)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": opaque})
    elif opaque:
        content.append({"type": "redacted_thinking", "data": opaque})
    text = text_of(msg.get("content")) or text_of(msg.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    tool_calls = msg.get("tool_calls")
    if isinstance(tool_calls, list):
        for tc in tool_calls:
            if not isinstance(tc, Mapping):
                continue
            fn = tc.get("function")
            fn = fn if isinstance(fn, Mapping) else {}
            name = str_or(fn.get("name"))
            content.append(
                {
                    "type": "tool_use",
                    "id": str_or(tc.get("id")) or new_id("toolu_"),
                    "name": name,
                    "input": _parse_args(fn.get("arguments"), name),
                }
            )
    finish = choice.get("finish_reason")
    has_tools = any(b["type"] == "tool_use" for b in content)
    return {
        "id": _message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": requested_model,
        "content": content,
        "stop_reason": _stop_reason(finish if isinstance(finish, str) else None, has_tools),
        "stop_sequence": None,
        "usage": _usage(ChatUsage.parse(resp.get("usage"))),
    }


def _parse_args(args: Any, name: str) -> dict[str, Any]:
    if args is None or args == "":
        return {}
    if isinstance(args, dict):
        return args
    if isinstance(args, str):
        try:
            value = _decode(args)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict):
            return value
    raise TranslationError(
        f"upstream model returned invalid JSON arguments for tool {name!r}", status=502
    )


# ---------------------------------------------------------------------------
# stream: chat chunks → Messages SSE events
# ---------------------------------------------------------------------------


class ChatToMessagesStream(ChatStreamTranslator):
    """Incremental chat-completions chunks → Anthropic Messages SSE events.

    ``input_tokens`` is an estimate for ``message_start`` (e.g. from
    ``count_tokens``): the upstream reports usage only at the end, where the
    exact numbers go into ``message_delta``.
    """

    def __init__(
        self,
        requested_model: str,
        *,
        message_id: str | None = None,
        input_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.model = requested_model
        self.message_id = message_id or new_id("msg_")
        self._input_estimate = input_tokens

    def ping(self) -> list[bytes]:
        """A keep-alive event (the real API sends these during long pauses)."""
        if self._ended or not self._started:
            return []
        return [sse_event("ping", {"type": "ping"})]

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        self._out.append(sse_event(event, data))

    def _on_start(self) -> None:
        self._emit(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": self._input_estimate,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": 0,
                    },
                },
            },
        )

    def _on_open(self, block: Block) -> None:
        cb: dict[str, Any]
        if block.kind == "text":
            cb = {"type": "text", "text": ""}
        elif block.kind == "tool":
            cb = {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": {}}
        elif block.redacted:
            cb = {"type": "redacted_thinking", "data": block.signature}
        else:
            cb = {"type": "thinking", "thinking": "", "signature": ""}
        self._emit(
            "content_block_start",
            {"type": "content_block_start", "index": block.ordinal, "content_block": cb},
        )

    def _on_delta(self, block: Block, piece: str) -> None:
        if block.kind == "text":
            delta = {"type": "text_delta", "text": piece}
        elif block.kind == "tool":
            delta = {"type": "input_json_delta", "partial_json": piece}
        else:
            delta = {"type": "thinking_delta", "thinking": piece}
        self._emit(
            "content_block_delta",
            {"type": "content_block_delta", "index": block.ordinal, "delta": delta},
        )

    def _on_close(self, block: Block) -> None:
        if block.kind == "tool" and not block.parts:
            # a call without arguments: clients parse the accumulated JSON at stop
            self._on_delta(block, "{}")
        elif block.kind == "thinking" and block.signature and not block.redacted:
            self._emit(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": block.ordinal,
                    "delta": {"type": "signature_delta", "signature": block.signature},
                },
            )
        self._emit("content_block_stop", {"type": "content_block_stop", "index": block.ordinal})

    def _on_end(self) -> None:
        has_tools = any(b.kind == "tool" for b in self.blocks)
        self._emit(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _stop_reason(self.finish_reason, has_tools),
                    "stop_sequence": None,
                },
                # without upstream usage keep message_start's estimate: only
                # output_tokens is required here
                "usage": _usage(self.usage) if self.usage else {"output_tokens": 0},
            },
        )
        self._emit("message_stop", {"type": "message_stop"})

    def _on_error(self, message: str, status: int, code: str | None) -> None:
        _, body = anthropic_error(status, message)
        self._emit("error", body)

"""OpenAI Responses API ↔ chat completions.

``responses_to_chat`` maps a ``POST /v1/responses`` body to a chat-completions
body, ``chat_to_response`` maps a chat completion back to a Response object,
and :class:`ChatToResponsesStream` turns upstream chunks into Responses SSE
events (Codex reads items only from ``response.output_item.done`` and needs
``response.completed``).

Tool names (see :class:`ToolMap`):

* ``custom`` (freeform) tools become a chat function with one required string
  parameter named ``input``; the call comes back as a ``custom_tool_call``
  whose ``input`` is that string.
* ``namespace`` tools are flattened: each nested tool becomes a chat function
  named ``<namespace>__<name>`` (no extra ``__`` when the namespace already
  ends with ``_``, as Codex's ``mcp__server__`` namespaces do; sanitised and
  shortened with a hash when over chat's 64 characters). Calls come back with
  the bare ``name`` plus ``namespace``, as the real API returns them, and an
  echoed call with a ``namespace`` maps to the same flat name.
* hosted tools (``web_search``, ``file_search``, ``code_interpreter``, …) have
  no chat equivalent and are dropped.

Reasoning: a ``reasoning`` input item's text (``content`` reasoning_text, else
its summaries) and ``encrypted_content`` become ``reasoning_text`` /
``reasoning_opaque`` on the next assistant message; upstream reasoning comes
back as a ``reasoning`` item with ``summary_text`` and ``encrypted_content``.

It is one module of over 400 lines because the request and answer mappings of one API
share their field tables and are read side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from tokn_router.wire.initiator import classify_responses
from tokn_router.wire.translate._responses_out import (
    ChatToResponsesStream,
    chat_to_response,
    message_item,
    reasoning_item,
    response_object,
    tool_item,
)
from tokn_router.wire.translate._responses_tools import (
    CUSTOM_TOOL_PARAM,
    ToolMap,
    ToolRef,
    flat_tool_name,
    tool_choice,
)
from tokn_router.wire.translate.errors import TranslationError, openai_error

__all__ = [
    "CUSTOM_TOOL_PARAM",
    "ChatToResponsesStream",
    "ToolMap",
    "ToolRef",
    "chat_to_response",
    "flat_tool_name",
    "message_item",
    "openai_error",
    "reasoning_item",
    "response_object",
    "responses_initiator",
    "responses_to_chat",
    "tool_item",
]

_encode = msgspec.json.encode


class _History:
    """Builds chat messages from Responses input items, keeping chat's ordering rules."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._deferred_images: list[dict[str, Any]] = []
        self._reasoning_text: list[str] = []
        self._reasoning_opaque = ""

    def _flush_images(self) -> None:
        if self._deferred_images:
            self.messages.append({"role": "user", "content": self._deferred_images})
            self._deferred_images = []

    def _flush_reasoning(self) -> None:
        """Reasoning with no assistant message after it: give it to the last one."""
        if not self._reasoning_text and not self._reasoning_opaque:
            return
        for msg in reversed(self.messages):
            if msg["role"] == "assistant":
                if "reasoning_text" not in msg and "reasoning_opaque" not in msg:
                    self._attach(msg)
                break
        self._reasoning_text, self._reasoning_opaque = [], ""

    def _attach(self, msg: dict[str, Any]) -> None:
        if self._reasoning_text:
            msg["reasoning_text"] = "\n\n".join(self._reasoning_text)
        if self._reasoning_opaque:
            msg["reasoning_opaque"] = self._reasoning_opaque
        self._reasoning_text, self._reasoning_opaque = [], ""

    def _assistant(self) -> dict[str, Any]:
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant" and not self._deferred_images:
            if self._reasoning_text or self._reasoning_opaque:
                if "reasoning_text" in last or "reasoning_opaque" in last:
                    self._reasoning_text, self._reasoning_opaque = [], ""
                else:
                    self._attach(last)
            return last
        self._flush_images()
        msg: dict[str, Any] = {"role": "assistant", "content": None}
        self._attach(msg)
        self.messages.append(msg)
        return msg

    def system(self, text: str) -> None:
        self._flush_reasoning()
        self._flush_images()
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "system":
            # several system/developer items in a row: one system message
            last["content"] += "\n\n" + text
        else:
            self.messages.append({"role": "system", "content": text})

    def user(self, parts: list[dict[str, Any]]) -> None:
        self._flush_reasoning()
        self._flush_images()
        if all(p["type"] == "text" for p in parts):
            self.messages.append({"role": "user", "content": "\n\n".join(p["text"] for p in parts)})
        else:
            self.messages.append({"role": "user", "content": parts})

    def assistant_text(self, text: str) -> None:
        msg = self._assistant()
        msg["content"] = text if not msg["content"] else msg["content"] + "\n\n" + text

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        msg = self._assistant()
        msg.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )

    def tool_output(self, call_id: str, text: str, images: list[dict[str, Any]]) -> None:
        self._flush_reasoning()
        if images:
            text += (
                "\n" if text else ""
            ) + f"[{len(images)} image(s) attached in the next message]"
            self._deferred_images.append(
                {"type": "text", "text": f"Image(s) returned by tool call {call_id}:"}
            )
            self._deferred_images += images
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})

    def reasoning(self, text: str, opaque: str) -> None:
        if text:
            self._reasoning_text.append(text)
        if opaque:
            self._reasoning_opaque = opaque

    def done(self) -> list[dict[str, Any]]:
        self._flush_reasoning()
        self._flush_images()
        for msg in self.messages:
            if msg["role"] == "assistant" and msg["content"] is None:
                # "" (not null) with tool calls: the shape Copilot is known to accept
                msg["content"] = ""
        return self.messages


def _content_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """Message content (string or parts) → chat content parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}: must be a string or a list of content parts", where)
    parts: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise TranslationError(f"{where}.{k}: must be an object", f"{where}.{k}")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text"):
            text = part.get("text")
            if isinstance(text, str) and text:
                parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            text = part.get("refusal")
            if isinstance(text, str) and text:
                parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url:
                img: dict[str, Any] = {"url": url}
                if part.get("detail") in ("low", "high", "auto"):
                    img["detail"] = part["detail"]
                parts.append({"type": "image_url", "image_url": img})
            else:
                parts.append(
                    {"type": "text", "text": "[image omitted: file ids are not supported]"}
                )
        elif kind == "input_file":
            data = part.get("file_data")
            if isinstance(data, str) and data:
                f: dict[str, Any] = {"file_data": data}
                if isinstance(part.get("filename"), str):
                    f["filename"] = part["filename"]
                parts.append({"type": "file", "file": f})
            else:
                name = part.get("filename") or part.get("file_url") or part.get("file_id") or "file"
                parts.append(
                    {
                        "type": "text",
                        "text": f"[file {name} omitted: only inline file_data is supported]",
                    }
                )
        # input_audio and unknown part types: nothing chat can carry
    return parts


def _output_parts(output: Any) -> tuple[str, list[dict[str, Any]]]:
    """A tool output (string or parts) → (text for the tool message, images)."""
    if isinstance(output, str):
        return output, []
    if isinstance(output, list):
        parts = _content_parts(output, "output")
        text = "\n".join(p["text"] for p in parts if p["type"] == "text")
        return text, [p for p in parts if p["type"] != "text"]
    if output is None:
        return "", []
    if isinstance(output, Mapping) and isinstance(output.get("content"), str):
        # older Codex builds sent {"content": ..., "success": bool}
        return output["content"], []
    return _encode(output).decode(), []


def _text_only(parts: list[dict[str, Any]]) -> str:
    return "\n\n".join(p["text"] for p in parts if p["type"] == "text")


def _req_str(item: Mapping[str, Any], key: str, where: str) -> str:
    v = item.get(key)
    if not isinstance(v, str) or not v:
        raise TranslationError(f"{where}.{key}: field required (a string)", f"{where}.{key}")
    return v


def _input_items(items: list[Any], tools: ToolMap, history: _History) -> None:
    for i, item in enumerate(items):
        where = f"input.{i}"
        if not isinstance(item, Mapping):
            raise TranslationError(f"{where}: must be an object", where)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            role = item.get("role")
            parts = _content_parts(item.get("content"), f"{where}.content")
            if role == "user":
                if parts:
                    history.user(parts)
            elif role == "assistant":
                text = _text_only(parts)
                if text:
                    history.assistant_text(text)
            elif role in ("system", "developer"):
                # chat's "developer" role is OpenAI-only; "system" works for every upstream model
                text = _text_only(parts)
                if text:
                    history.system(text)
            else:
                raise TranslationError(
                    f"{where}.role: must be user, assistant, system or developer", f"{where}.role"
                )
        elif kind == "function_call":
            call_id = _req_str(item, "call_id", where)
            name = _req_str(item, "name", where)
            args = item.get("arguments")
            history.tool_call(
                call_id,
                tools.wire(name, item.get("namespace")),
                args if isinstance(args, str) and args else "{}",
            )
        elif kind == "custom_tool_call":
            call_id = _req_str(item, "call_id", where)
            name = _req_str(item, "name", where)
            raw = item.get("input")
            args = _encode({CUSTOM_TOOL_PARAM: raw if isinstance(raw, str) else ""}).decode()
            history.tool_call(call_id, tools.wire(name, item.get("namespace")), args)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = _req_str(item, "call_id", where)
            text, images = _output_parts(item.get("output"))
            history.tool_output(call_id, text, images)
        elif kind == "reasoning":
            history.reasoning(*_reasoning_fields(item))
        elif kind == "item_reference":
            raise TranslationError(
                f"{where}: item_reference needs stored responses, which this server does not keep; "
                "send the full items instead (store: false)",
                where,
            )
        # web_search_call, local_shell_call, compaction, mcp_* …: nothing chat can carry


def _reasoning_fields(item: Mapping[str, Any]) -> tuple[str, str]:
    texts: list[str] = []
    content = item.get("content")
    if isinstance(content, list):
        texts = [
            p["text"]
            for p in content
            if isinstance(p, Mapping)
            and p.get("type") == "reasoning_text"
            and isinstance(p.get("text"), str)
        ]
    if not texts:
        summary = item.get("summary")
        if isinstance(summary, list):
            texts = [
                p["text"]
                for p in summary
                if isinstance(p, Mapping) and isinstance(p.get("text"), str) and p["text"]
            ]
    opaque = item.get("encrypted_content")
    return "\n\n".join(texts), opaque if isinstance(opaque, str) else ""


def responses_initiator(body: Mapping[str, Any]) -> Literal["user", "agent"]:
    """X-Initiator for a Responses request (see :func:`classify_responses`)."""
    return classify_responses(body.get("input"))


def responses_to_chat(body: Mapping[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """Translate a Responses API request body to a chat-completions body.

    ``model`` is the resolved upstream id (default: the body's ``model``).
    """
    if not isinstance(body, Mapping):
        raise TranslationError("request body must be a JSON object")
    requested = body.get("model")
    if not isinstance(requested, str) or not requested:
        raise TranslationError("model: field required (a string)", "model")
    model = model or requested
    if body.get("previous_response_id") not in (None, ""):
        raise TranslationError(
            "previous_response_id is not supported: this server does not store responses. "
            "Send the full conversation in `input` on every request (store: false).",
            "previous_response_id",
            code="previous_response_not_found",
        )
    if body.get("conversation") not in (None, ""):
        raise TranslationError(
            "conversation is not supported: this server does not store conversations. "
            "Send the full conversation in `input` on every request (store: false).",
            "conversation",
        )
    inp = body.get("input")
    tools = ToolMap(body.get("tools"), strict=True)
    history = _History()
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            history.system(instructions)
    elif isinstance(instructions, list):
        _input_items(instructions, tools, history)
    elif instructions is not None:
        raise TranslationError("instructions: must be a string", "instructions")
    if isinstance(inp, str):
        history.user([{"type": "text", "text": inp}])
    elif isinstance(inp, list):
        _input_items(inp, tools, history)
    else:
        raise TranslationError("input: field required (a string or a list of items)", "input")

    out: dict[str, Any] = {"model": model, "messages": history.done()}
    if tools.chat_tools:
        out["tools"] = tools.chat_tools
        choice = tool_choice(body.get("tool_choice"), tools)
        if choice is not None:
            out["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    max_out = body.get("max_output_tokens")
    if isinstance(max_out, int) and not isinstance(max_out, bool):
        if max_out < 1:
            raise TranslationError(
                "max_output_tokens: must be a positive integer", "max_output_tokens"
            )
        out["max_tokens"] = max_out
    elif max_out is not None:
        raise TranslationError("max_output_tokens: must be an integer", "max_output_tokens")
    for key in ("temperature", "top_p"):
        v = body.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[key] = v
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _response_format(text: Any) -> dict[str, Any] | None:
    """Structured output: Responses ``text.format`` → chat ``response_format``."""
    if not isinstance(text, Mapping):
        return None
    fmt = text.get("format")
    if not isinstance(fmt, Mapping):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), Mapping):
        schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt["schema"]}
        if isinstance(fmt.get("strict"), bool):
            schema["strict"] = fmt["strict"]
        if isinstance(fmt.get("description"), str):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    return None

"""Chat completions → Responses API: the Response object and the event stream.

Public names are re-exported by :mod:`tokn_router.wire.translate.responses`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

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
from tokn_router.wire.translate._responses_tools import ToolMap, custom_input
from tokn_router.wire.translate.errors import TranslationError

_encode = msgspec.json.encode


def _usage(u: ChatUsage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "input_tokens": u.prompt,
        "input_tokens_details": {"cached_tokens": u.cached, "cache_write_tokens": 0},
        "output_tokens": u.completion,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.total,
    }


def _status(finish: str | None) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    response_id: str,
    model: str,
    request: Mapping[str, Any],
    created_at: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Response object; request settings are echoed as the real API does."""
    reasoning = request.get("reasoning")
    text = request.get("text")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.get("instructions")
        if isinstance(request.get("instructions"), str)
        else None,
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, Mapping) else None,
            "summary": reasoning.get("summary") if isinstance(reasoning, Mapping) else None,
        },
        "store": False,  # nothing is stored here, whatever was asked
        "temperature": request.get("temperature", 1.0),
        "text": text if isinstance(text, Mapping) else {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") if isinstance(request.get("tools"), list) else [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": request.get("metadata") if isinstance(request.get("metadata"), Mapping) else {},
    }


def reasoning_item(item_id: str, text: str, opaque: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if opaque:
        item["encrypted_content"] = opaque
    return item


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_output_text(text)] if status == "completed" else [],
    }


def tool_item(
    item_id: str,
    call_id: str,
    wire_name: str,
    arguments: str,
    tools: ToolMap,
    status: str = "completed",
) -> dict[str, Any]:
    """A function_call (or custom_tool_call) item for one chat tool call."""
    ref = tools.ref(wire_name)
    item: dict[str, Any]
    if ref.custom:
        item = {
            "id": "ctc_" + item_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": call_id,
            "name": ref.name,
            "input": custom_input(arguments) if status == "completed" else "",
        }
    else:
        item = {
            "id": "fc_" + item_id,
            "type": "function_call",
            "status": status,
            "call_id": call_id,
            "name": ref.name,
            "arguments": (arguments or "{}") if status == "completed" else "",
        }
    if ref.namespace:
        item["namespace"] = ref.namespace
    return item


def chat_to_response(
    resp: Mapping[str, Any], requested_model: str, request_body: Mapping[str, Any]
) -> dict[str, Any]:
    """Translate a (non-streamed) chat completion into a Response object."""
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise TranslationError("upstream answer has no choices", status=502)
    choice = choices[0]
    msg = choice.get("message")
    msg = msg if isinstance(msg, Mapping) else {}
    tools = ToolMap(request_body.get("tools"))
    base = new_id("")
    output: list[dict[str, Any]] = []
    reasoning = first_str(msg, REASONING_TEXT_KEYS)
    opaque = first_str(msg, REASONING_OPAQUE_KEYS)
    if reasoning or opaque:
        output.append(reasoning_item(f"rs_{base}_0", reasoning, opaque))
    text = text_of(msg.get("content"))
    refusal = text_of(msg.get("refusal"))
    if text or refusal:
        item = message_item(f"msg_{base}_{len(output)}", text)
        if refusal and not text:
            item["content"] = [{"type": "refusal", "refusal": refusal}]
        output.append(item)
    tool_calls = msg.get("tool_calls")
    if isinstance(tool_calls, list):
        for tc in tool_calls:
            if not isinstance(tc, Mapping):
                continue
            fn = tc.get("function")
            fn = fn if isinstance(fn, Mapping) else {}
            call_id = str_or(tc.get("id")) or new_id("call_")
            name = str_or(fn.get("name"))
            args = fn.get("arguments")
            if isinstance(args, dict):
                args = _encode(args).decode()
            output.append(
                tool_item(
                    f"{base}_{len(output)}",
                    call_id,
                    name,
                    args if isinstance(args, str) else "",
                    tools,
                )
            )
    finish = choice.get("finish_reason")
    status, incomplete = _status(finish if isinstance(finish, str) else None)
    created = resp.get("created")
    return response_object(
        "resp_" + base,
        requested_model,
        request_body,
        created if isinstance(created, int) and created > 0 else int(time.time()),
        status=status,
        output=output,
        usage=_usage(ChatUsage.parse(resp.get("usage"))),
        incomplete=incomplete,
    )


# ---------------------------------------------------------------------------
# stream: chat chunks → Responses SSE events
# ---------------------------------------------------------------------------


class ChatToResponsesStream(ChatStreamTranslator):
    """Incremental chat-completions chunks → Responses API SSE events.

    Every event carries ``type`` and a strictly increasing ``sequence_number``;
    each output item is announced (``output_item.added``), streamed and closed
    with ``output_item.done`` carrying the full item. Custom-tool input is
    JSON inside the chat arguments, so it is decoded and sent whole when the
    call closes.
    """

    def __init__(
        self,
        requested_model: str,
        request_body: Mapping[str, Any],
        *,
        response_id: str | None = None,
        created_at: int | None = None,
    ) -> None:
        super().__init__()
        self.model = requested_model
        self.request = request_body
        self.tools = ToolMap(request_body.get("tools"))
        self.response_id = response_id or new_id("resp_")
        self._base = self.response_id.removeprefix("resp_")
        self.created_at = created_at if created_at is not None else int(time.time())
        self._seq = 0
        self.output: list[dict[str, Any]] = []  # finished items, in order
        self._items: dict[int, dict[str, Any]] = {}  # ordinal → item being streamed

    def _emit(self, type_: str, data: dict[str, Any]) -> None:
        data = {"type": type_, "sequence_number": self._seq, **data}
        self._seq += 1
        self._out.append(sse_event(type_, data))

    def _response(self, status: str, **kw: Any) -> dict[str, Any]:
        return response_object(
            self.response_id, self.model, self.request, self.created_at, status=status, **kw
        )

    def _on_start(self) -> None:
        self._emit("response.created", {"response": self._response("in_progress", output=[])})
        self._emit("response.in_progress", {"response": self._response("in_progress", output=[])})

    def _item_id(self, prefix: str, block: Block) -> str:
        return f"{prefix}{self._base}_{block.ordinal}"

    def _on_open(self, block: Block) -> None:
        idx = block.ordinal
        if block.kind == "thinking":
            item = reasoning_item(self._item_id("rs_", block), "", "")
        elif block.kind == "text":
            item = message_item(self._item_id("msg_", block), "", status="in_progress")
        else:
            item = tool_item(
                f"{self._base}_{idx}",
                block.tool_id,
                block.name,
                "",
                self.tools,
                status="in_progress",
            )
        self._items[idx] = item
        self._emit("response.output_item.added", {"output_index": idx, "item": item})
        if block.kind == "thinking" and not block.redacted:
            self._emit(
                "response.reasoning_summary_part.added",
                {
                    "item_id": item["id"],
                    "output_index": idx,
                    "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""},
                },
            )
        elif block.kind == "text":
            self._emit(
                "response.content_part.added",
                {
                    "item_id": item["id"],
                    "output_index": idx,
                    "content_index": 0,
                    "part": _output_text(""),
                },
            )

    def _on_delta(self, block: Block, piece: str) -> None:
        item = self._items[block.ordinal]
        common = {"item_id": item["id"], "output_index": block.ordinal}
        if block.kind == "text":
            self._emit(
                "response.output_text.delta",
                {**common, "content_index": 0, "delta": piece, "logprobs": []},
            )
        elif block.kind == "thinking":
            self._emit(
                "response.reasoning_summary_text.delta",
                {**common, "summary_index": 0, "delta": piece},
            )
        elif item["type"] == "function_call":
            self._emit("response.function_call_arguments.delta", {**common, "delta": piece})
        # custom tools: the input is sent decoded, whole, at close

    def _on_close(self, block: Block) -> None:
        idx = block.ordinal
        item = self._items.pop(idx)
        common = {"item_id": item["id"], "output_index": idx}
        if block.kind == "text":
            text = block.text
            self._emit(
                "response.output_text.done",
                {**common, "content_index": 0, "text": text, "logprobs": []},
            )
            self._emit(
                "response.content_part.done",
                {**common, "content_index": 0, "part": _output_text(text)},
            )
            done = message_item(item["id"], text)
        elif block.kind == "thinking":
            text = "" if block.redacted else block.text
            if not block.redacted:
                self._emit(
                    "response.reasoning_summary_text.done",
                    {**common, "summary_index": 0, "text": text},
                )
                self._emit(
                    "response.reasoning_summary_part.done",
                    {**common, "summary_index": 0, "part": {"type": "summary_text", "text": text}},
                )
            done = reasoning_item(item["id"], text, block.signature)
        else:
            done = tool_item(
                f"{self._base}_{idx}", block.tool_id, block.name, block.text, self.tools
            )
            if done["type"] == "function_call":
                self._emit(
                    "response.function_call_arguments.done",
                    {**common, "name": done["name"], "arguments": done["arguments"]},
                )
            else:
                self._emit(
                    "response.custom_tool_call_input.delta", {**common, "delta": done["input"]}
                )
                self._emit(
                    "response.custom_tool_call_input.done", {**common, "input": done["input"]}
                )
        self.output.append(done)
        self._emit("response.output_item.done", {"output_index": idx, "item": done})

    def _on_end(self) -> None:
        status, incomplete = _status(self.finish_reason)
        response = self._response(
            status, output=self.output, usage=_usage(self.usage), incomplete=incomplete
        )
        self._emit(
            "response.completed" if status == "completed" else "response.incomplete",
            {"response": response},
        )

    def _on_error(self, message: str, status: int, code: str | None) -> None:
        if code is None:
            code = "rate_limit_exceeded" if status == 429 else "server_error"
        response = self._response(
            "failed",
            output=self.output,
            error={"code": code, "message": message},
            usage=_usage(self.usage),
        )
        self._emit("response.failed", {"response": response})

"""Request checks done before anything goes upstream (a bad request costs no call).

The translators check the fields they carry (and raise
:class:`~tokn_router.errors.TranslationError`); these checks cover what the
native pass-through would otherwise forward blindly, and the required fields
of the chat and embeddings endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokn_router.errors import RequestError, TranslationError


def require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(
            400, "missing required field 'model'", code="missing_field", param="model"
        )
    return model


def require_messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            400,
            "missing required field 'messages' (a non-empty list)",
            code="missing_field",
            param="messages",
        )
    return messages


def require_embedding_input(body: Mapping[str, Any]) -> None:
    inp = body.get("input")
    if not (isinstance(inp, str) and inp) and not (isinstance(inp, list) and inp):
        raise RequestError(
            400,
            "missing required field 'input' (a string or a non-empty list)",
            code="missing_field",
            param="input",
        )


# Anthropic content block types; the server-tool families (web_search_tool_result,
# mcp_tool_use, …) grow often, so any *_tool_use / *_tool_result passes.
_MESSAGE_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "container_upload",
        "compaction",
    }
)
_BLOCK_SUFFIXES = ("_tool_use", "_tool_result")

_RESPONSES_PARTS = frozenset(
    {
        "input_text",
        "input_image",
        "input_file",
        "input_audio",
        "output_text",
        "refusal",
        "text",
        "summary_text",
        "reasoning_text",
    }
)


def check_message_blocks(body: Mapping[str, Any]) -> None:
    """400 on an empty ``messages`` list or a content block of unknown type."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return  # the translator reports it
    if not messages:
        raise TranslationError("messages: at least one message is required", "messages")
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, Mapping) else None
            if not isinstance(kind, str) or not (
                kind in _MESSAGE_BLOCKS or kind.endswith(_BLOCK_SUFFIXES)
            ):
                where = f"messages.{i}.content.{j}.type"
                raise TranslationError(f"{where}: unknown content block type {kind!r}", where)


def check_input_items(body: Mapping[str, Any]) -> None:
    """400 on an input item without type or role, or a message part of unknown type.

    Unknown *item* types pass (Codex sends compaction and hosted-tool items the
    translator skips); message content parts are a closed set.
    """
    items = body.get("input")
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue  # the translator reports it
        kind = item.get("type")
        if not isinstance(kind, str) and "role" not in item:
            raise TranslationError(f"input.{i}: an item needs a type (or a role)", f"input.{i}")
        if kind not in (None, "message") or not isinstance(item.get("content"), list):
            continue
        for k, part in enumerate(item["content"]):
            ptype = part.get("type") if isinstance(part, Mapping) else None
            if ptype not in _RESPONSES_PARTS:
                where = f"input.{i}.content.{k}.type"
                raise TranslationError(f"{where}: unknown content part type {ptype!r}", where)


__all__ = [
    "check_input_items",
    "check_message_blocks",
    "require_embedding_input",
    "require_messages",
    "require_model",
]

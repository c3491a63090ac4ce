"""X-Initiator classification and image detection: pure functions over request bodies.

Copilot bills a premium request only when the user (not an agent loop) starts a
turn, so every upstream request says who initiated it: ``user`` or ``agent``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

Initiator = Literal["user", "agent"]


def normalize_initiator_mode(mode: str) -> str:
    return {"always_user": "user", "always_agent": "agent"}.get(mode, mode)


def classify_chat(messages: Any) -> Initiator:
    """Chat Completions: the last non-system message decides.

    ``tool`` or ``assistant`` → agent (a tool loop continuing), ``user`` →
    user; anything unknown → user.
    """
    if not isinstance(messages, list):
        return "user"
    for msg in reversed(messages):
        role = msg.get("role") if isinstance(msg, Mapping) else None
        if role in ("system", "developer"):
            continue
        if role in ("tool", "assistant"):
            return "agent"
        return "user"
    return "user"


_AGENT_ITEMS = frozenset(
    {
        "function_call",
        "function_call_output",
        "custom_tool_call",
        "custom_tool_call_output",
        "reasoning",
    }
)


def classify_responses(items: Any) -> Initiator:
    """Responses API: walk ``input`` from the end, skipping system/developer messages.

    A tool call, tool output, reasoning or assistant item → agent; a user
    message → user.
    """
    if not isinstance(items, list):
        return "user"
    for item in reversed(items):
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind in _AGENT_ITEMS:
            return "agent"
        if kind in (None, "message"):
            role = item.get("role")
            if role == "assistant":
                return "agent"
            if role == "user":
                return "user"
    return "user"


def classify_messages(messages: Any) -> Initiator:
    """Anthropic Messages: the last non-system message decides.

    ``assistant``, or a user message made only of ``tool_result`` blocks (a
    tool-loop follow-up) → agent; else user.
    """
    if not isinstance(messages, list):
        return "user"
    for last in reversed(messages):
        if not isinstance(last, Mapping):
            return "user"
        role = last.get("role")
        if role in ("system", "developer"):
            continue
        if role == "assistant":
            return "agent"
        content = last.get("content")
        if (
            isinstance(content, list)
            and content
            and all(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content)
        ):
            return "agent"
        return "user"
    return "user"


def resolve_initiator(header: str | None, account_mode: str, classified: Initiator) -> Initiator:
    """Client header wins, then the account's mode unless ``auto``, then the classifier."""
    if header:
        h = header.strip().lower()
        if h in ("user", "agent"):
            return h  # type: ignore[return-value]
    mode = normalize_initiator_mode(account_mode)
    if mode in ("user", "agent"):
        return mode  # type: ignore[return-value]
    return classified


def _parts(content: Any) -> Iterable[Any]:
    return content if isinstance(content, list) else ()


def has_image(messages: Any) -> bool:
    """Whether any chat message carries an image part (→ Copilot-Vision-Request)."""
    if not isinstance(messages, list):
        return False
    for msg in messages:
        if not isinstance(msg, Mapping):
            continue
        for part in _parts(msg.get("content")):
            if isinstance(part, Mapping) and part.get("type") in (
                "image_url",
                "input_image",
                "image",
            ):
                return True
    return False

"""Sans-I/O translation between the agent APIs and chat completions.

* :mod:`.anthropic` — Anthropic Messages (Claude Code) ↔ chat completions
* :mod:`.responses` — OpenAI Responses (Codex CLI) ↔ chat completions
* :mod:`.models` — model-id aliases and Anthropic-style id normalisation
* :mod:`.tokens` — offline ``count_tokens``
* :mod:`.errors` — :class:`TranslationError` and each API's error body

Bodies are translated by pure functions over decoded JSON; streams by
incremental objects fed upstream chunks (or bytes) that return SSE bytes.
Nothing here does I/O.
"""

from __future__ import annotations

from tokn_router.wire.translate.anthropic import (
    ChatToMessagesStream,
    chat_to_message,
    messages_initiator,
    messages_to_chat,
)
from tokn_router.wire.translate.errors import (
    TranslationError,
    anthropic_error,
    openai_error,
    translation_error_body,
)
from tokn_router.wire.translate.models import closest_ids, normalise_model_id, resolve_model
from tokn_router.wire.translate.responses import (
    ChatToResponsesStream,
    chat_to_response,
    responses_initiator,
    responses_to_chat,
)

__all__ = [
    "ChatToMessagesStream",
    "ChatToResponsesStream",
    "TranslationError",
    "anthropic_error",
    "chat_to_message",
    "chat_to_response",
    "closest_ids",
    "messages_initiator",
    "messages_to_chat",
    "normalise_model_id",
    "openai_error",
    "resolve_model",
    "responses_initiator",
    "responses_to_chat",
    "translation_error_body",
]

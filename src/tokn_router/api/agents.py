"""Agent APIs (SPEC 7a): Responses, Messages, count_tokens, embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokn_router.api.app import Services


def register(app: Any, svc: Services) -> None:
    """Add the agent API routes to the app."""

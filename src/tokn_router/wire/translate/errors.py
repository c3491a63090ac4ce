"""Errors raised by the translators, and each client API's error body.

A translator raises :class:`TranslationError` for input it cannot carry (a
missing required field, a wrong type, a feature that needs server-side state).
It is a :class:`tokn_router.errors.RequestError`, so the request path answers it
like any other request error, in the client API's own shape; it must never
become a 500. The bodies and their status → type tables live in
:mod:`tokn_router.wire.errors` (one table per API).
"""

from __future__ import annotations

from typing import Any

from tokn_router.errors import TranslationError
from tokn_router.wire.errors import Shape, anthropic_error, openai_error


def translation_error_body(exc: TranslationError, api: Shape) -> tuple[int, dict[str, Any]]:
    """Convenience: the error body for ``exc`` in ``api`` ("anthropic" or "openai")."""
    if api == "anthropic":
        return anthropic_error(exc.status, exc.message)
    return openai_error(exc.status, exc.message, param=exc.param, code=exc.code)


__all__ = ["TranslationError", "anthropic_error", "openai_error", "translation_error_body"]

"""Errors raised by the translators and the error bodies of each client API.

A translator raises :class:`TranslationError` for input it cannot carry (a
missing required field, a wrong type, a feature that needs server-side state).
The HTTP layer turns it into the client API's own error shape with
:func:`anthropic_error` or :func:`openai_error`; it must never become a 500.
"""

from __future__ import annotations

from typing import Any


class TranslationError(ValueError):
    """A request (or an upstream answer) that cannot be translated.

    ``status`` is the HTTP status to answer with: 400 for bad client input,
    502 when the upstream answer itself is unusable.
    """

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        status: int = 400,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


# Anthropic's documented error types by status; anything else falls back to
# invalid_request_error (4xx) or api_error (5xx).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",  # no usable account: Anthropic's "try again later"
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    t = _ANTHROPIC_TYPES.get(status)
    if t is not None:
        return t
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` in the Messages API error shape."""
    return status, {
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": message},
    }


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    type_: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` in the OpenAI shape (used by the Responses endpoint)."""
    t = (
        type_
        or _OPENAI_TYPES.get(status)
        or ("api_error" if status >= 500 else "invalid_request_error")
    )
    return status, {"error": {"message": message, "type": t, "param": param, "code": code}}


def translation_error_body(exc: TranslationError, api: str) -> tuple[int, dict[str, Any]]:
    """Convenience: the error body for ``exc`` in ``api`` ("anthropic" or "openai")."""
    if api == "anthropic":
        return anthropic_error(exc.status, exc.message)
    return openai_error(exc.status, exc.message, param=exc.param, code=exc.code)

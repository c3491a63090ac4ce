"""Error bodies of the two client API shapes, and upstream errors as one line.

One status → ``type`` table per API:

- OpenAI shape ``{"error": {"message", "type", "param", "code"}}`` (chat
  completions, Responses, embeddings, models);
- Anthropic shape ``{"type": "error", "error": {"type", "message"}}`` (Messages).

A 502 is ``upstream_error`` in the OpenAI shape: it is what the chat endpoint has
always answered, it names who failed, and OpenAI clients branch on the status,
not on the type. The Anthropic shape only has its documented types, so a 502
there is ``api_error`` (the SDKs map unknown types to a generic error).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

Shape = Literal["openai", "anthropic"]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}

# Anthropic's documented error types by status.
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

_encode = msgspec.json.encode


def _fallback(status: int) -> str:
    return "api_error" if status >= 500 else "invalid_request_error"


def openai_error_type(status: int) -> str:
    return _OPENAI_TYPES.get(status) or _fallback(status)


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status) or _fallback(status)


def openai_error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    type_: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` in the OpenAI shape."""
    t = type_ or openai_error_type(status)
    return status, {"error": {"message": message, "type": t, "param": param, "code": code}}


def anthropic_error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` in the Messages API error shape."""
    return status, {
        "type": "error",
        "error": {"type": anthropic_error_type(status), "message": message},
    }


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str | None = None,
) -> bytes:
    """An encoded OpenAI-shape error body."""
    return _encode(openai_error(status, message, param=param, code=code, type_=type_)[1])


def shaped_error_body(
    shape: Shape, status: int, message: str, *, code: str | None = None, param: str | None = None
) -> bytes:
    """An encoded error body in ``shape`` (the Anthropic shape has no code or param)."""
    if shape == "anthropic":
        return _encode(anthropic_error(status, message)[1])
    return error_body(status, message, code=code, param=param)


def is_anthropic_error(data: bytes) -> bool:
    """Whether ``data`` already is a Messages API error body."""
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    return (
        isinstance(obj, dict) and obj.get("type") == "error" and isinstance(obj.get("error"), dict)
    )


# Copilot's answer to an API version (X-GitHub-Api-Version) it no longer supports
API_VERSION_GONE = 466

_BUMP = (
    "set a current VS Code Copilot Chat release in the config, no upgrade needed: "
    "`tokn-router config set {key} YYYY-MM-DD`, and likewise "
    "identity.editor_version (vscode/X.Y.Z), identity.editor_plugin_version "
    "(copilot-chat/X.Y.Z) and identity.user_agent (GitHubCopilotChat/X.Y.Z); a running "
    "daemon picks it up. Per-account [accounts.settings] values win over [identity]: "
    "unset stale ones. `tokn-router headers` shows what is sent and where it comes from"
)


def identity_hint(
    status: int,
    body: bytes,
    content_type: str,
    *,
    version_key: str = "identity.github_api_version",
) -> str | None:
    """What to bump when an upstream error says the editor identity is out of date.

    A 466 (API version no longer supported), or a 401/403 answered with an
    HTML page (what Copilot's front door shows clients it does not recognise).
    ``version_key`` is the config key of the version that request sent (the
    token exchange has its own, ``identity.token_api_version``).
    """
    bump = _BUMP.format(key=version_key)
    if status == API_VERSION_GONE:
        return "Copilot no longer supports the X-GitHub-Api-Version sent; " + bump
    if status in (401, 403) and ("html" in content_type or body.lstrip()[:1] == b"<"):
        return (
            "upstream answered with an HTML page: the editor identity headers may be stale; " + bump
        )
    return None


def hint_for(status: int, body: bytes, content_type: str) -> str | None:
    """A hint for an upstream error (identity problems, or a 401/403 without a page)."""
    hint = identity_hint(status, body, content_type)
    if hint is None and status in (401, 403):
        return "the upstream token may have expired or been revoked"
    return hint


def wrap_upstream_error(status: int, body: bytes, content_type: str) -> bytes:
    """Relay an upstream error: JSON error bodies unchanged, others wrapped with a hint.

    A 466 is always wrapped: no client knows that status, so the hint must reach it.
    """
    if status == API_VERSION_GONE:
        message = upstream_message(status, body, content_type)
        return error_body(status, f"upstream error {status}: {message}", code="upstream_error")
    if "json" in content_type:
        try:
            msgspec.json.decode(body)
            return body
        except msgspec.DecodeError:
            pass
    text = body.decode("utf-8", "replace").strip()
    if "html" in content_type or text.startswith("<"):
        text = _strip_html(text)
    text = " ".join(text.split())[:500] or f"HTTP {status}"
    hint = hint_for(status, body, content_type)
    message = f"upstream error {status}: {text}" + (f" (hint: {hint})" if hint else "")
    return error_body(status, message, code="upstream_error", type_=_OPENAI_TYPES.get(status))


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")


def _strip_html(text: str) -> str:
    title = _TITLE.search(text)
    stripped = _TAG.sub(" ", text)
    if title:
        return title.group(1).strip() + " - " + " ".join(stripped.split())[:200]
    return stripped


def upstream_error_text(status: int, body: bytes, content_type: str) -> str:
    """One line describing an upstream error, for logs, ledger and 503 messages."""
    if "json" in content_type or body.lstrip()[:1] in (b"{", b"["):
        try:
            data = msgspec.json.decode(body)
            if isinstance(data, dict):
                err = data.get("error", data)
                msg: Any = None
                if isinstance(err, dict):
                    msg = err.get("message") or err.get("code")
                elif isinstance(err, str):
                    msg = err
                if not msg and "message" in data:
                    msg = data["message"]
                if msg:
                    hint = identity_hint(status, body, content_type)
                    return f"{status}: {msg}" + (f" (hint: {hint})" if hint else "")
        except msgspec.DecodeError:
            pass
    text = body.decode("utf-8", "replace")
    if "html" in content_type or text.lstrip().startswith("<"):
        text = _strip_html(text)
    text = " ".join(text.split())[:300]
    hint = hint_for(status, body, content_type)
    return f"{status}: {text}" + (f" (hint: {hint})" if hint else "")


def upstream_message(status: int, body: bytes, content_type: str) -> str:
    """The upstream error's message without the status prefix (hints kept)."""
    return upstream_error_text(status, body, content_type).removeprefix(f"{status}: ")


__all__ = [
    "API_VERSION_GONE",
    "Shape",
    "anthropic_error",
    "anthropic_error_type",
    "error_body",
    "hint_for",
    "identity_hint",
    "is_anthropic_error",
    "openai_error",
    "openai_error_type",
    "shaped_error_body",
    "upstream_error_text",
    "upstream_message",
    "wrap_upstream_error",
]

"""OpenAI-shaped error bodies: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import msgspec

_TYPES = {
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

_encode = msgspec.json.encode


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type_: str | None = None,
) -> bytes:
    return _encode(
        {
            "error": {
                "message": message,
                "type": type_
                or _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error"),
                "param": param,
                "code": code,
            }
        }
    )


def hint_for(status: int, body: bytes, content_type: str) -> str | None:
    """A hint for upstream errors whose body is not JSON."""
    if status in (401, 403):
        if "html" in content_type or body.lstrip()[:1] == b"<":
            return (
                "upstream answered with an HTML page: the editor identity headers may be stale; "
                "bump [accounts.settings] editor_version / editor_plugin_version / user_agent to "
                "a current VS Code Copilot Chat release and restart"
            )
        return "the upstream token may have expired or been revoked"
    return None


def wrap_upstream_error(status: int, body: bytes, content_type: str) -> bytes:
    """Relay an upstream error: JSON error bodies unchanged, others wrapped with a hint."""
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
    return error_body(status, message, code="upstream_error", type_=_TYPES.get(status))


def _strip_html(text: str) -> str:
    import re

    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.I | re.S)
    stripped = re.sub(r"<[^>]+>", " ", text)
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
                if isinstance(err, dict):
                    msg = err.get("message") or err.get("code")
                    if msg:
                        return f"{status}: {msg}"
                elif isinstance(err, str):
                    return f"{status}: {err}"
                if "message" in data:
                    return f"{status}: {data['message']}"
        except msgspec.DecodeError:
            pass
    text = body.decode("utf-8", "replace")
    if "html" in content_type or text.lstrip().startswith("<"):
        text = _strip_html(text)
    text = " ".join(text.split())[:300]
    hint = hint_for(status, body, content_type)
    return f"{status}: {text}" + (f" (hint: {hint})" if hint else "")

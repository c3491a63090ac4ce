"""Secret redaction for everything the CLI and the daemon print or log.

A redacted secret keeps a short prefix so a user can still tell tokens apart
(``gho_ab…(redacted)``); URLs keep everything but the password
(``http://user:***@proxy:8080``); free text is scrubbed of anything that looks
like a GitHub, Copilot or API token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MARK = "…(redacted)"

# Known token prefixes: the prefix itself is not secret, so keep it plus a little.
_PREFIXES = ("github_pat_", "gho_", "ghu_", "ghp_", "ghs_", "ghr_", "tid=", "sk-")
_KEEP = 2  # characters kept after a known prefix
_KEEP_PLAIN = 4  # characters kept of a secret without a known prefix
_MIN_LEN = 8  # shorter secrets are hidden entirely

# Things that look like credentials in free text (error bodies, exception messages).
_TOKEN_RE = re.compile(
    r"(?P<tok>(?:github_pat_|gh[opusr]_)[A-Za-z0-9_]{6,}"  # GitHub tokens
    r"|tid=[^\s\"',]{6,}"  # Copilot API tokens (tid=…;exp=…:mac)
    r"|sk-[A-Za-z0-9._-]{8,})"  # API keys in the OpenAI style
)
# "Bearer <x>" / "token <x>" where <x> is long and has a digit (so prose is left alone).
_BEARER_RE = re.compile(r"(?i)\b(bearer|token)\s+(?P<tok>(?=[^\s]*\d)[A-Za-z0-9._~+/=;:-]{12,})")
_URL_PW_RE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@"
)

# Config keys whose values are secrets.
SECRET_KEYS = frozenset({"refresh_token", "access_token", "api_key", "token", "oauth_token"})


def secret(value: str | None) -> str:
    """Redact one secret, keeping a short, harmless prefix."""
    if not value:
        return "(none)"
    for prefix in _PREFIXES:
        if value.startswith(prefix) and len(value) >= len(prefix) + _MIN_LEN:
            return value[: len(prefix) + _KEEP] + MARK
    if len(value) < _MIN_LEN * 2:
        return "(redacted)"
    return value[:_KEEP_PLAIN] + MARK


def url(value: str) -> str:
    """A URL with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return _URL_PW_RE.sub(r"\g<scheme>\g<user>:***@", value)
    if parts.password is None:
        return value
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def text(value: str, secrets: Iterable[str | None] = ()) -> str:
    """Scrub known secrets and anything token-shaped from free text."""
    for s in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        value = value.replace(s, secret(s))
    value = _URL_PW_RE.sub(r"\g<scheme>\g<user>:***@", value)
    value = _TOKEN_RE.sub(lambda m: secret(m.group("tok")), value)

    def _bearer(m: re.Match[str]) -> str:
        tok = m.group("tok")
        if tok.endswith(MARK) or MARK in tok:
            return m.group(0)
        return f"{m.group(1)} {secret(tok)}"

    return _BEARER_RE.sub(_bearer, value)


def header_value(name: str, value: str) -> str:
    """Redact the credential part of an auth header value."""
    if name.lower() in ("authorization", "proxy-authorization", "x-api-key", "api-key"):
        scheme, sep, cred = value.partition(" ")
        if sep and scheme.lower() in ("bearer", "token", "basic"):
            return f"{scheme} {secret(cred)}"
        return secret(value)
    return value


def headers(hdrs: Mapping[str, str]) -> dict[str, str]:
    return {k: header_value(k, v) for k, v in hdrs.items()}


def data(obj: Any, *, keys: frozenset[str] = SECRET_KEYS) -> Any:
    """Deep-copy builtins data (dicts/lists) with secret values redacted.

    Values under a secret key are redacted with :func:`secret`; a ``url``
    key loses its password; every other string is left alone.
    """
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k in keys and isinstance(v, str):
                out[k] = secret(v)
            elif isinstance(v, str) and (k == "url" or k.endswith("_url")):
                out[k] = url(v)
            else:
                out[k] = data(v, keys=keys)
        return out
    if isinstance(obj, list):
        return [data(v, keys=keys) for v in obj]
    return obj

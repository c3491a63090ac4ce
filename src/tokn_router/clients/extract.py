"""Where a client key travels in a request: pure header parsing, no I/O.

On the API listener a key comes as ``Authorization: Bearer`` (OpenAI clients,
Claude Code's ``ANTHROPIC_AUTH_TOKEN``) or ``x-api-key`` (Anthropic clients). On
the MITM proxy it comes as ``Proxy-Authorization``: ``Bearer KEY``, or ``Basic``,
which is how a client sends the userinfo of a proxy URL such as
``HTTPS_PROXY=http://route:tkr_…@server:4142``. There the user name stays the
route-mode selector (see :func:`tokn_router.wire.http1.proxy_username`) and the
password is the key. The proxy never looks at ``Authorization``: on an
intercepted request it holds the client's credential for the real upstream.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

KEY_PREFIX = "tkr_"
_MAX_LEN = 512  # longer values are not keys; never hash unbounded input

Source = Literal["authorization", "x-api-key", "proxy-authorization", "proxy-userinfo"]
Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Presented:
    """A credential a client sent, and where it was found."""

    key: str
    source: Source

    def __repr__(self) -> str:  # a repr in a log or traceback must not carry the key
        return f"Presented(key={self.key[:8]!r}…, source={self.source!r})"

    @property
    def looks_like_key(self) -> bool:
        """Whether it has the shape of one of our keys (rather than, say, ``sk-dummy``)."""
        return self.key.startswith(KEY_PREFIX)


def _first(headers: Headers, name: str) -> str | None:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in items:
        if k.lower() == name:
            return v
    return None


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    if not value or len(value) > _MAX_LEN or not value.isascii() or not value.isprintable():
        return None
    if any(c.isspace() for c in value):
        return None
    return value


def _bearer(value: str | None) -> str | None:
    scheme, _, cred = (value or "").strip().partition(" ")
    return _clean(cred) if scheme.lower() == "bearer" else None


def _basic_password(value: str | None) -> str | None:
    """The key in ``Basic base64(user:key)``; a bare ``tkr_…`` user name also counts.

    ``http://tkr_…@server:4142`` (no password) is an easy mistake to make; a user
    name with our key prefix cannot be a route mode, so it is taken as the key.
    """
    scheme, _, token = (value or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if sep and password:
        return _clean(password)
    if user.startswith(KEY_PREFIX):
        return _clean(user)
    return None


def _pick(candidates: list[Presented]) -> Presented | None:
    """The first candidate with our key's shape, else the first one at all.

    A client may send a placeholder in one header and the key in the other
    (``Authorization: Bearer dummy`` next to ``x-api-key: tkr_…``).
    """
    return next((c for c in candidates if c.looks_like_key), candidates[0] if candidates else None)


def api_key(headers: Headers) -> Presented | None:
    """The key on the API listener: ``Authorization: Bearer``, then ``x-api-key``."""
    candidates: list[Presented] = []
    if (bearer := _bearer(_first(headers, "authorization"))) is not None:
        candidates.append(Presented(bearer, "authorization"))
    if (xkey := _clean(_first(headers, "x-api-key"))) is not None:
        candidates.append(Presented(xkey, "x-api-key"))
    return _pick(candidates)


def proxy_key(headers: Headers) -> Presented | None:
    """The key on the MITM proxy: ``Proxy-Authorization: Bearer`` or ``Basic`` (userinfo)."""
    value = _first(headers, "proxy-authorization")
    if (bearer := _bearer(value)) is not None:
        return Presented(bearer, "proxy-authorization")
    if (password := _basic_password(value)) is not None:
        return Presented(password, "proxy-userinfo")
    return None

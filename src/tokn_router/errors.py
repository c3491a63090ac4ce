"""The exception hierarchy of tokn-router.

Every error a user can see derives from :class:`ToknError`; its ``str()`` is one
readable line. The CLI exits with ``exit_code`` (2 = usage/config error, 1 =
runtime failure); the request path answers a :class:`RequestError` with its
``status`` in the client API's own error shape (never a 500 for a client's
mistake)::

    ToknError
    ├── ConfigError          the config file is unreadable or invalid
    ├── UsageError           the command line asks for the impossible
    ├── AccountError         unknown/duplicate account, unusable credential
    ├── UpstreamError        GitHub / Copilot / Z.ai failed or refused
    │   └── AuthError        ... a credential was refused
    └── RequestError         a request ends with an error answer (status, code,
        │                    param, headers), raised anywhere on the request path
        └── TranslationError ... a body a translator cannot carry (400 for the
                             client's input, 502 for an unusable upstream answer)
"""

from __future__ import annotations


class ToknError(Exception):
    """Base class: a failure that is reported to the user as one line."""

    exit_code = 1


class ConfigError(ToknError):
    """The config file is unreadable, malformed or fails validation."""

    exit_code = 2


class UsageError(ToknError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 2


class AccountError(ToknError):
    """An account id is unknown, duplicated, or its credential is unusable."""

    exit_code = 1


class UpstreamError(ToknError):
    """An upstream (GitHub, Copilot, Z.ai) answered with an error or was unreachable."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class AuthError(UpstreamError):
    """A credential was refused upstream (revoked, expired, no Copilot access)."""


class RequestError(ToknError):
    """A request that ends with an error answer instead of an upstream one.

    The front end renders it in the client API's shape (OpenAI or Anthropic);
    ``headers`` go out with it (``Retry-After`` on a 503).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


class TranslationError(RequestError):
    """A request (or an upstream answer) that a translator cannot carry.

    Raised by the sans-I/O translators with the offending field as ``param``;
    ``status`` is 400 for bad client input, 502 when the upstream answer itself
    is unusable.
    """

    def __init__(
        self,
        message: str,
        param: str | None = None,
        *,
        status: int = 400,
        code: str | None = None,
    ) -> None:
        super().__init__(status, message, code=code, param=param)


__all__ = [
    "AccountError",
    "AuthError",
    "ConfigError",
    "RequestError",
    "ToknError",
    "TranslationError",
    "UpstreamError",
    "UsageError",
]

"""The exception hierarchy of tokn-router.

Every error a user can see derives from :class:`ToknError`; its ``str()`` is one
readable line, and ``exit_code`` is what the CLI exits with (2 = usage/config
error, 1 = runtime failure).
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

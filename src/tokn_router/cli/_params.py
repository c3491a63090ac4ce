"""Shared parameter types: every flag is checked before a command runs.

An out-of-range value is a one-line usage error (exit 2), the way ``config set``
rejects a bad value for the file, never a traceback from deep inside.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from cyclopts import Parameter

from tokn_router.errors import UsageError


def _port(type_: Any, value: Any) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise ValueError("Expected a port number from 0 to 65535 (0 picks a free one).")


def _host(type_: Any, value: Any) -> None:
    if value is None:
        return
    host = value.strip()
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError("Expected a host name or an IP address.")


def _account_id(type_: Any, value: Any) -> None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9._@-]+", value):
        raise ValueError("An account id has letters, digits and . _ @ - only.")


def _env_var(type_: Any, value: Any) -> None:
    if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError("Expected an environment variable name (letters, digits, _).")


def check_base_url(value: str | None) -> None:
    """A usable http(s) URL, else :class:`UsageError` naming ``--base-url``."""
    if value is None:
        return
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"invalid --base-url {value!r}: expected an http:// or https:// URL "
            "(e.g. https://open.bigmodel.cn/api/paas/v4)"
        )


def _base_url(type_: Any, value: Any) -> None:
    try:
        check_base_url(value)
    except UsageError:
        raise ValueError("Expected an http:// or https:// URL.") from None


Flag = Annotated[bool, Parameter(negative=())]
Port = Annotated[int | None, Parameter(validator=_port, metavar="PORT")]
Host = Annotated[str | None, Parameter(validator=_host, metavar="HOST")]
AccountId = Annotated[str | None, Parameter(name="--id", validator=_account_id, metavar="ID")]
BaseUrl = Annotated[str | None, Parameter(validator=_base_url, metavar="URL")]
EnvVar = Annotated[str | None, Parameter(validator=_env_var, metavar="NAME")]
Json = Annotated[bool, Parameter(name="--json", negative=())]
Yes = Annotated[bool, Parameter(name=["--yes", "-y"], negative=())]

"""Network helpers for CLI commands (the HTTP client itself is :func:`upstream.client_for`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx2 as httpx

from tokn_router import redact
from tokn_router.errors import UpstreamError


@contextlib.contextmanager
def network_errors(what: str) -> Iterator[None]:
    """Turn transport failures (refused, DNS, TLS, proxy, timeout) into one line."""
    try:
        yield
    except httpx.HTTPError as e:
        detail = str(e) or type(e).__name__
        raise UpstreamError(redact.text(f"cannot reach {what}: {detail}")) from None

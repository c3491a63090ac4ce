"""What the request path reports for each request: :class:`RequestRecord`.

A record is built once per request (API listener or MITM proxy) when it ends,
and handed to :meth:`tokn_router.usage.Ledger.submit`. Construction is a plain
msgspec Struct init — no JSON, no I/O — because it runs on the request path;
turning it into a row (:func:`to_row`) happens later in the writer's thread.

``usage_json`` holds the token counts of the v0.2.0 schema (``input``,
``output``, ``cache_read``, ``reasoning``, and ``cache_write`` when known) plus
the request's cost in Copilot AI credits (see :mod:`tokn_router.usage.credits`),
as one of:

- ``"nano_aiu": N, "credits": N / 1e9``: measured, upstream said what it billed;
- ``"credits_est": X``: no measurement, estimated from the packaged list prices
  (Copilot rows with token counts and a priced model only);
- neither: not known.

New keys in a JSON column need no schema change; readers ignore what they do
not know.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tokn_router._version import __version__
from tokn_router.usage import credits

Source = Literal["api", "proxy"]


class Attempt(msgspec.Struct, kw_only=True):
    """One account tried while serving a request (failover is visible in the ledger)."""

    account_id: str
    status: int = 0  # the upstream's HTTP status; 0 if none (connect error, timeout)
    error: str | None = None


class RequestRecord(msgspec.Struct, kw_only=True):
    """One request served, as it will be stored in the ``requests`` table.

    Token counts are the upstream's own usage (for streams, from the usage
    chunk); None means the upstream did not report it. ``input_tokens`` counts
    every prompt token the model processed, cached ones included: ``cached_tokens``
    (read from the prompt cache) and ``cache_write_tokens`` (written to it) are parts
    of it, whatever the API (see :mod:`tokn_router.wire.usage`).
    """

    ts: int  # unix seconds when the request started (the original tool's column)
    started_at_ms: int  # unix milliseconds, the precise start
    request_id: str  # unique per request (the UNIQUE index rejects a reuse)
    endpoint: str  # the client's endpoint, e.g. "/v1/chat/completions"
    model: str  # the model the client asked for
    account_id: str | None = None  # the account that answered; None if none did
    provider_id: str | None = None
    upstream_model: str | None = None  # the id sent upstream (aliases, prefixes resolved)
    initiator: str | None = None  # "user" | "agent" (X-Initiator)
    stream: bool = False
    route_mode: str = "route"
    source: Source = "api"
    key: str | None = None  # the client key's name (params_json "key"); None = anonymous
    status: int = 0  # HTTP status sent to the client; 0 if none was sent
    error: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    nano_aiu: int | None = None  # the cost upstream reported (copilot_usage.total_nano_aiu)
    latency_ms: float | None = None  # start to the last byte sent
    ttft_ms: float | None = None  # start to the first byte sent
    attempts: list[Attempt] = []  # every account tried, in order (msgspec copies the default)
    session_id: str | None = None
    project_id: str | None = None
    extra: dict[str, Any] | None = None  # more context, merged into ctx_json


# Column order of the INSERT; matches to_row().
COLUMNS = (
    "ts",
    "session_id",
    "request_id",
    "project_id",
    "ver",
    "request_error",
    "endpoint",
    "account_id",
    "provider_id",
    "model",
    "params_json",
    "usage_json",
    "ctx_json",
    "status",
)

INSERT_SQL = (
    f"INSERT OR IGNORE INTO requests ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

Row = tuple[
    int,
    str | None,
    str,
    str | None,
    str,
    str | None,
    str,
    str | None,
    str | None,
    str,
    str,
    str,
    str,
    int,
]

_encode = msgspec.json.Encoder().encode


def _json(value: Any) -> str:
    # Stored as TEXT: a BLOB would not be accepted by json_extract() in every SQLite.
    return _encode(value).decode()


def to_row(r: RequestRecord, ver: str = __version__) -> Row:
    """The ``requests`` row of a record (JSON shapes as documented in v0.2.0.sql)."""
    params: dict[str, Any] = {
        "initiator": r.initiator,
        "stream": r.stream,
        "route_mode": r.route_mode,
        "source": r.source,
    }
    if r.key is not None:
        params["key"] = r.key  # only when known: anonymous rows keep their shape
    usage: dict[str, int | float | None] = {
        "input": r.input_tokens,
        "output": r.output_tokens,
        "cache_read": r.cached_tokens,
        "reasoning": r.reasoning_tokens,
    }
    if r.cache_write_tokens is not None:
        # only when known: the JSON column takes the new key without a schema
        # change, and rows of APIs without a prompt-cache write keep their shape
        usage["cache_write"] = r.cache_write_tokens
    if r.nano_aiu is not None:
        usage["nano_aiu"] = r.nano_aiu
        usage["credits"] = credits.measured(r.nano_aiu)
    else:
        est = credits.estimate(
            r.provider_id,
            r.upstream_model or r.model,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cache_read=r.cached_tokens,
            cache_write=r.cache_write_tokens,
        )
        if est is not None:
            usage["credits_est"] = est
    ctx: dict[str, Any] = dict(r.extra) if r.extra else {}
    ctx.update(
        started_at_ms=r.started_at_ms,
        latency_ms=r.latency_ms,
        ttft_ms=r.ttft_ms,
        upstream_model=r.upstream_model,
        attempts=r.attempts,
    )
    return (
        r.ts,
        r.session_id,
        r.request_id,
        r.project_id,
        ver,
        r.error,
        r.endpoint,
        r.account_id,
        r.provider_id,
        r.model,
        _json(params),
        _json(usage),
        _json(ctx),
        r.status,
    )


__all__ = ["COLUMNS", "INSERT_SQL", "Attempt", "RequestRecord", "Source", "to_row"]

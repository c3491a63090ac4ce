"""The ledger row of a request in progress, and the one place that closes it.

The request path fills a :class:`RequestLog` as the request goes (route,
attempts, status, usage) and ends it with :func:`finish_row`, which stamps the
latency, turns it into a :class:`~tokn_router.usage.record.RequestRecord` and
reports it, at most once per request, however the request ended.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokn_router.usage.record import Attempt, RequestRecord, Source
from tokn_router.wire.usage import TokenUsage

Report = Callable[[RequestRecord], None]


@dataclass(slots=True)
class RequestLog:
    """Everything the ledger records about one request, filled as it progresses."""

    endpoint: str
    method: str = "POST"  # the client's HTTP method (the request log line shows it)
    source: Source = "api"
    route_mode: str = "route"
    key: str | None = None  # the client key's name; None for an anonymous request
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)
    started_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    model: str = ""
    upstream_model: str | None = None
    account_id: str | None = None
    provider_id: str | None = None
    initiator: str | None = None
    stream: bool = False
    status: int = 0
    error: str | None = None
    usage: TokenUsage | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # more context for ctx_json
    reported: bool = False

    def to_record(self) -> RequestRecord:
        u = self.usage
        return RequestRecord(
            ts=self.started_at_ms // 1000,
            started_at_ms=self.started_at_ms,
            request_id=self.request_id,
            endpoint=self.endpoint,
            model=self.model or "",
            account_id=self.account_id,
            provider_id=self.provider_id,
            upstream_model=self.upstream_model,
            initiator=self.initiator,
            stream=self.stream,
            route_mode=self.route_mode,
            source=self.source,
            key=self.key,
            status=self.status,
            error=self.error,
            input_tokens=u.input if u else None,
            output_tokens=u.output if u else None,
            cached_tokens=u.cache_read if u else None,
            cache_write_tokens=u.cache_write if u else None,
            reasoning_tokens=u.reasoning if u else None,
            nano_aiu=u.nano_aiu if u else None,
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
            attempts=[
                Attempt(account_id=a["account_id"], status=a.get("status", 0), error=a.get("error"))
                for a in self.attempts
            ],
            extra=self.extra or None,
        )

    def mark_first_token(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = round((time.monotonic() - self.started) * 1000, 2)


def finish_row(
    rlog: RequestLog, report: Report, *, status: int | None = None, error: str | None = None
) -> None:
    """End the request's row and report it; later calls for the same request do nothing.

    ``status`` replaces the recorded one when given; ``error`` is kept only if
    no error was recorded before (the first failure is the cause).
    """
    if rlog.reported:
        return
    rlog.reported = True
    if status is not None:
        rlog.status = status
    if error is not None and rlog.error is None:
        rlog.error = error
    if rlog.latency_ms is None:
        rlog.latency_ms = round((time.monotonic() - rlog.started) * 1000, 2)
    report(rlog.to_record())


__all__ = ["Report", "RequestLog", "finish_row"]

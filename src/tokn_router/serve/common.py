"""What every model endpoint shares: services, the request prologue, the answer epilogue.

Each handler of :mod:`tokn_router.serve.chat` and :mod:`tokn_router.serve.agents`
reads its :class:`~tokn_router.serve.call.Call` with :func:`read_model_request`,
routes with :func:`route`, opens an upstream response through the relay, and
answers it with :func:`answer_whole` or :func:`answer_stream`. A request that
ends before (or instead of) an upstream answer goes through :func:`fail`.
Every path ends in :meth:`Services.finish`, the one place a ledger row is
closed and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import trio

from tokn_router.accounts.config import Config
from tokn_router.accounts.pool import Pool
from tokn_router.errors import RequestError, TranslationError
from tokn_router.serve.call import JSON, Answer, Call, json_answer, sse_answer
from tokn_router.serve.gate import Gate
from tokn_router.serve.pump import Spawn, relay_stream
from tokn_router.serve.relay import Opened, Relay, Route
from tokn_router.serve.sticky import session_key
from tokn_router.usage.inflight import Report, RequestLog, finish_row
from tokn_router.wire.errors import (
    Shape,
    identity_hint,
    is_anthropic_error,
    shaped_error_body,
    upstream_error_text,
    upstream_message,
    wrap_upstream_error,
)
from tokn_router.wire.transforms import StreamTransform, WholeTransform
from tokn_router.wire.translate.models import resolve_model
from tokn_router.wire.validate import require_model

log = logging.getLogger("tokn_router.api")
request_log = logging.getLogger("tokn_router.request")
"""One line per finished request; on with an explicit ``TOKN_ROUTER_LOG=info`` (or debug)."""


@dataclass
class Services:
    """What the handlers need; owned by the daemon."""

    config: Callable[[], Config]
    pool: Pool
    relay: Relay
    report: Report  # hands a finished row to the ledger
    spawn: Spawn  # starts a per-request helper task in the daemon's nursery
    gate: Gate | None = None  # client keys and their limits; None = no checks (unit tests)

    def keepalive(self) -> float:
        return self.config().server.sse_keepalive_secs

    def new_log(self, call: Call, endpoint: str) -> RequestLog:
        return RequestLog(
            endpoint=endpoint,
            method=call.method,
            source=call.source,
            route_mode=call.route_mode,
            key=call.client_key,
        )

    def finish(
        self, rlog: RequestLog, *, status: int | None = None, error: str | None = None
    ) -> None:
        """Close the request's ledger row and report it (once); log it at info level."""
        if rlog.reported:
            return
        finish_row(rlog, self.report, status=status, error=error)
        # checked first: with the line off (the default) nothing is formatted
        if request_log.isEnabledFor(logging.INFO):
            log_request(rlog)


def _count(n: int | None) -> str:
    return "?" if n is None else str(n)


def _printable(text: str) -> str:
    # the model id comes from the client: a newline in it must not forge a log line
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def log_request(rlog: RequestLog) -> None:
    """``POST /v1/chat/completions 200 12ms model=gpt-4.1 account=alice tokens=in:12,out:5``.

    Only what the ledger row holds, and no secret: ids, status, latency, token counts.
    """
    model = rlog.model or "-"
    if rlog.upstream_model and rlog.upstream_model != rlog.model:
        model = f"{model}->{rlog.upstream_model}"
    model = _printable(model)
    u = rlog.usage
    tokens = "-"
    if u is not None:
        tokens = f"in:{_count(u.input)},out:{_count(u.output)}"
        if u.cache_read:
            tokens += f",cached:{u.cache_read}"
        if u.reasoning:
            tokens += f",reasoning:{u.reasoning}"
    extra = " stream" if rlog.stream else ""
    if rlog.source != "api":
        extra += f" via={rlog.source}:{rlog.route_mode}"
    request_log.info(
        "%s %s %s %.0fms model=%s account=%s tokens=%s%s",
        rlog.method,
        _printable(rlog.endpoint),
        rlog.status or "-",
        rlog.latency_ms or 0.0,
        model,
        rlog.account_id or "-",
        tokens,
        extra,
    )


def error_answer(
    shape: Shape,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """An error answer in the client API's own shape."""
    return json_answer(
        status, shaped_error_body(shape, status, message, code=code, param=param), headers
    )


def request_error_answer(shape: Shape, e: RequestError) -> Answer:
    return error_answer(
        shape, e.status, e.message, code=e.code, param=e.param, headers=e.headers or None
    )


def fail(svc: Services, rlog: RequestLog, shape: Shape, e: RequestError) -> Answer:
    """Record a request that ends with an error of ours, and answer it."""
    svc.finish(rlog, status=e.status, error=e.message)
    return request_error_answer(shape, e)


def check_route_mode(call: Call, default: str) -> str:
    """The route mode of an API-listener request (passthrough/switch need the proxy)."""
    mode = (call.headers.get("x-route-mode") or default).strip().lower()
    if mode == "route":
        return mode
    if mode in ("passthrough", "switch"):
        raise RequestError(
            400,
            f"route mode '{mode}' is only available through the MITM proxy "
            "(tokn-router proxy / serve --with-proxy)",
            code="unsupported_route_mode",
        )
    raise RequestError(
        400, f"unknown route mode '{mode}' (route, passthrough, switch)", code="invalid_route_mode"
    )


async def read_request(svc: Services, call: Call, rlog: RequestLog) -> dict[str, Any]:
    """The common start of every model endpoint: route mode, the JSON body, the session.

    The session key (hashed) rides in the row's context; the relay reads it
    there to keep the conversation on its account (:mod:`tokn_router.serve.sticky`).
    """
    cfg = svc.config()
    if call.source == "api":
        rlog.route_mode = check_route_mode(call, cfg.server.route_mode)
    body = await call.read_json(cfg.server.max_body_bytes)
    key = session_key(call.headers, body)
    if key is not None:
        rlog.extra["session"] = key.as_json()
    return body


async def read_model_request(
    svc: Services, call: Call, rlog: RequestLog
) -> tuple[dict[str, Any], str]:
    """:func:`read_request` plus the required ``model`` (recorded in the row)."""
    body = await read_request(svc, call, rlog)
    model = require_model(body)
    rlog.model = model
    return body, model


async def route(svc: Services, call: Call, model: str) -> Route:
    return await svc.relay.route(
        model,
        account_id=call.headers.get("x-tokn-account"),
        aliases=svc.config().model_aliases,
        resolve=resolve_model,
    )


def note_opened(rlog: RequestLog, opened: Opened) -> None:
    rlog.account_id = opened.state.id
    rlog.provider_id = opened.state.provider.id


def wants_whole(resp: httpx.Response, stream: bool) -> bool:
    """An error, a request that did not ask for a stream, or an answer that is not one."""
    ctype = resp.headers.get("content-type", "text/event-stream")
    return resp.status_code >= 400 or not stream or "text/event-stream" not in ctype


async def answer_whole(
    svc: Services,
    resp: httpx.Response,
    rlog: RequestLog,
    transform: WholeTransform,
    *,
    shape: Shape,
    native_errors: bool = False,
) -> Answer:
    """Read a whole upstream answer, convert it, close the row.

    Upstream errors keep their status: in the OpenAI shape JSON bodies pass
    unchanged (others are wrapped with a hint); in the Anthropic shape an
    Anthropic error from a native upstream passes, anything else is rewritten.
    """
    try:
        data = await resp.aread()
    except httpx.HTTPError as e:
        msg = f"upstream failed while sending its answer: {type(e).__name__}"
        return fail(svc, rlog, shape, RequestError(502, msg, code="upstream_error"))
    finally:
        with trio.CancelScope(shield=True):
            await resp.aclose()
    status = resp.status_code
    ctype = resp.headers.get("content-type", JSON)
    headers = {}
    if "retry-after" in resp.headers:
        headers["Retry-After"] = resp.headers["retry-after"]

    if status >= 400:
        hint = identity_hint(status, data, ctype)
        if hint:
            # the request's fault in the policy's eyes, yet every request will meet it
            log.warning("request %s: upstream answered %s: %s", rlog.request_id, status, hint)
        svc.finish(rlog, status=status, error=upstream_error_text(status, data, ctype))
        if shape == "openai":
            out = wrap_upstream_error(status, data, ctype)
        elif native_errors and is_anthropic_error(data):
            out = data
        else:
            out = shaped_error_body(shape, status, upstream_message(status, data, ctype))
        return json_answer(status, out, headers)

    try:
        out = transform.convert(data)
    except TranslationError as e:
        _note_usage(rlog, transform)  # upstream did the work: its usage counts
        e.code = e.code or "upstream_error"
        return fail(svc, rlog, shape, e)
    _note_usage(rlog, transform)
    rlog.mark_first_token()
    svc.finish(rlog, status=status)
    return Answer(
        status, out, [("Content-Type", transform.content_type or ctype), *headers.items()]
    )


def _note_usage(rlog: RequestLog, transform: WholeTransform | StreamTransform) -> None:
    rlog.usage = transform.usage
    rlog.upstream_model = transform.model or rlog.upstream_model


def answer_stream(
    svc: Services, resp: httpx.Response, rlog: RequestLog, transform: StreamTransform
) -> Answer:
    """Relay an upstream stream through ``transform``; the row closes when it ends."""
    rlog.status = resp.status_code

    def done() -> None:
        _note_usage(rlog, transform)
        svc.finish(rlog, error=transform.error)

    body = relay_stream(svc.spawn, resp, transform, rlog, keepalive=svc.keepalive(), on_done=done)
    return sse_answer(body, resp.status_code)


__all__ = [
    "Services",
    "answer_stream",
    "answer_whole",
    "check_route_mode",
    "error_answer",
    "fail",
    "log_request",
    "note_opened",
    "read_model_request",
    "read_request",
    "request_error_answer",
    "route",
    "wants_whole",
]

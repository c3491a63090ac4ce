"""The Quart-Trio application of the API listener.

Routes stay thin: they parse and validate the client's request, ask the
:class:`~tokn_router.serve.relay.Relay` for an upstream response and relay it.
Streamed bodies are forwarded as upstream sends them (one write per upstream
read, never re-encoded); usage is read on the side and reported to the ledger.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import msgspec
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from tokn_router._version import __version__
from tokn_router.accounts import models_meta
from tokn_router.accounts.config import Config
from tokn_router.accounts.pool import AccountState, Pool
from tokn_router.accounts.providers.base import RequestInfo
from tokn_router.serve.pump import Spawn, relay_stream
from tokn_router.serve.relay import ApiError, Relay, RequestLog, Route
from tokn_router.wire.errors import error_body, upstream_error_text, wrap_upstream_error
from tokn_router.wire.initiator import classify_chat, has_image, resolve_initiator
from tokn_router.wire.sse import ChatStreamRelay, completion_decoder
from tokn_router.wire.translate.models import resolve_model

log = logging.getLogger("tokn_router.api")

_encode = msgspec.json.encode
_decode_obj = msgspec.json.Decoder(dict[str, Any])

JSON = "application/json"
SSE = "text/event-stream"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


@dataclass
class Services:
    """What the routes need; owned by the daemon."""

    config: Callable[[], Config]
    pool: Pool
    relay: Relay
    report: Callable[[RequestLog], None]
    spawn: Spawn
    loopback_only: bool = True
    lan: Any = None  # api.lan.LanInfo in LAN mode
    started: float = field(default_factory=time.time)
    health_extra: Callable[[], dict[str, Any]] = lambda: {}

    def keepalive(self) -> float:
        return self.config().server.sse_keepalive_secs


def is_loopback_host(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, content_type=JSON, headers=headers)


def reject(svc: Services, rlog: RequestLog, e: ApiError) -> Response:
    """Record a request that ends with an error of ours, and answer it (OpenAI shape)."""
    rlog.status = e.status
    rlog.error = e.message
    rlog.finish()
    svc.report(rlog)
    return api_error_response(e)


def api_error_response(e: ApiError) -> Response:
    return _json_response(
        e.status, error_body(e.status, e.message, code=e.code, param=e.param), e.headers
    )


async def read_json_body(max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or an ApiError (413/415/400)."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise ApiError(
            415,
            f"content type must be application/json, not '{ctype}'",
            code="unsupported_media_type",
        )
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, f"request body exceeds {max_bytes} bytes", code="request_too_large")
    raw = await request.get_data(cache=False, as_text=False)
    if len(raw) > max_bytes:
        raise ApiError(413, f"request body exceeds {max_bytes} bytes", code="request_too_large")
    try:
        return _decode_obj.decode(raw)
    except msgspec.ValidationError:
        raise ApiError(400, "request body must be a JSON object", code="invalid_json") from None
    except msgspec.DecodeError as e:
        raise ApiError(400, f"malformed JSON in request body: {e}", code="invalid_json") from None


# hostname (labels of at most 63 chars), IPv4 or [IPv6], optional port
_VALID_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?)(?::[0-9]{1,5})?$"
)


class _App(QuartTrio):
    async def asgi_app(self, scope: Any, receive: Any, send: Any) -> None:
        # werkzeug rejects some Host headers (a label over 63 chars) while building
        # the request, before any handler runs, which would end as a bare 500.
        if scope.get("type") == "http":
            host = next((v for k, v in scope.get("headers", ()) if k == b"host"), b"")
            if host and not _VALID_HOST.match(host.decode("latin-1")):
                body = error_body(400, "invalid Host header", code="invalid_host")
                await send(
                    {
                        "type": "http.response.start",
                        "status": 400,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await super().asgi_app(scope, receive, send)


def create_app(svc: Services) -> QuartTrio:
    app = _App("tokn_router")
    # Quart's default 60 s response timeout would cut long streams (stack notes §2).
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 120
    app.config["MAX_CONTENT_LENGTH"] = None  # enforced by read_json_body with an OpenAI error
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    @app.before_request
    async def _guard() -> Response | None:
        if from_proxy():
            return None  # the MITM proxy already decided this request is ours to serve
        if svc.loopback_only and not is_loopback_host(request.headers.get("host", "")):
            # DNS-rebinding guard: a page on evil.example resolving to 127.0.0.1
            # must not reach the API through the victim's browser.
            return _json_response(
                403,
                error_body(
                    403,
                    "Host header must name a loopback address on a loopback bind",
                    code="forbidden_host",
                ),
            )
        return None

    @app.errorhandler(HTTPException)
    async def _http_error(e: HTTPException) -> Response:
        status = e.code or 500
        message = {
            404: f"no route for {request.method} {request.path}",
            405: f"method {request.method} not allowed on {request.path}",
        }.get(status, e.description or e.name)
        return _json_response(status, error_body(status, message))

    @app.errorhandler(ApiError)
    async def _api_error(e: ApiError) -> Response:
        return api_error_response(e)

    @app.errorhandler(Exception)
    async def _crash(e: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        return _json_response(500, error_body(500, f"internal error: {type(e).__name__}"))

    @app.get("/healthz")
    async def healthz() -> Response:
        now = time.time()
        body = {
            "status": "ok",
            "version": __version__,
            "uptime_secs": int(now - svc.started),
            "accounts": [s.health(now) for s in svc.pool.states],
            **svc.health_extra(),
        }
        return _json_response(200, _encode(body))

    @app.get("/v1/models")
    @app.get("/models")
    async def models() -> Response:
        await svc.pool.wait_ready()
        data = []
        for st, entry in svc.pool.model_entries():
            data.append({**entry, "x_tokn_router": model_block(st, str(entry.get("id")))})
        return _json_response(200, _encode({"object": "list", "data": data}))

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions")
    async def chat_completions() -> Response:
        return await handle_chat(svc, "/v1/chat/completions")

    # Feature modules add their routes here (agent APIs, LAN bootstrap).
    from tokn_router.edges import lan
    from tokn_router.serve import agents

    agents.register(app, svc)
    lan.register(app, svc)
    return app


PROXY_SCOPE_KEY = "tokn_router"


def from_proxy() -> bool:
    """Whether the current request came through the MITM proxy (ASGI scope extension)."""
    return PROXY_SCOPE_KEY in request.scope.get("extensions", {})


def new_log(endpoint: str) -> RequestLog:
    """A RequestLog for the current request, marked with its source (api or proxy)."""
    ext = request.scope.get("extensions", {}).get(PROXY_SCOPE_KEY)
    if ext:
        return RequestLog(
            endpoint=endpoint, source="proxy", route_mode=ext.get("route_mode", "route")
        )
    return RequestLog(endpoint=endpoint)


def model_block(st: AccountState, model_id: str) -> dict[str, Any]:
    block: dict[str, Any] = {
        "provider": st.provider.id,
        "provider_display_name": st.provider.display_name,
        "auth_kind": st.provider.auth_kind,
    }
    meta = models_meta.lookup(st.provider.id, model_id)
    if meta:
        for key in ("capabilities", "cost", "limit"):
            if key in meta:
                block[key] = meta[key]
    return block


def check_route_mode(default: str) -> str:
    mode = (request.headers.get("x-route-mode") or default).strip().lower()
    if mode == "route":
        return mode
    if mode in ("passthrough", "switch"):
        raise ApiError(
            400,
            f"route mode '{mode}' is only available through the MITM proxy "
            "(tokn-router proxy / serve --with-proxy)",
            code="unsupported_route_mode",
        )
    raise ApiError(
        400, f"unknown route mode '{mode}' (route, passthrough, switch)", code="invalid_route_mode"
    )


async def read_model_request(cfg: Config, rlog: RequestLog) -> tuple[dict[str, Any], str]:
    """The common start of every model endpoint: route mode, JSON body, ``model``."""
    if rlog.source == "api":
        rlog.route_mode = check_route_mode(cfg.server.route_mode)
    body = await read_json_body(cfg.server.max_body_bytes)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "missing required field 'model'", code="missing_field", param="model")
    return body, model


async def handle_chat(svc: Services, endpoint: str) -> Response:
    cfg = svc.config()
    rlog = new_log(endpoint)
    try:
        body, model = await read_model_request(cfg, rlog)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(
                400,
                "missing required field 'messages' (a non-empty list)",
                code="missing_field",
                param="messages",
            )
        rlog.model = model
        stream = body.get("stream") is True
        rlog.stream = stream
        route = await svc.relay.route(
            model,
            account_id=request.headers.get("x-tokn-account"),
            aliases=cfg.model_aliases,
            resolve=resolve_model,
        )
        rlog.upstream_model = route.model
        wants_usage = False
        if stream:
            opts = body.get("stream_options")
            opts = dict(opts) if isinstance(opts, dict) else {}
            wants_usage = opts.get("include_usage") is True
            # always meter streams; the usage chunk is hidden again if not asked for
            opts["include_usage"] = True
            body["stream_options"] = opts
        classified = classify_chat(messages)
        vision = has_image(messages)
        header_initiator = request.headers.get("x-initiator")
        request_id = rlog.request_id

        def build(st: AccountState, token: str) -> tuple[bytes, dict[str, str]]:
            upstream_body = st.provider.transform_request({**body, "model": route.model})
            initiator = resolve_initiator(
                header_initiator, st.account.settings.initiator_mode, classified
            )
            rlog.initiator = initiator
            info = RequestInfo(request_id=request_id, initiator=initiator, vision=vision)
            headers = st.provider.headers(st.account, token, info)
            headers["Content-Type"] = JSON
            headers["Accept"] = SSE if stream else JSON
            return _encode(upstream_body), headers

        opened = await svc.relay.open(route, "/chat/completions", build, rlog)
    except ApiError as e:
        return reject(svc, rlog, e)

    st, resp = opened.state, opened.response
    rlog.account_id = st.id
    rlog.provider_id = st.provider.id
    if resp.status_code >= 400 or not stream or SSE not in resp.headers.get("content-type", SSE):
        return await _relay_whole(svc, resp, rlog)
    return _relay_stream(svc, route, resp, rlog, drop_usage=not wants_usage)


async def _relay_whole(svc: Services, resp: httpx.Response, rlog: RequestLog) -> Response:
    try:
        data = await resp.aread()
    except httpx.HTTPError as e:
        with trio.CancelScope(shield=True):
            await resp.aclose()
        rlog.status = 502
        rlog.error = f"upstream failed while sending its answer: {type(e).__name__}"
        rlog.finish()
        svc.report(rlog)
        return _json_response(502, error_body(502, rlog.error, code="upstream_error"))
    finally:
        with trio.CancelScope(shield=True):
            await resp.aclose()
    ctype = resp.headers.get("content-type", JSON)
    status = resp.status_code
    rlog.status = status
    if status >= 400:
        rlog.error = upstream_error_text(status, data, ctype)
        data = wrap_upstream_error(status, data, ctype)
        ctype = JSON
    else:
        try:
            parsed = completion_decoder.decode(data)
            rlog.usage = parsed.usage
            rlog.upstream_model = parsed.model or rlog.upstream_model
        except msgspec.DecodeError:
            pass
        rlog.mark_first_token()
    rlog.finish()
    svc.report(rlog)
    headers = {}
    if "retry-after" in resp.headers:
        headers["Retry-After"] = resp.headers["retry-after"]
    return Response(data, status=status, content_type=ctype, headers=headers)


class _ChatTransform:
    """Chat-completions SSE passes through unchanged (maybe minus the usage chunk)."""

    def __init__(self, relay: ChatStreamRelay) -> None:
        self.relay = relay

    @property
    def first_content(self) -> bool:
        return self.relay.first_content

    def feed(self, data: bytes) -> bytes:
        return self.relay.feed(data)

    def flush(self) -> bytes:
        return self.relay.flush()

    def fail(self, message: str) -> bytes:
        return b"data: " + error_body(502, message, code="upstream_stream_error") + b"\n\n"


def _relay_stream(
    svc: Services, route: Route, resp: httpx.Response, rlog: RequestLog, *, drop_usage: bool
) -> Response:
    relay = ChatStreamRelay(drop_usage_chunk=drop_usage)
    rlog.status = resp.status_code

    def done() -> None:
        rlog.usage = relay.usage
        if relay.model:
            rlog.upstream_model = relay.model
        if relay.error is not None and rlog.error is None:
            rlog.error = (
                "upstream error mid-stream: " + relay.error.decode("utf-8", "replace")[:300]
            )
        rlog.finish()
        svc.report(rlog)

    body = relay_stream(
        svc.spawn, resp, _ChatTransform(relay), rlog, keepalive=svc.keepalive(), on_done=done
    )
    return sse_response(body, resp.status_code)


def sse_response(body: AsyncIterator[bytes], status: int = 200) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    response = Response(body, status=status, content_type=SSE, headers=headers)
    response.timeout = None
    return response

"""The API listener's Quart-Trio application: a thin adapter around :mod:`tokn_router.serve`.

It guards the listener (Host header checks), turns each request into a
:class:`~tokn_router.serve.call.Call`, runs the endpoint's handler and sends
back the :class:`~tokn_router.serve.call.Answer`. It also answers what only
this listener has: ``/healthz``, the LAN bootstrap routes, and errors for
paths and methods nobody serves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers as ResponseHeaders
from werkzeug.exceptions import HTTPException

from tokn_router._version import __version__
from tokn_router.edges import lan
from tokn_router.edges.lan import LanInfo
from tokn_router.errors import RequestError
from tokn_router.serve.call import JSON, Answer, Call, Headers
from tokn_router.serve.common import Services
from tokn_router.serve.routes import ENDPOINTS, Endpoint, serve_endpoint
from tokn_router.wire import hosts, http1
from tokn_router.wire.errors import error_body

log = logging.getLogger("tokn_router.api")

_encode = msgspec.json.encode


@dataclass
class ApiServices(Services):
    """The handlers' services plus what only the API listener needs."""

    loopback_only: bool = True
    lan: LanInfo | None = None  # set by the daemon in LAN mode
    started: float = field(default_factory=time.time)
    health_extra: Callable[[], dict[str, Any]] = lambda: {}


def _json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, content_type=JSON, headers=headers)


# HTTP versions hypercorn may report in a scope: HTTP/1.x from h11, "2" and "3".
_HTTP_VERSIONS = frozenset({"1.0", "1.1", "2", "3"})


def _head_refusal(scope: Any) -> tuple[int, bytes] | None:
    """``(status, body)`` for a request head this listener refuses before routing."""
    headers = scope.get("headers", ())
    target = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 1
    problem = http1.head_problem(
        scope.get("method", "GET"),
        target,
        str(scope.get("http_version", "1.1")),
        headers,
        versions=_HTTP_VERSIONS,
    )
    if problem is not None:
        status, message = problem
        return status, error_body(status, message, code="request_head_refused")
    # werkzeug rejects some Host headers (a label over 63 chars) while building
    # the request, before any handler runs, which would end as a bare 500.
    host = next((v for k, v in headers if k == b"host"), b"")
    if host:
        try:
            hosts.parse_authority(host.decode("latin-1").strip())
        except hosts.HostError:
            return 400, error_body(400, "invalid Host header", code="invalid_host")
    return None


async def _send_json(
    send: Any, status: int, body: bytes, prefix: str = "http", *, close: bool = False
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:  # what follows on the connection cannot be trusted to be framed right
        headers.append((b"connection", b"close"))
    await send({"type": f"{prefix}.response.start", "status": status, "headers": headers})
    await send({"type": f"{prefix}.response.body", "body": body})


class _App(QuartTrio):
    async def asgi_app(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind == "websocket":
            # Nothing here speaks WebSocket. Refused during the handshake with a
            # body in the OpenAI shape (hypercorn's denial-response extension);
            # Quart would otherwise end the handshake as an empty 500.
            await receive()  # websocket.connect
            body = error_body(
                400,
                "WebSocket is not supported: send plain HTTP requests",
                code="websocket_not_supported",
            )
            if "websocket.http.response" in scope.get("extensions", {}):
                await _send_json(send, 400, body, "websocket.http")
            else:  # pragma: no cover - hypercorn offers the extension
                await send({"type": "websocket.close"})
            return
        if kind == "http":
            refusal = _head_refusal(scope)
            if refusal is not None:
                await _send_json(send, *refusal, close=True)
                return
        await super().asgi_app(scope, receive, send)


async def _request_body() -> AsyncIterator[bytes]:
    """The current request's body (Quart applies its BODY_TIMEOUT while reading)."""
    try:
        data = await request.get_data(cache=False, as_text=False)
        yield data if isinstance(data, bytes) else data.encode()
    except HTTPException as e:
        # e.g. a body that did not arrive in time: answered in the endpoint's shape
        status = e.code or 400
        raise RequestError(status, e.description or e.name) from None


def _call() -> Call:
    client = request.scope.get("client")
    return Call(
        method=request.method,
        path=request.path,
        query=request.query_string.decode("latin-1"),
        headers=Headers(request.headers.items()),
        body=_request_body,
        client=(str(client[0]), int(client[1])) if client else None,
    )


def _response(answer: Answer) -> Response:
    ctype = answer.content_type
    headers = ResponseHeaders([(k, v) for k, v in answer.headers if k.lower() != "content-type"])
    response = Response(answer.body, status=answer.status, content_type=ctype, headers=headers)
    if answer.streamed:
        response.timeout = None  # a stream lasts as long as the model takes
    return response


def _route(app: QuartTrio, svc: Services, endpoint: Endpoint) -> None:
    async def view() -> Response:
        return _response(await serve_endpoint(svc, endpoint, _call()))

    view.__name__ = "endpoint_" + endpoint.path.strip("/").replace("/", "_")
    for path in (endpoint.path, *endpoint.aliases):
        app.add_url_rule(path, view.__name__, view, methods=[endpoint.method])


def create_app(svc: ApiServices) -> QuartTrio:
    app = _App("tokn_router")
    # Quart's default 60 s response timeout would cut long streams.
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["BODY_TIMEOUT"] = 120
    app.config["MAX_CONTENT_LENGTH"] = None  # enforced by Call.read_body with a JSON error
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False

    @app.before_request
    async def _guard() -> Response | None:
        if svc.loopback_only and not hosts.is_loopback_authority(request.headers.get("host", "")):
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

    @app.errorhandler(RequestError)
    async def _request_error(e: RequestError) -> Response:
        body = error_body(e.status, e.message, code=e.code, param=e.param)
        return _json_response(e.status, body, e.headers)

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

    for endpoint in ENDPOINTS:
        _route(app, svc, endpoint)
    lan.register(app, lambda: svc.lan)
    return app


__all__ = ["ApiServices", "create_app"]

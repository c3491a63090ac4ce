"""The API listener's Quart-Trio application: a thin adapter around :mod:`tokn_router.serve`.

It guards the listener (Host header checks), turns each request into a
:class:`~tokn_router.serve.call.Call`, runs the endpoint's handler and sends
back the :class:`~tokn_router.serve.call.Answer`. It also answers what only
this listener has: ``/healthz``, the LAN bootstrap routes, and errors for
paths and methods nobody serves.
"""

from __future__ import annotations

import ipaddress
import logging
import re
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
from tokn_router.wire.errors import error_body

log = logging.getLogger("tokn_router.api")

_encode = msgspec.json.encode

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


@dataclass
class ApiServices(Services):
    """The handlers' services plus what only the API listener needs."""

    loopback_only: bool = True
    lan: LanInfo | None = None  # set by the daemon in LAN mode
    started: float = field(default_factory=time.time)
    health_extra: Callable[[], dict[str, Any]] = lambda: {}


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


__all__ = ["ApiServices", "create_app", "is_loopback_host"]

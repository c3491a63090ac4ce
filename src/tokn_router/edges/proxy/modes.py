"""What the MITM proxy does with an intercepted request (SPEC 10).

- ``route``: chat completions, models and the agent APIs are answered by the
  account pool exactly as on the API listener — the request is handed to the
  same ASGI app in-process (the client's own credentials are dropped there);
  any other path goes to the original host untouched.
- ``passthrough``: forwarded to the original host unchanged, with the client's
  own credentials; only recorded in the ledger.
- ``switch``: forwarded to the original host with the client's credentials
  swapped for a pooled account of the host's provider (400 when there is none).

The mode comes from, in order: the ``X-Route-Mode`` header, the proxy user
name (``http://passthrough@127.0.0.1:4142``), ``[proxy_mode.provider_modes]``
for the host's provider, then the listener's default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import msgspec
import trio

from tokn_router.accounts.config import Config, ProxyModeConfig
from tokn_router.accounts.pool import AccountState, Pool
from tokn_router.accounts.providers.base import RequestInfo
from tokn_router.edges.proxy.listener import ProxyRequestContext
from tokn_router.serve.relay import RequestLog
from tokn_router.wire.errors import error_body
from tokn_router.wire.initiator import classify_chat, has_image, resolve_initiator
from tokn_router.wire.usage import UsageSniffer

log = logging.getLogger("tokn_router.proxy")

ROUTE_MODES = ("route", "passthrough", "switch")

BUILTIN_INTERCEPT = (
    "api.openai.com",
    "api.githubcopilot.com",
    "api.individual.githubcopilot.com",
    "api.business.githubcopilot.com",
    "api.enterprise.githubcopilot.com",
    "api.z.ai",
    "open.bigmodel.cn",
    "api.anthropic.com",
    "openrouter.ai",
    "api.deepseek.com",
    "chatgpt.com",
)

# host → the provider key used by [proxy_mode.provider_modes] and switch mode
_HOST_KEYS = {
    "api.openai.com": "openai",
    "chatgpt.com": "openai",
    "api.anthropic.com": "anthropic",
    "openrouter.ai": "openrouter",
    "api.deepseek.com": "deepseek",
    "api.z.ai": "zai",
    "open.bigmodel.cn": "zhipuai",
}
# provider key → pool provider ids whose accounts can stand in (switch mode)
SWITCH_PROVIDERS = {
    "github-copilot": ("github-copilot",),
    "zai": ("zai-coding-plan", "zai"),
    "zhipuai": ("zhipuai-coding-plan", "zhipuai"),
}

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "x-route-mode",
    }
)
_CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key"})

# endpoint suffix → the API listener's path serving it
_API_PATHS = (
    ("/chat/completions", "/v1/chat/completions"),
    ("/responses", "/v1/responses"),
    ("/messages/count_tokens", "/v1/messages/count_tokens"),
    ("/messages", "/v1/messages"),
    ("/embeddings", "/v1/embeddings"),
    ("/models", "/v1/models"),
)


def provider_key(host: str) -> str | None:
    host = host.lower()
    if host == "githubcopilot.com" or host.endswith(".githubcopilot.com"):
        return "github-copilot"
    return _HOST_KEYS.get(host)


def api_path(method: str, path: str) -> str | None:
    """The API listener path that serves this intercepted request, if any."""
    bare = path.split("?", 1)[0].rstrip("/")
    for suffix, target in _API_PATHS:
        if bare.endswith(suffix):
            if target == "/v1/models":
                return target if method == "GET" else None
            return target if method == "POST" else None
    return None


class InterceptList:
    """Which CONNECT targets are TLS-terminated: built-ins + intercept_hosts − passthrough_hosts."""

    def __init__(self, cfg: ProxyModeConfig) -> None:
        self._hosts: set[tuple[str, int]] = {(h, 443) for h in BUILTIN_INTERCEPT}
        for entry in cfg.intercept_hosts:
            self._hosts.add(_host_port(entry))
        self._skip = {_host_port(e) for e in cfg.passthrough_hosts}
        self._skip_any = {h for h, p in self._skip if p == 443 and ":" not in h}

    def __call__(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if (host, port) in self._skip or (port == 443 and host in self._skip_any):
            return False
        return (host, port) in self._hosts


def _host_port(entry: str) -> tuple[str, int]:
    e = entry.strip().lower()
    if e.startswith("["):
        host, _, rest = e[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 443
        return host, port
    if e.count(":") == 1:
        host, _, port_s = e.partition(":")
        return host, int(port_s)
    return e, 443


class ProxyModes:
    """The route-mode handler given to :func:`tokn_router.edges.proxy.listener.serve_proxy`."""

    def __init__(
        self,
        *,
        app: Any,  # the API's ASGI app (route mode is served by it)
        config: Callable[[], Config],
        pool: Pool,
        client: httpx.AsyncClient,
        report: Callable[[RequestLog], None],
        default_mode: Callable[[], str],
    ) -> None:
        self.app = app
        self.config = config
        self.pool = pool
        self.client = client
        self.report = report
        self.default_mode = default_mode
        self.active = 0
        self.idle = trio.Event()
        self.idle.set()

    def mode_for(self, ctx: ProxyRequestContext) -> str:
        override = ctx.header("x-route-mode") or ctx.proxy_username
        if override:
            return override.strip().lower()
        key = provider_key(ctx.host)
        modes = self.config().proxy_mode.provider_modes
        if key and key in modes:
            return modes[key]
        return self.default_mode()

    async def handle(self, ctx: ProxyRequestContext) -> None:
        self.active += 1
        self.idle = trio.Event() if self.active == 1 else self.idle
        try:
            await self._handle(ctx)
        finally:
            self.active -= 1
            if self.active == 0:
                self.idle.set()

    async def _handle(self, ctx: ProxyRequestContext) -> None:
        mode = self.mode_for(ctx)
        if mode not in ROUTE_MODES:
            await self._refuse(
                ctx, mode, f"unknown route mode '{mode}' (route, passthrough, switch)"
            )
            return
        if mode == "route":
            target = api_path(ctx.method, ctx.path)
            if target is not None:
                await self._serve_from_pool(ctx, target)
                return
            await self._forward(ctx, mode, None)
            return
        if mode == "passthrough":
            await self._forward(ctx, mode, None)
            return
        account = self._switch_account(ctx)
        if account is None:
            key = provider_key(ctx.host)
            await self._refuse(
                ctx,
                mode,
                f"switch mode: no pooled account for {ctx.host}"
                + (f" (provider '{key}')" if key else " (host maps to no provider)"),
            )
            return
        await self._forward(ctx, mode, account)

    async def _refuse(self, ctx: ProxyRequestContext, mode: str, message: str) -> None:
        """Answer 400 and still record the request: every intercepted request has a row."""
        rlog = RequestLog(endpoint=ctx.path.split("?", 1)[0], source="proxy", route_mode=mode)
        rlog.provider_id = provider_key(ctx.host)
        rlog.status = 400
        rlog.error = message
        rlog.finish()
        self.report(rlog)
        await _error(ctx, 400, message)

    def _switch_account(self, ctx: ProxyRequestContext) -> AccountState | None:
        key = provider_key(ctx.host)
        ids = SWITCH_PROVIDERS.get(key or "", ())
        now = time.time()
        usable = [
            s for s in self.pool.states if s.provider.id in ids and s.usable(now) and s.token()
        ]
        return self.pool.pick(usable) if usable else None

    # ------------------------------------------------------------- route

    async def _serve_from_pool(self, ctx: ProxyRequestContext, path: str) -> None:
        """Hand the request to the API app in-process (an ASGI call)."""
        query = ctx.path.split("?", 1)[1] if "?" in ctx.path else ""
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in ctx.headers
            if k not in _CLIENT_CREDENTIALS
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": ctx.method,
            "scheme": ctx.scheme,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode("latin-1"),
            "root_path": "",
            "headers": headers,
            "client": ctx.client,
            "server": (ctx.host, ctx.port),
            "state": {},
            "extensions": {"tokn_router": {"route_mode": "route", "host": ctx.host}},
        }
        body = ctx.iter_body().__aiter__()
        body_done = False

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if not body_done:
                try:
                    chunk = await body.__anext__()
                    return {"type": "http.request", "body": chunk, "more_body": True}
                except StopAsyncIteration:
                    body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            # No disconnect event: a vanished client makes the next send fail,
            # which ends the request.
            await trio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                hdrs = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                ]
                await ctx.start_response(message["status"], hdrs)
            elif kind == "http.response.body":
                data = message.get("body", b"")
                if data:
                    await ctx.send(data)
                if not message.get("more_body", False):
                    await ctx.end_response()

        await self.app(scope, receive, send)

    # ------------------------------------------------- passthrough / switch

    async def _forward(
        self, ctx: ProxyRequestContext, mode: str, account: AccountState | None
    ) -> None:
        cfg = self.config()
        rlog = RequestLog(endpoint=ctx.path.split("?", 1)[0], source="proxy", route_mode=mode)
        body = await ctx.read_body(limit=cfg.server.max_body_bytes)
        parsed = _json_object(body, ctx.header("content-type"))
        if parsed is not None:
            model = parsed.get("model")
            rlog.model = model if isinstance(model, str) else ""
            rlog.stream = parsed.get("stream") is True
        rlog.upstream_model = rlog.model or None
        headers = [(k, v) for k, v in ctx.headers if k not in _HOP_BY_HOP]
        # ask for an uncompressed answer so usage can be read on the side
        headers = [(k, v) for k, v in headers if k != "accept-encoding"]
        headers.append(("accept-encoding", "identity"))
        if account is not None:
            headers = self._swap_credentials(headers, account, parsed, rlog)
            rlog.account_id = account.id
            rlog.provider_id = account.provider.id
        else:
            rlog.provider_id = provider_key(ctx.host)
        url = ctx.url
        try:
            req = self.client.build_request(ctx.method, url, headers=headers, content=body)
            resp = await self.client.send(req, stream=True)
        except httpx.HTTPError as e:
            rlog.status = 502
            rlog.error = f"cannot reach {ctx.authority}: {type(e).__name__}: {e}"[:500]
            rlog.finish()
            self.report(rlog)
            await _error(ctx, 502, rlog.error)
            return
        rlog.status = resp.status_code
        sniff = UsageSniffer(resp.headers.get("content-type", ""))
        out_headers = [
            (k, v)
            for k, v in resp.headers.multi_items()
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding")
        ]
        try:
            await ctx.start_response(resp.status_code, out_headers, reason=resp.reason_phrase)
            async for chunk in resp.aiter_raw():
                if rlog.ttft_ms is None:
                    rlog.mark_first_token()
                sniff.feed(chunk)
                await ctx.send(chunk)
            await ctx.end_response()
        except httpx.HTTPError as e:
            rlog.error = f"upstream failed mid-answer: {type(e).__name__}: {e}"[:500]
            raise
        finally:
            with trio.CancelScope(shield=True):
                await resp.aclose()
            usage, model = sniff.finish()
            rlog.usage = usage
            if model:
                rlog.upstream_model = model
            if resp.status_code >= 400 and rlog.error is None:
                rlog.error = f"upstream answered {resp.status_code}"
            rlog.finish()
            self.report(rlog)

    def _swap_credentials(
        self,
        headers: list[tuple[str, str]],
        st: AccountState,
        body: dict[str, Any] | None,
        rlog: RequestLog,
    ) -> list[tuple[str, str]]:
        token = st.token() or ""
        messages = body.get("messages") if body else None
        classified = classify_chat(messages)
        initiator = resolve_initiator(
            dict(headers).get("x-initiator"), st.account.settings.initiator_mode, classified
        )
        rlog.initiator = initiator
        info = RequestInfo(
            request_id=rlog.request_id, initiator=initiator, vision=has_image(messages)
        )
        ours = st.provider.headers(st.account, token, info)
        replaced = {k.lower() for k in ours}
        kept = [(k, v) for k, v in headers if k not in _CLIENT_CREDENTIALS and k not in replaced]
        return kept + list(ours.items())


def _json_object(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    if not body or (content_type and "json" not in content_type.lower()):
        return None
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


async def _error(ctx: ProxyRequestContext, status: int, message: str) -> None:
    await ctx.respond(
        status,
        [("content-type", "application/json")],
        error_body(status, message, code="proxy_error"),
    )

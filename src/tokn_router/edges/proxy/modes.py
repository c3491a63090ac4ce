"""What the MITM proxy does with an intercepted request.

- ``route``: chat completions, models and the agent APIs are answered by the
  account pool exactly as on the API listener: the request becomes a
  :class:`~tokn_router.serve.call.Call` (minus the client's own credentials)
  for the same handler, and its :class:`~tokn_router.serve.call.Answer` is
  written back here; any other path goes to the original host untouched.
- ``passthrough``: forwarded to the original host unchanged, with the client's
  own credentials; only recorded in the ledger (:mod:`tokn_router.serve.forward`).
- ``switch``: forwarded to the original host with the client's credentials
  swapped for a pooled account of the host's provider (400 when there is none).

The mode comes from, in order: the ``X-Route-Mode`` header, the proxy user
name (``http://passthrough@127.0.0.1:4142``), ``[proxy_mode.provider_modes]``
for the host's provider, then the listener's default. The user name ``default``
(and a client key given as the user name) selects no mode, so a proxy URL can
carry a client key in its password without overriding the server's choice:
``http://default:tkr_…@server:4142``.

Every intercepted request passes the client-key gate (:mod:`tokn_router.serve.gate`)
with the credentials of its CONNECT: route mode in the endpoint table's
:func:`~tokn_router.serve.routes.serve_endpoint`, switch mode here (it spends a
pooled account); passthrough is only attributed, as it spends the client's own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio

from tokn_router.accounts.config import ProxyModeConfig
from tokn_router.clients.extract import KEY_PREFIX
from tokn_router.edges.proxy.exchange import ProxyRequestContext
from tokn_router.errors import ConfigError
from tokn_router.serve.call import Answer, Call, Headers
from tokn_router.serve.common import Services
from tokn_router.serve.forward import CLIENT_CREDENTIALS, forward, pick_account, refuse
from tokn_router.serve.gate import Ticket
from tokn_router.serve.routes import Endpoint, find_endpoint, serve_endpoint
from tokn_router.wire import hosts

log = logging.getLogger("tokn_router.proxy")

ROUTE_MODES = ("route", "passthrough", "switch")
NO_MODE_USERNAMES = ("default",)  # a proxy user name that leaves the mode to the server

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
    """Which CONNECT targets are TLS-terminated: built-ins + intercept_hosts − passthrough_hosts.

    An entry that is no host (``a.example:http``) is left out and listed in
    ``errors``; :func:`check_hosts` turns them into a ConfigError at start-up.
    """

    def __init__(self, cfg: ProxyModeConfig, *, warn: bool = True) -> None:
        self.errors: list[str] = []
        self._hosts: set[tuple[str, int]] = {(h, 443) for h in BUILTIN_INTERCEPT}
        self._hosts.update(self._entries("intercept_hosts", cfg.intercept_hosts))
        self._skip = set(self._entries("passthrough_hosts", cfg.passthrough_hosts))
        self._skip_any = {h for h, p in self._skip if p == 443 and ":" not in h}
        for error in self.errors if warn else ():
            log.warning("[proxy_mode] %s; the entry is ignored", error)

    def _entries(self, key: str, entries: list[str]) -> list[tuple[str, int]]:
        out = []
        for entry in entries:
            try:
                out.append(_host_port(entry))
            except hosts.HostError as e:
                self.errors.append(f"{key}: {e}")
        return out

    def __call__(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if (host, port) in self._skip or (port == 443 and host in self._skip_any):
            return False
        return (host, port) in self._hosts


def _host_port(entry: str) -> tuple[str, int]:
    host, port = hosts.parse_authority(entry.strip(), 443, bare_ipv6=True)
    return host, port or 443


def check_hosts(cfg: ProxyModeConfig) -> None:
    """ConfigError naming every ``[proxy_mode]`` host entry that is not a host."""
    errors = InterceptList(cfg, warn=False).errors
    if errors:
        raise ConfigError("[proxy_mode] " + "; ".join(errors))


class ProxyModes:
    """The route-mode handler given to :func:`tokn_router.edges.proxy.listener.serve_proxy`."""

    def __init__(self, *, svc: Services, default_mode: Callable[[], str]) -> None:
        # a bad host entry is a start-up error; after a reload it is logged and skipped
        check_hosts(svc.config().proxy_mode)
        self.svc = svc
        self.default_mode = default_mode
        self.active = 0
        self.idle = trio.Event()
        self.idle.set()

    def mode_for(self, ctx: ProxyRequestContext) -> str:
        username = ctx.proxy_username
        if username in NO_MODE_USERNAMES or (username or "").startswith(KEY_PREFIX):
            username = None
        override = ctx.header("x-route-mode") or username
        if override:
            return override.strip().lower()
        key = provider_key(ctx.host)
        modes = self.svc.config().proxy_mode.provider_modes
        if key and key in modes:
            return modes[key]
        return self.default_mode()

    async def handle(self, ctx: ProxyRequestContext) -> None:
        self.active += 1
        self.idle = trio.Event() if self.active == 1 else self.idle
        try:
            await write_answer(ctx, await self._answer(ctx))
        finally:
            self.active -= 1
            if self.active == 0:
                self.idle.set()

    async def _answer(self, ctx: ProxyRequestContext) -> Answer:
        mode = self.mode_for(ctx)
        endpoint: Endpoint | None = None
        if mode == "route":
            target = api_path(ctx.method, ctx.path)
            endpoint = find_endpoint(ctx.method, target) if target else None
        client_key: str | None = None
        gate = self.svc.gate
        if gate is not None:
            # again for each request: a key revoked while its tunnel is open stops here
            who = gate.proxy_identity(
                ctx.proxy_authorization,
                endpoint.path if endpoint else None,
                endpoint.shape if endpoint else "openai",
            )
            if isinstance(who, Answer):
                return who
            client_key = who
        if mode not in ROUTE_MODES:
            message = f"unknown route mode '{mode}' (route, passthrough, switch)"
            call = _call(ctx, mode, client_key=client_key)
            return refuse(self.svc, call, mode, provider_key(ctx.host), message)
        if mode == "route":
            if endpoint is not None:
                # the pool answers with its own credentials: the client's are dropped
                call = _call(ctx, mode, drop=CLIENT_CREDENTIALS, client_key=client_key)
                return await serve_endpoint(self.svc, endpoint, call)
            return await self._forward(ctx, mode, client_key, switch=False)
        return await self._forward(ctx, mode, client_key, switch=mode == "switch")

    async def _forward(
        self, ctx: ProxyRequestContext, mode: str, client_key: str | None, *, switch: bool
    ) -> Answer:
        call = _call(ctx, mode, client_key=client_key)
        gate = self.svc.gate
        if not switch or gate is None:
            return await self._forward_call(ctx, call, mode, switch=switch)
        # switch mode spends a pooled account: the key's limits apply as on the API
        admitted = await gate.admit(call, endpoint=ctx.path.split("?", 1)[0], shape="openai")
        if not isinstance(admitted, Ticket):
            return admitted
        try:
            answer = await self._forward_call(ctx, call, mode, switch=True)
        except BaseException:
            admitted.release()
            raise
        return admitted.attach(answer)

    async def _forward_call(
        self, ctx: ProxyRequestContext, call: Call, mode: str, *, switch: bool
    ) -> Answer:
        key = provider_key(ctx.host)
        account = None
        if switch:
            account = pick_account(self.svc.pool, SWITCH_PROVIDERS.get(key or "", ()))
            if account is None:
                message = f"switch mode: no pooled account for {ctx.host}" + (
                    f" (provider '{key}')" if key else " (host maps to no provider)"
                )
                return refuse(self.svc, call, mode, key, message)
        return await forward(
            self.svc,
            call,
            url=ctx.url,
            authority=ctx.authority,
            mode=mode,
            account=account,
            provider_id=key,
        )


def _call(
    ctx: ProxyRequestContext,
    mode: str,
    *,
    drop: frozenset[str] = frozenset(),
    client_key: str | None = None,
) -> Call:
    path, _, query = ctx.path.partition("?")
    return Call(
        method=ctx.method,
        path=path,
        query=query,
        headers=Headers((k, v) for k, v in ctx.headers if k not in drop),
        body=ctx.iter_body,
        source="proxy",
        route_mode=mode,
        client=ctx.client,
        client_key=client_key,
    )


async def write_answer(ctx: ProxyRequestContext, answer: Answer) -> None:
    """Send ``answer`` on the proxy connection; a streamed body chunk by chunk as produced."""
    body = answer.body
    if isinstance(body, bytes):
        await ctx.respond(answer.status, answer.headers, body)
        return
    # closing the body when the client is gone ends the upstream request and
    # closes the ledger row at once
    async with contextlib.aclosing(body) as chunks:
        await ctx.start_response(answer.status, answer.headers, reason=answer.reason)
        async for chunk in chunks:
            if chunk:
                await ctx.send(chunk)
    await ctx.end_response()

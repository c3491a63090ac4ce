"""Forwarding a request to its original host (the MITM proxy's passthrough and switch).

- ``passthrough``: the request goes to the original host unchanged, with the
  client's own credentials; we only record it in the ledger.
- ``switch``: the same, with the client's credentials swapped for a pooled
  account of the host's provider (and that account's identity headers).

The answer is relayed byte for byte as it arrives. Usage is read on the side
by :class:`~tokn_router.wire.usage.UsageSniffer`, through the same normaliser
as the answers the pool serves, so both kinds of row count tokens alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import httpx2 as httpx
import msgspec
import trio

from tokn_router.accounts.pool import AccountState, Pool
from tokn_router.accounts.providers.base import RequestInfo
from tokn_router.errors import RequestError
from tokn_router.serve.call import Answer, Call, StreamBody, json_answer, too_deep
from tokn_router.serve.common import Services
from tokn_router.usage.inflight import RequestLog
from tokn_router.wire import jsondepth
from tokn_router.wire.errors import error_body
from tokn_router.wire.initiator import classify_chat, has_image, resolve_initiator
from tokn_router.wire.usage import UsageSniffer

# never forwarded: they describe this hop, or are recomputed for the next one
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
CLIENT_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key"})
_RESPONSE_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})


def pick_account(pool: Pool, provider_ids: Iterable[str]) -> AccountState | None:
    """A usable pooled account of one of ``provider_ids`` (rotating), for switch mode."""
    ids = tuple(provider_ids)
    now = time.time()
    usable = [s for s in pool.states if s.provider.id in ids and s.usable(now) and s.token()]
    return pool.pick(usable) if usable else None


def proxy_error(status: int, message: str) -> Answer:
    return json_answer(status, error_body(status, message, code="proxy_error"))


def refuse(svc: Services, call: Call, mode: str, provider_id: str | None, message: str) -> Answer:
    """Answer 400 and still record the request: every intercepted request has a row."""
    rlog = RequestLog(
        endpoint=call.path, method=call.method, source="proxy", route_mode=mode, key=call.client_key
    )
    rlog.provider_id = provider_id
    svc.finish(rlog, status=400, error=message)
    return proxy_error(400, message)


async def forward(
    svc: Services,
    call: Call,
    *,
    url: str,
    authority: str,
    mode: str,
    account: AccountState | None,
    provider_id: str | None,
) -> Answer:
    """Send ``call`` to ``url`` and relay the answer; the row closes when the body ends."""
    rlog = RequestLog(
        endpoint=call.path, method=call.method, source="proxy", route_mode=mode, key=call.client_key
    )
    try:
        body = await call.read_body(svc.config().server.max_body_bytes)
    except RequestError as e:
        svc.finish(rlog, status=e.status, error=e.message)
        return proxy_error(e.status, e.message)
    try:
        parsed = _json_object(body, call.headers.get("content-type"))
    except RequestError as e:
        svc.finish(rlog, status=e.status, error=e.message)
        return json_answer(e.status, error_body(e.status, e.message, code=e.code))
    if parsed is not None:
        model = parsed.get("model")
        rlog.model = model if isinstance(model, str) else ""
        rlog.stream = parsed.get("stream") is True
    rlog.upstream_model = rlog.model or None
    headers = [(k, v) for k, v in call.headers.items() if k not in _HOP_BY_HOP]
    # ask for an uncompressed answer so usage can be read on the side
    headers = [(k, v) for k, v in headers if k != "accept-encoding"]
    headers.append(("accept-encoding", "identity"))
    if account is not None:
        headers = _swap_credentials(headers, account, parsed, rlog)
        rlog.account_id = account.id
        rlog.provider_id = account.provider.id
    else:
        rlog.provider_id = provider_id
    client = svc.relay.client
    try:
        req = client.build_request(call.method, url, headers=headers, content=body)
        resp = await client.send(req, stream=True)
    except httpx.HTTPError as e:
        message = f"cannot reach {authority}: {type(e).__name__}: {e}"[:500]
        svc.finish(rlog, status=502, error=message)
        return proxy_error(502, message)
    rlog.status = resp.status_code
    out_headers = [
        (k, v) for k, v in resp.headers.multi_items() if k.lower() not in _RESPONSE_HOP_BY_HOP
    ]
    sniff = UsageSniffer(resp.headers.get("content-type", ""))

    async def unstarted() -> None:
        await _close(svc, resp, rlog, sniff)

    stream = StreamBody(_relay(svc, resp, rlog, sniff), unstarted)
    return Answer(resp.status_code, stream, out_headers, reason=resp.reason_phrase)


async def _relay(
    svc: Services, resp: httpx.Response, rlog: RequestLog, sniff: UsageSniffer
) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in resp.aiter_raw():
            rlog.mark_first_token()
            sniff.feed(chunk)
            yield chunk
    except httpx.HTTPError as e:
        rlog.error = f"upstream failed mid-answer: {type(e).__name__}: {e}"[:500]
        raise
    finally:
        await _close(svc, resp, rlog, sniff)


async def _close(
    svc: Services, resp: httpx.Response, rlog: RequestLog, sniff: UsageSniffer
) -> None:
    with trio.CancelScope(shield=True):
        await resp.aclose()
    usage, model = sniff.finish()
    rlog.usage = usage
    if model:
        rlog.upstream_model = model
    status = resp.status_code
    svc.finish(rlog, error=f"upstream answered {status}" if status >= 400 else None)


def _swap_credentials(
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
    info = RequestInfo(request_id=rlog.request_id, initiator=initiator, vision=has_image(messages))
    ours = st.provider.headers(st.account, token, info)
    replaced = {k.lower() for k in ours}
    kept = [(k, v) for k, v in headers if k not in CLIENT_CREDENTIALS and k not in replaced]
    return kept + list(ours.items())


def _json_object(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    if not body or (content_type and "json" not in content_type.lower()):
        return None
    if jsondepth.too_deep(body):  # the decoder would recurse until RecursionError
        raise too_deep()
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


__all__ = ["CLIENT_CREDENTIALS", "forward", "pick_account", "proxy_error", "refuse"]

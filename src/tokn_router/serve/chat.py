"""Chat completions and the model list, as handlers of a :class:`~tokn_router.serve.call.Call`.

Chat bodies go upstream unchanged except the model id (and the provider's own
request tweaks); streamed answers are forwarded as upstream sends them (one
write per upstream read, never re-encoded) while usage is read on the side.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokn_router.accounts import models_meta
from tokn_router.accounts.pool import AccountState
from tokn_router.accounts.providers.base import RequestInfo
from tokn_router.errors import RequestError
from tokn_router.serve.call import JSON, SSE, Answer, Call, json_answer
from tokn_router.serve.common import (
    Services,
    answer_stream,
    answer_whole,
    fail,
    note_opened,
    read_model_request,
    route,
    wants_whole,
)
from tokn_router.wire.initiator import classify_chat, has_image, resolve_initiator
from tokn_router.wire.transforms import ChatTransform, ChatWhole
from tokn_router.wire.validate import require_messages

_encode = msgspec.json.encode

CHAT = "/v1/chat/completions"


async def handle_chat(svc: Services, call: Call) -> Answer:
    rlog = svc.new_log(call, CHAT)
    try:
        body, model = await read_model_request(svc, call, rlog)
        messages = require_messages(body)
        stream = body.get("stream") is True
        rlog.stream = stream
        routed = await route(svc, call, model)
        rlog.upstream_model = routed.model
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
        header_initiator = call.headers.get("x-initiator")
        request_id = rlog.request_id

        def build(st: AccountState, token: str) -> tuple[bytes, dict[str, str]]:
            upstream_body = st.provider.transform_request({**body, "model": routed.model})
            initiator = resolve_initiator(
                header_initiator, st.account.settings.initiator_mode, classified
            )
            rlog.initiator = initiator
            info = RequestInfo(request_id=request_id, initiator=initiator, vision=vision)
            headers = st.provider.headers(st.account, token, info)
            headers["Content-Type"] = JSON
            headers["Accept"] = SSE if stream else JSON
            return _encode(upstream_body), headers

        opened = await svc.relay.open(routed, "/chat/completions", build, rlog)
    except RequestError as e:
        return fail(svc, rlog, "openai", e)

    note_opened(rlog, opened)
    resp = opened.response
    if wants_whole(resp, stream):
        return await answer_whole(svc, resp, rlog, ChatWhole(), shape="openai")
    return answer_stream(svc, resp, rlog, ChatTransform(drop_usage_chunk=not wants_usage))


def model_block(st: AccountState, model_id: str) -> dict[str, Any]:
    """The ``x_tokn_router`` block of a ``/v1/models`` entry."""
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


def model_entry(st: AccountState, entry: dict[str, Any]) -> dict[str, Any]:
    """One ``/v1/models`` entry in the OpenAI shape, with where it came from.

    Copilot's entries carry neither ``created`` nor ``owned_by``, which some
    clients require (``created`` 0: upstream does not say). ``source`` is
    ``upstream`` for the account's live list, ``static`` for the packaged one,
    served until the live list is read (or when reading it failed).
    """
    out = {**entry}
    out.setdefault("object", "model")
    if out.get("created") is None:
        out["created"] = 0
    if not out.get("owned_by"):
        out["owned_by"] = st.provider.id
    block = model_block(st, str(entry.get("id")))
    block["source"] = "upstream" if st.models else "static"
    out["x_tokn_router"] = block
    return out


async def handle_models(svc: Services, call: Call) -> Answer:
    """The union of the accounts' models, at once (no ledger row: nothing is served).

    It does not wait for the accounts' first token exchange and model read
    (two or three round trips to upstream after start-up): an account whose
    live list is not read yet lists its static models, marked as such.
    """
    data = [model_entry(st, entry) for st, entry in svc.pool.model_entries()]
    return json_answer(200, _encode({"object": "list", "data": data}))


__all__ = ["CHAT", "handle_chat", "handle_models", "model_block", "model_entry"]

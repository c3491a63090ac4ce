"""Agent APIs: Responses, Messages, count_tokens, embeddings.

Codex CLI speaks the OpenAI Responses API, Claude Code the Anthropic Messages
API; both are served from the same pool as chat completions, with the same
failover, identity headers, X-Initiator rules and usage ledger.

**Native first.** Per attempt (so per account), when the account's ``/models``
entry for the routed model lists the client's endpoint in
``supported_endpoints`` (``/responses``, ``/v1/messages``), the body goes to
that upstream endpoint unchanged except for the model id, and the answer is
relayed byte for byte (SSE included) while usage is read on the side.
Otherwise the body is translated to ``/chat/completions`` by the sans-I/O
translators of :mod:`tokn_router.wire.translate` and the answer translated back,
streamed event by event (:mod:`tokn_router.wire.transforms`). Both modes can
occur in one failover sequence, which is why :meth:`Relay.open` takes a
path-per-account callback here.

**Input is validated before anything goes upstream**, in both modes, by
running the request translator (it raises ``TranslationError`` on wrong
types and missing fields) plus :mod:`tokn_router.wire.validate`. A bad
request costs no upstream call and gets a 400 in the API's own shape.

**Errors use each API's shape**: Messages ``{"type": "error", "error": {...}}``,
Responses the OpenAI shape. No usable account → 503 with ``Retry-After`` (for
Messages with type ``overloaded_error``: the status and header every client
already honours for the OpenAI endpoints). A stream that breaks after the
first byte ends with ``event: error`` / ``response.failed``, never silently.

**Ledger**: one row per request on ``/v1/messages``, ``/v1/responses`` and
``/v1/embeddings`` (also for requests rejected before upstream, like chat).
``count_tokens`` is answered locally and writes no row: the ledger records
upstream-served requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

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
    read_request,
    request_error_answer,
    route,
    wants_whole,
)
from tokn_router.serve.relay import Route
from tokn_router.usage.inflight import RequestLog
from tokn_router.wire.errors import Shape
from tokn_router.wire.initiator import Initiator, has_image, resolve_initiator
from tokn_router.wire.transforms import (
    ChatWhole,
    NativeMessagesStream,
    NativeResponsesStream,
    NativeStream,
    NativeWhole,
    TranslatedStream,
    TranslatedWhole,
)
from tokn_router.wire.translate import (
    ChatToMessagesStream,
    ChatToResponsesStream,
    chat_to_message,
    chat_to_response,
    messages_initiator,
    messages_to_chat,
    responses_initiator,
    responses_to_chat,
)
from tokn_router.wire.translate.tokens import DEFAULT_TOKENIZER, count_tokens
from tokn_router.wire.usage import TokenUsage, anthropic_usage, responses_usage
from tokn_router.wire.validate import (
    check_input_items,
    check_message_blocks,
    require_embedding_input,
)

_encode = msgspec.json.encode

ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True, slots=True)
class AgentApi:
    """What differs between Messages and Responses; the request flow is shared."""

    endpoint: str  # ledger endpoint
    shape: Shape
    native_path: str  # upstream endpoint when the model lists it
    intent: str  # OpenAI-Intent / X-Interaction-Type of native requests
    request_id_header: str
    to_chat: Callable[[Mapping[str, Any], str | None, Mapping[str, Any] | None], dict[str, Any]]
    check: Callable[[Mapping[str, Any]], None]
    initiator: Callable[[Mapping[str, Any]], Initiator]
    from_chat: Callable[[Mapping[str, Any], str, Mapping[str, Any]], dict[str, Any]]
    translated_stream: Callable[[str, Mapping[str, Any]], TranslatedStream]
    native_stream: Callable[[str, Mapping[str, Any]], NativeStream]
    native_usage: Callable[[Any], TokenUsage | None]


MESSAGES = AgentApi(
    endpoint="/v1/messages",
    shape="anthropic",
    native_path="/v1/messages",
    intent="messages-proxy",
    request_id_header="request-id",
    to_chat=lambda body, model, caps: messages_to_chat(body, model=model, capabilities=caps),
    check=check_message_blocks,
    initiator=messages_initiator,
    from_chat=lambda resp, model, body: chat_to_message(resp, model),
    translated_stream=lambda model, body: TranslatedStream(ChatToMessagesStream(model), b"error"),
    native_stream=lambda model, body: NativeMessagesStream(),
    native_usage=anthropic_usage,
)

RESPONSES = AgentApi(
    endpoint="/v1/responses",
    shape="openai",
    native_path="/responses",
    intent="responses-proxy",
    request_id_header="x-request-id",
    to_chat=lambda body, model, caps: responses_to_chat(body, model=model),
    check=check_input_items,
    initiator=responses_initiator,
    from_chat=chat_to_response,
    translated_stream=lambda model, body: TranslatedStream(
        ChatToResponsesStream(model, body), b"response.failed"
    ),
    native_stream=NativeResponsesStream,
    native_usage=responses_usage,
)


def model_entry(st: AccountState, model: str) -> Mapping[str, Any]:
    entry = st.models.get(model)
    return entry if isinstance(entry, Mapping) else {}


def capabilities(st: AccountState, model: str) -> Mapping[str, Any] | None:
    caps = model_entry(st, model).get("capabilities")
    return caps if isinstance(caps, Mapping) else None


def serves_natively(st: AccountState, model: str, path: str) -> bool:
    """The account's upstream lists ``path`` for ``model`` (unknown list: translate)."""
    eps = model_entry(st, model).get("supported_endpoints")
    return isinstance(eps, list) and path in eps


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def clamp_max_tokens(chat: dict[str, Any], caps: Mapping[str, Any] | None) -> None:
    """Keep a translated max_tokens within the model's output limit.

    Claude Code always asks for 32000; a chat model with a 16k limit would
    reject that outright, while the client only meant "as much as you can".
    """
    limits = caps.get("limits") if caps else None
    limit = _int(limits.get("max_output_tokens")) if isinstance(limits, Mapping) else None
    wanted = _int(chat.get("max_tokens"))
    if limit and wanted and wanted > limit:
        chat["max_tokens"] = limit


async def handle_agent(svc: Services, call: Call, api: AgentApi) -> Answer:
    rlog = svc.new_log(call, api.endpoint)
    try:
        body = await read_request(svc, call, rlog)
        if isinstance(body.get("model"), str):
            rlog.model = body["model"]
        stream = body.get("stream") is True
        rlog.stream = stream
        # Validate (and learn about images) before anything goes upstream, in
        # both modes: a bad request must not cost an upstream call.
        probe = api.to_chat(body, None, None)
        api.check(body)
        requested: str = body["model"]
        vision = has_image(probe.get("messages"))
        classified = api.initiator(body)
        routed = await route(svc, call, requested)
        rlog.upstream_model = routed.model
        # build decides native vs translated once per attempt and records it, so
        # the path and the answer's handling follow the same decision even if
        # the account's model list is refreshed meanwhile
        native_by_account: dict[str, bool] = {}
        build = _builder(
            call, api, body, routed, native_by_account, rlog, vision=vision, classified=classified
        )

        def path(st: AccountState) -> str:
            return api.native_path if native_by_account[st.id] else "/chat/completions"

        opened = await svc.relay.open(routed, path, build, rlog)
    except RequestError as e:
        return fail(svc, rlog, api.shape, e)

    note_opened(rlog, opened)
    resp = opened.response
    native = native_by_account[opened.state.id]
    if wants_whole(resp, stream):
        whole = (
            NativeWhole(api.native_usage)
            if native
            else TranslatedWhole(lambda chat: api.from_chat(chat, requested, body))
        )
        answer = await answer_whole(svc, resp, rlog, whole, shape=api.shape, native_errors=native)
    else:
        transform: NativeStream | TranslatedStream = (
            api.native_stream(requested, body) if native else api.translated_stream(requested, body)
        )
        answer = answer_stream(svc, resp, rlog, transform)
    answer.header(api.request_id_header, rlog.request_id)
    return answer


def _builder(
    call: Call,
    api: AgentApi,
    body: dict[str, Any],
    routed: Route,
    native_by_account: dict[str, bool],
    rlog: RequestLog,
    *,
    vision: bool,
    classified: Initiator,
) -> Callable[[AccountState, str], tuple[bytes, dict[str, str]]]:
    header_initiator = call.headers.get("x-initiator")
    beta = call.headers.get("anthropic-beta")
    version = call.headers.get("anthropic-version") or ANTHROPIC_VERSION
    stream = body.get("stream") is True

    def build(st: AccountState, token: str) -> tuple[bytes, dict[str, str]]:
        native = serves_natively(st, routed.model, api.native_path)
        native_by_account[st.id] = native
        if native:
            upstream = {**body, "model": routed.model}
            if upstream.get("tools") == []:
                # an empty tool list is not forwarded as is (Claude Code's title request)
                del upstream["tools"]
        else:
            caps = capabilities(st, routed.model)
            upstream = api.to_chat(body, routed.model, caps)
            clamp_max_tokens(upstream, caps)
            upstream = st.provider.transform_request(upstream)
        initiator = resolve_initiator(
            header_initiator, st.account.settings.initiator_mode, classified
        )
        rlog.initiator = initiator
        extra: dict[str, str] = {}
        if native:
            extra["X-Interaction-Type"] = api.intent
            if api.shape == "anthropic":
                extra["anthropic-version"] = version
                if beta:
                    extra["anthropic-beta"] = beta
        info = RequestInfo(
            request_id=rlog.request_id,
            initiator=initiator,
            vision=vision,
            intent=api.intent if native else None,
            extra=extra,
        )
        headers = st.provider.headers(st.account, token, info)
        headers["Content-Type"] = JSON
        headers["Accept"] = SSE if stream else JSON
        return _encode(upstream), headers

    return build


# ---------------------------------------------------------------------------
# count_tokens and embeddings
# ---------------------------------------------------------------------------


def tokenizer_for(routed: Route) -> str | None:
    """The model's own tokenizer from ``/models`` when an account lists one."""
    for st in routed.candidates:
        caps = capabilities(st, routed.model)
        tok = caps.get("tokenizer") if caps else None
        if isinstance(tok, str) and tok:
            return tok
    return None


async def handle_count_tokens(svc: Services, call: Call) -> Answer:
    """``{"input_tokens": N}`` counted offline; no upstream call, no ledger row."""
    rlog = svc.new_log(call, "/v1/messages/count_tokens")  # never reported
    try:
        body = await read_request(svc, call, rlog)
        # the same validation as /v1/messages, minus max_tokens (not part of this API)
        messages_to_chat({**body, "max_tokens": 1})
        check_message_blocks(body)
        routed = await route(svc, call, body["model"])
        tokenizer = tokenizer_for(routed) or DEFAULT_TOKENIZER
        # in a worker thread: the first call loads the vocabulary (~0.5 s) and a
        # large request takes milliseconds of CPU; neither may stall other streams
        n = await trio.to_thread.run_sync(count_tokens, body, tokenizer)
    except RequestError as e:
        return request_error_answer("anthropic", e)
    return json_answer(200, _encode({"input_tokens": n}))


async def handle_embeddings(svc: Services, call: Call) -> Answer:
    """Forwarded to upstream ``/embeddings`` unchanged except the model id."""
    rlog = svc.new_log(call, "/v1/embeddings")
    try:
        body, model = await read_model_request(svc, call, rlog)
        require_embedding_input(body)
        routed = await route(svc, call, model)
        rlog.upstream_model = routed.model
        header_initiator = call.headers.get("x-initiator")

        def build(st: AccountState, token: str) -> tuple[bytes, dict[str, str]]:
            # never a user prompt: "agent" unless the client or the account says otherwise
            initiator = resolve_initiator(
                header_initiator, st.account.settings.initiator_mode, "agent"
            )
            rlog.initiator = initiator
            # the intent VS Code's Copilot extension sends with embeddings requests
            info = RequestInfo(rlog.request_id, initiator=initiator, intent="copilot-panel")
            headers = st.provider.headers(st.account, token, info)
            headers["Content-Type"] = JSON
            headers["Accept"] = JSON
            return _encode({**body, "model": routed.model}), headers

        opened = await svc.relay.open(routed, "/embeddings", build, rlog)
    except RequestError as e:
        return fail(svc, rlog, "openai", e)
    note_opened(rlog, opened)
    return await answer_whole(svc, opened.response, rlog, ChatWhole(), shape="openai")


__all__ = [
    "MESSAGES",
    "RESPONSES",
    "AgentApi",
    "clamp_max_tokens",
    "handle_agent",
    "handle_count_tokens",
    "handle_embeddings",
    "serves_natively",
]

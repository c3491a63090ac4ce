"""Agent APIs (SPEC 7a): Responses, Messages, count_tokens, embeddings.

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
streamed event by event. Both modes can occur in one failover sequence, which
is why :meth:`Relay.open` takes a path-per-account callback here.

**Input is validated before anything goes upstream**, in both modes, by
running the request translator (it raises :class:`TranslationError` on wrong
types and missing fields) plus a check for unknown content block types. A bad
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

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx2 as httpx
import msgspec
import trio
from quart import Response, request
from werkzeug.exceptions import HTTPException

from tokn_router.accounts.pool import AccountState
from tokn_router.accounts.providers.base import RequestInfo
from tokn_router.edges.api import (
    JSON,
    SSE,
    Services,
    _relay_whole,
    api_error_response,
    check_route_mode,
    from_proxy,
    new_log,
    read_json_body,
    read_model_request,
    reject,
    sse_response,
)
from tokn_router.serve.pump import relay_stream
from tokn_router.serve.relay import ApiError, RequestLog, Route
from tokn_router.wire.errors import upstream_error_text, wrap_upstream_error
from tokn_router.wire.initiator import Initiator, has_image, resolve_initiator
from tokn_router.wire.sse import EventScanner, Usage, completion_decoder, sse_event
from tokn_router.wire.translate import (
    ChatToMessagesStream,
    ChatToResponsesStream,
    TranslationError,
    anthropic_error,
    chat_to_message,
    chat_to_response,
    messages_initiator,
    messages_to_chat,
    resolve_model,
    responses_initiator,
    responses_to_chat,
)
from tokn_router.wire.translate.responses import response_object

log = logging.getLogger("tokn_router.agents")

_encode = msgspec.json.encode
_decode = msgspec.json.decode

Shape = Literal["anthropic", "openai"]
ANTHROPIC_VERSION = "2023-06-01"


# ---------------------------------------------------------------------------
# errors in each API's shape
# ---------------------------------------------------------------------------


def error_response(
    shape: Shape,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error answer in the client API's own shape."""
    if shape == "openai":
        # the same body (and type names) as the chat endpoint's errors
        return api_error_response(
            ApiError(status, message, code=code, param=param, headers=headers)
        )
    _, body = anthropic_error(status, message)
    return Response(_encode(body), status=status, content_type=JSON, headers=headers)


def _upstream_message(status: int, data: bytes, ctype: str) -> str:
    """The upstream error's message without the status prefix (hints kept)."""
    return upstream_error_text(status, data, ctype).removeprefix(f"{status}: ")


# ---------------------------------------------------------------------------
# usage for the ledger (prompt_tokens includes cached tokens)
# ---------------------------------------------------------------------------


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def ledger_usage(
    prompt: int | None, completion: int | None, cached: int | None, reasoning: int | None
) -> Usage:
    total = prompt + completion if prompt is not None and completion is not None else None
    return msgspec.convert(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
        Usage,
    )


def anthropic_usage(u: Any) -> Usage | None:
    """Messages usage → ledger usage: Anthropic's input_tokens excludes cache reads and writes."""
    if not isinstance(u, Mapping):
        return None
    inp = _int(u.get("input_tokens"))
    read = _int(u.get("cache_read_input_tokens"))
    write = _int(u.get("cache_creation_input_tokens"))
    prompt = None if inp is None else inp + (read or 0) + (write or 0)
    return ledger_usage(prompt, _int(u.get("output_tokens")), read, None)


def responses_usage(u: Any) -> Usage | None:
    """Responses usage → ledger usage (input_tokens already includes cached ones)."""
    if not isinstance(u, Mapping):
        return None
    idet = u.get("input_tokens_details")
    odet = u.get("output_tokens_details")
    return ledger_usage(
        _int(u.get("input_tokens")),
        _int(u.get("output_tokens")),
        _int(idet.get("cached_tokens")) if isinstance(idet, Mapping) else None,
        _int(odet.get("reasoning_tokens")) if isinstance(odet, Mapping) else None,
    )


# ---------------------------------------------------------------------------
# stream transforms (api.streaming.StreamTransform)
# ---------------------------------------------------------------------------

_INCOMPLETE = "upstream stream ended before the response was complete"


class NativeStream:
    """A native SSE body relayed byte for byte; events scanned for usage and the end.

    Subclasses read their API's events. A body that ends without the API's
    terminal event (or dies mid-way) gets one error event of the API appended,
    so a truncated answer never passes for a complete one.
    """

    def __init__(self) -> None:
        self._scanner = EventScanner()
        self.first_content = False
        self.usage: Usage | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.events = 0
        self._terminal = False  # the API's last event (or its own error event) went through

    def feed(self, data: bytes) -> bytes:
        for name, payload in self._scanner.feed(data):
            self._scan(name, payload)
        return data

    def flush(self) -> bytes:
        for name, payload in self._scanner.flush():
            self._scan(name, payload)
        return self.fail(_INCOMPLETE)

    def fail(self, message: str) -> bytes:
        if self._terminal:
            return b""
        self._terminal = True
        self.error = self.error or message
        return self._error_event(message)

    def _scan(self, name: bytes | None, payload: bytes) -> None:
        self.events += 1
        if name is not None:
            kind = name.decode("utf-8", "replace")
            if not self._wanted(kind):
                self._saw(kind, None)
                return
            obj = self._json(payload)
        else:
            # data-only events: the type is inside the JSON
            obj = self._json(payload)
            t = obj.get("type")
            kind = t if isinstance(t, str) else ""
        self._saw(kind, obj)

    @staticmethod
    def _json(payload: bytes) -> dict[str, Any]:
        try:
            obj = _decode(payload)
        except msgspec.DecodeError:
            return {}
        return obj if isinstance(obj, dict) else {}

    def _wanted(self, kind: str) -> bool:
        """Whether this event's JSON must be decoded (deltas are not)."""
        raise NotImplementedError

    def _saw(self, kind: str, obj: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def _error_event(self, message: str) -> bytes:
        raise NotImplementedError


class NativeMessagesStream(NativeStream):
    _WANTED = frozenset({"message_start", "message_delta", "error"})

    def __init__(self) -> None:
        super().__init__()
        self._usage: dict[str, Any] = {}

    def _wanted(self, kind: str) -> bool:
        return kind in self._WANTED

    def _saw(self, kind: str, obj: dict[str, Any] | None) -> None:
        if kind in ("content_block_start", "content_block_delta"):
            self.first_content = True
        elif kind == "message_stop":
            self._terminal = True
        elif obj is None:
            return
        elif kind == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                if isinstance(msg.get("model"), str):
                    self.model = msg["model"]
                if isinstance(msg.get("usage"), dict):
                    self._usage.update(msg["usage"])
                    self.usage = anthropic_usage(self._usage)
        elif kind == "message_delta":
            # output_tokens is final here; newer upstreams repeat the input side too
            u = obj.get("usage")
            if isinstance(u, dict):
                self._usage.update({k: v for k, v in u.items() if v is not None})
                self.usage = anthropic_usage(self._usage)
        elif kind == "error":
            self._terminal = True
            err = obj.get("error")
            msg = err.get("message") if isinstance(err, dict) else None
            self.error = f"upstream error mid-stream: {msg or 'unknown'}"[:500]

    def _error_event(self, message: str) -> bytes:
        return sse_event("error", anthropic_error(502, message)[1])


class NativeResponsesStream(NativeStream):
    _WANTED = frozenset(
        {
            "response.created",
            "response.completed",
            "response.incomplete",
            "response.failed",
            "error",
        }
    )

    def __init__(self, requested_model: str, request_body: Mapping[str, Any]) -> None:
        super().__init__()
        self._request = request_body
        self._requested = requested_model
        self._id = ""
        self._created = 0

    def _wanted(self, kind: str) -> bool:
        return kind in self._WANTED

    def _saw(self, kind: str, obj: dict[str, Any] | None) -> None:
        if kind.endswith(".delta") or kind == "response.output_item.done":
            self.first_content = True
            return
        if obj is None:
            return
        resp = obj.get("response")
        resp = resp if isinstance(resp, dict) else {}
        if isinstance(resp.get("model"), str) and resp["model"]:
            self.model = resp["model"]
        if kind == "response.created":
            self._id = resp["id"] if isinstance(resp.get("id"), str) else ""
            self._created = _int(resp.get("created_at")) or 0
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._terminal = True
            self.usage = responses_usage(resp.get("usage")) or self.usage
            err = resp.get("error")
            if kind == "response.failed" and isinstance(err, dict):
                self.error = f"upstream response failed: {err.get('message') or 'unknown'}"[:500]
        elif kind == "error":
            self._terminal = True
            self.error = f"upstream error mid-stream: {obj.get('message') or 'unknown'}"[:500]

    def _error_event(self, message: str) -> bytes:
        response = response_object(
            self._id or "resp_" + secrets.token_hex(12),
            self._requested,
            self._request,
            self._created or int(time.time()),
            status="failed",
            output=[],
            error={"code": "server_error", "message": message},
        )
        # upstream numbers events from 0, so the next number is the count so far
        data = {"type": "response.failed", "sequence_number": self.events, "response": response}
        return sse_event("response.failed", data)


Translator = ChatToMessagesStream | ChatToResponsesStream


class TranslatedStream:
    """A chat-completions SSE body translated event by event."""

    def __init__(self, translator: Translator, error_event: bytes) -> None:
        self.t = translator
        self._error_prefix = b"event: " + error_event + b"\n"
        self.error: str | None = None

    @property
    def first_content(self) -> bool:
        return bool(self.t.blocks)

    @property
    def usage(self) -> Usage | None:
        u = self.t.usage
        return None if u is None else ledger_usage(u.prompt, u.completion, u.cached, u.reasoning)

    @property
    def model(self) -> str | None:
        return self.t.upstream_model

    def _out(self, events: list[bytes]) -> bytes:
        for ev in events:
            if ev.startswith(self._error_prefix):
                self.error = (
                    "upstream stream failed: "
                    + ev.partition(b"\ndata: ")[2].decode("utf-8", "replace").strip()[:400]
                )
        return b"".join(events)

    def feed(self, data: bytes) -> bytes:
        return self._out(self.t.feed_bytes(data))

    def flush(self) -> bytes:
        return self._out(self.t.finish())

    def fail(self, message: str) -> bytes:
        return self._out(self.t.error(message))


# ---------------------------------------------------------------------------
# request validation beyond what the translators check
# ---------------------------------------------------------------------------

# Anthropic content block types; the server-tool families (web_search_tool_result,
# mcp_tool_use, …) grow often, so any *_tool_use / *_tool_result passes.
_MESSAGE_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "container_upload",
        "compaction",
    }
)
_BLOCK_SUFFIXES = ("_tool_use", "_tool_result")

_RESPONSES_PARTS = frozenset(
    {
        "input_text",
        "input_image",
        "input_file",
        "input_audio",
        "output_text",
        "refusal",
        "text",
        "summary_text",
        "reasoning_text",
    }
)


def check_message_blocks(body: Mapping[str, Any]) -> None:
    """400 on an empty ``messages`` list or a content block of unknown type."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return  # the translator reports it
    if not messages:
        raise TranslationError("messages: at least one message is required", "messages")
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, Mapping) else None
            if not isinstance(kind, str) or not (
                kind in _MESSAGE_BLOCKS or kind.endswith(_BLOCK_SUFFIXES)
            ):
                where = f"messages.{i}.content.{j}.type"
                raise TranslationError(f"{where}: unknown content block type {kind!r}", where)


def check_input_items(body: Mapping[str, Any]) -> None:
    """400 on an input item without type or role, or a message part of unknown type.

    Unknown *item* types pass (Codex sends compaction and hosted-tool items the
    translator skips); message content parts are a closed set.
    """
    items = body.get("input")
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue  # the translator reports it
        kind = item.get("type")
        if not isinstance(kind, str) and "role" not in item:
            raise TranslationError(f"input.{i}: an item needs a type (or a role)", f"input.{i}")
        if kind not in (None, "message") or not isinstance(item.get("content"), list):
            continue
        for k, part in enumerate(item["content"]):
            ptype = part.get("type") if isinstance(part, Mapping) else None
            if ptype not in _RESPONSES_PARTS:
                where = f"input.{i}.content.{k}.type"
                raise TranslationError(f"{where}: unknown content part type {ptype!r}", where)


# ---------------------------------------------------------------------------
# the two agent APIs
# ---------------------------------------------------------------------------


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
    native_usage: Callable[[Any], Usage | None]


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


async def _route(svc: Services, model: str) -> Route:
    return await svc.relay.route(
        model,
        account_id=request.headers.get("x-tokn-account"),
        aliases=svc.config().model_aliases,
        resolve=resolve_model,
    )


def _fail(
    svc: Services, rlog: RequestLog, shape: Shape, e: ApiError | TranslationError
) -> Response:
    """Report a request that ends before (or instead of) an upstream answer."""
    rlog.status = e.status
    rlog.error = e.message
    rlog.finish()
    svc.report(rlog)
    if isinstance(e, ApiError):
        return error_response(
            shape, e.status, e.message, code=e.code, param=e.param, headers=e.headers
        )
    return error_response(shape, e.status, e.message, code=e.code, param=e.param)


async def handle_agent(svc: Services, api: AgentApi) -> Response:
    cfg = svc.config()
    rlog = new_log(api.endpoint)
    try:
        if rlog.source == "api":
            rlog.route_mode = check_route_mode(cfg.server.route_mode)
        body = await read_json_body(cfg.server.max_body_bytes)
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
        route = await _route(svc, requested)
        rlog.upstream_model = route.model
        # build decides native vs translated once per attempt and records it, so
        # the path and the answer's handling follow the same decision even if
        # the account's model list is refreshed meanwhile
        native_by_account: dict[str, bool] = {}
        build = _builder(
            api, body, route, rlog, native_by_account, vision=vision, classified=classified
        )

        def path(st: AccountState) -> str:
            return api.native_path if native_by_account[st.id] else "/chat/completions"

        opened = await svc.relay.open(route, path, build, rlog)
    except (ApiError, TranslationError) as e:
        return _fail(svc, rlog, api.shape, e)

    st, resp = opened.state, opened.response
    rlog.account_id = st.id
    rlog.provider_id = st.provider.id
    native = native_by_account[st.id]
    if resp.status_code >= 400 or not stream or SSE not in resp.headers.get("content-type", SSE):
        answer = await _answer_whole(svc, api, resp, rlog, native=native, body=body)
    else:
        answer = _answer_stream(svc, api, resp, rlog, native=native, body=body)
    answer.headers[api.request_id_header] = rlog.request_id
    return answer


def _builder(
    api: AgentApi,
    body: dict[str, Any],
    route: Route,
    rlog: RequestLog,
    native_by_account: dict[str, bool],
    *,
    vision: bool,
    classified: Initiator,
) -> Callable[[AccountState, str], tuple[bytes, dict[str, str]]]:
    header_initiator = request.headers.get("x-initiator")
    beta = request.headers.get("anthropic-beta")
    version = request.headers.get("anthropic-version") or ANTHROPIC_VERSION
    stream = body.get("stream") is True

    def build(st: AccountState, token: str) -> tuple[bytes, dict[str, str]]:
        native = serves_natively(st, route.model, api.native_path)
        native_by_account[st.id] = native
        if native:
            upstream = {**body, "model": route.model}
            if upstream.get("tools") == []:
                # an empty tool list is not forwarded as is (Claude Code's title request)
                del upstream["tools"]
        else:
            caps = capabilities(st, route.model)
            upstream = api.to_chat(body, route.model, caps)
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


async def _answer_whole(
    svc: Services,
    api: AgentApi,
    resp: httpx.Response,
    rlog: RequestLog,
    *,
    native: bool,
    body: Mapping[str, Any],
) -> Response:
    def done(status: int, error: str | None = None) -> None:
        rlog.status = status
        rlog.error = rlog.error or error
        rlog.finish()
        svc.report(rlog)

    try:
        data = await resp.aread()
    except httpx.HTTPError as e:
        msg = f"upstream failed while sending its answer: {type(e).__name__}"
        done(502, msg)
        return error_response(api.shape, 502, msg, code="upstream_error")
    finally:
        with trio.CancelScope(shield=True):
            await resp.aclose()
    status = resp.status_code
    ctype = resp.headers.get("content-type", JSON)
    headers = {}
    if "retry-after" in resp.headers:
        headers["Retry-After"] = resp.headers["retry-after"]

    if status >= 400:
        done(status, upstream_error_text(status, data, ctype))
        if native and api.shape == "anthropic" and _is_anthropic_error(data):
            return Response(data, status=status, content_type=JSON, headers=headers)
        if api.shape == "openai":
            out = wrap_upstream_error(status, data, ctype)
            return Response(out, status=status, content_type=JSON, headers=headers)
        return error_response(
            api.shape, status, _upstream_message(status, data, ctype), headers=headers
        )

    try:
        if native:
            parsed = _decode(data)
            if isinstance(parsed, dict):
                rlog.usage = api.native_usage(parsed.get("usage"))
                if isinstance(parsed.get("model"), str):
                    rlog.upstream_model = parsed["model"]
            out = data
        else:
            completion = completion_decoder.decode(data)
            rlog.usage = completion.usage
            rlog.upstream_model = completion.model or rlog.upstream_model
            chat = _decode(data)
            if not isinstance(chat, dict):
                raise TranslationError("upstream answer is not a JSON object", status=502)
            out = _encode(api.from_chat(chat, body["model"], body))
            ctype = JSON
    except msgspec.DecodeError:
        if native:
            out = data  # relayed as is: the client may make sense of it
        else:
            msg = "upstream answered with malformed JSON"
            done(502, msg)
            return error_response(api.shape, 502, msg, code="upstream_error")
    except TranslationError as e:
        done(e.status, e.message)
        return error_response(api.shape, e.status, e.message, code=e.code or "upstream_error")
    rlog.mark_first_token()
    done(status)
    return Response(out, status=status, content_type=ctype, headers=headers)


def _is_anthropic_error(data: bytes) -> bool:
    try:
        obj = _decode(data)
    except msgspec.DecodeError:
        return False
    return (
        isinstance(obj, dict) and obj.get("type") == "error" and isinstance(obj.get("error"), dict)
    )


def _answer_stream(
    svc: Services,
    api: AgentApi,
    resp: httpx.Response,
    rlog: RequestLog,
    *,
    native: bool,
    body: Mapping[str, Any],
) -> Response:
    requested: str = body["model"]
    transform: NativeStream | TranslatedStream = (
        api.native_stream(requested, body) if native else api.translated_stream(requested, body)
    )
    rlog.status = resp.status_code

    def done() -> None:
        rlog.usage = transform.usage
        rlog.upstream_model = transform.model or rlog.upstream_model
        if transform.error and rlog.error is None:
            rlog.error = transform.error
        rlog.finish()
        svc.report(rlog)

    stream = relay_stream(svc.spawn, resp, transform, rlog, keepalive=svc.keepalive(), on_done=done)
    return sse_response(stream, resp.status_code)


# ---------------------------------------------------------------------------
# count_tokens and embeddings
# ---------------------------------------------------------------------------


def tokenizer_for(route: Route) -> str | None:
    """The model's own tokenizer from ``/models`` when an account lists one."""
    for st in route.candidates:
        caps = capabilities(st, route.model)
        tok = caps.get("tokenizer") if caps else None
        if isinstance(tok, str) and tok:
            return tok
    return None


async def handle_count_tokens(svc: Services) -> Response:
    """``{"input_tokens": N}`` counted offline; no upstream call, no ledger row."""
    from tokn_router.wire.translate.tokens import DEFAULT_TOKENIZER, count_tokens

    cfg = svc.config()
    try:
        if not from_proxy():
            check_route_mode(cfg.server.route_mode)
        body = await read_json_body(cfg.server.max_body_bytes)
        # the same validation as /v1/messages, minus max_tokens (not part of this API)
        messages_to_chat({**body, "max_tokens": 1})
        check_message_blocks(body)
        route = await _route(svc, body["model"])
        tokenizer = tokenizer_for(route) or DEFAULT_TOKENIZER
        # in a worker thread: the first call loads the vocabulary (~0.5 s) and a
        # large request takes milliseconds of CPU; neither may stall other streams
        n = await trio.to_thread.run_sync(count_tokens, body, tokenizer)
    except (ApiError, TranslationError) as e:
        headers = e.headers if isinstance(e, ApiError) else None
        return error_response("anthropic", e.status, e.message, headers=headers)
    return Response(_encode({"input_tokens": n}), status=200, content_type=JSON)


async def handle_embeddings(svc: Services) -> Response:
    """Forwarded to upstream ``/embeddings`` unchanged except the model id."""
    cfg = svc.config()
    rlog = new_log("/v1/embeddings")
    try:
        body, model = await read_model_request(cfg, rlog)
        rlog.model = model
        inp = body.get("input")
        if not (isinstance(inp, str) and inp) and not (isinstance(inp, list) and inp):
            raise ApiError(
                400,
                "missing required field 'input' (a string or a non-empty list)",
                code="missing_field",
                param="input",
            )
        route = await _route(svc, model)
        rlog.upstream_model = route.model
        header_initiator = request.headers.get("x-initiator")

        def build(st: AccountState, token: str) -> tuple[bytes, dict[str, str]]:
            # never a user prompt: "agent" unless the client or the account says otherwise
            initiator = resolve_initiator(
                header_initiator, st.account.settings.initiator_mode, "agent"
            )
            rlog.initiator = initiator
            # the intent VS Code sends for embeddings (protocol reference §6)
            info = RequestInfo(rlog.request_id, initiator=initiator, intent="copilot-panel")
            headers = st.provider.headers(st.account, token, info)
            headers["Content-Type"] = JSON
            headers["Accept"] = JSON
            return _encode({**body, "model": route.model}), headers

        opened = await svc.relay.open(route, "/embeddings", build, rlog)
    except ApiError as e:
        return reject(svc, rlog, e)
    rlog.account_id = opened.state.id
    rlog.provider_id = opened.state.provider.id
    return await _relay_whole(svc, opened.response, rlog)


# ---------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------


def register(app: Any, svc: Services) -> None:
    """Add the agent API routes to the app (``/v1`` paths and their bare aliases)."""

    @app.post("/v1/messages")
    @app.post("/messages")
    async def messages() -> Response:
        try:
            return await handle_agent(svc, MESSAGES)
        except HTTPException:
            raise  # Quart's own (timeouts, …): its status is right
        except Exception as e:  # Claude Code reads only the Anthropic shape
            log.exception("internal error on %s", request.path)
            return error_response("anthropic", 500, f"internal error: {type(e).__name__}")

    @app.post("/v1/messages/count_tokens")
    @app.post("/messages/count_tokens")
    async def messages_count_tokens() -> Response:
        try:
            return await handle_count_tokens(svc)
        except HTTPException:
            raise
        except Exception as e:
            log.exception("internal error on %s", request.path)
            return error_response("anthropic", 500, f"internal error: {type(e).__name__}")

    @app.post("/v1/responses")
    @app.post("/responses")
    async def responses() -> Response:
        return await handle_agent(svc, RESPONSES)

    @app.post("/v1/embeddings")
    @app.post("/embeddings")
    async def embeddings() -> Response:
        return await handle_embeddings(svc)

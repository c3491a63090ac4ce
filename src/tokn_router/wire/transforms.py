"""Sans-I/O transforms of upstream answer bodies into client bodies.

A *stream transform* is fed the upstream SSE bytes as they arrive and returns
the bytes for the client; on the side it collects what the ledger needs
(usage, upstream model, an error). :mod:`tokn_router.serve.pump` drives it:

- :class:`ChatTransform`: chat completions pass through unchanged (maybe minus
  the usage-only chunk the client did not ask for);
- :class:`NativeMessagesStream` / :class:`NativeResponsesStream`: an agent API
  body relayed byte for byte, its events scanned for usage and its end;
- :class:`TranslatedStream`: a chat-completions body translated event by event
  into the agent API's events.

A *whole transform* does the same for an answer that is not streamed
(:class:`ChatWhole`, :class:`NativeWhole`, :class:`TranslatedWhole`).

Every transform also reads what the request cost when upstream says so
(``copilot_usage``, see :mod:`tokn_router.wire.usage`); it comes back in
:attr:`~tokn_router.wire.usage.TokenUsage.nano_aiu` of ``usage``, the
translated paths included (the chat answer's cost is the request's cost).

It is one module of over 400 lines because every transform is a small class over the
same scanner plumbing, and they are meant to be compared.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

from tokn_router.errors import TranslationError
from tokn_router.wire.errors import anthropic_error, error_body
from tokn_router.wire.sse import (
    ChatStreamRelay,
    ChunkReader,
    EventScanner,
    completion_decoder,
    sse_event,
)
from tokn_router.wire.translate import ChatToMessagesStream, ChatToResponsesStream
from tokn_router.wire.translate.responses import response_object
from tokn_router.wire.usage import (
    TokenUsage,
    UsageMerger,
    chat_usage,
    copilot_nano_aiu,
    from_chat,
    nano_aiu_json,
    responses_usage,
    with_nano_aiu,
)

_decode = msgspec.json.decode
_INCOMPLETE = "upstream stream ended before the response was complete"


class StreamTransform(Protocol):
    """Turns upstream body bytes into client bytes."""

    @property
    def first_content(self) -> bool:
        """True once content (not just preamble) went through: time to first token."""
        ...

    @property
    def usage(self) -> TokenUsage | None: ...

    @property
    def model(self) -> str | None: ...

    @property
    def error(self) -> str | None:
        """What went wrong upstream mid-stream, for the ledger (None if nothing)."""
        ...

    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def fail(self, message: str) -> bytes:
        """Bytes that tell the client the stream broke (an error event)."""
        ...


class ChatTransform:
    """Chat-completions SSE passes through unchanged (maybe minus the usage chunk)."""

    def __init__(self, *, drop_usage_chunk: bool) -> None:
        self.relay = ChatStreamRelay(drop_usage_chunk=drop_usage_chunk)

    @property
    def first_content(self) -> bool:
        return self.relay.first_content

    @property
    def usage(self) -> TokenUsage | None:
        return with_nano_aiu(from_chat(self.relay.usage), nano_aiu_json(self.relay.copilot_usage))

    @property
    def model(self) -> str | None:
        return self.relay.model

    @property
    def error(self) -> str | None:
        err = self.relay.error
        if err is None:
            return None
        return "upstream error mid-stream: " + err.decode("utf-8", "replace")[:300]

    def feed(self, data: bytes) -> bytes:
        return self.relay.feed(data)

    def flush(self) -> bytes:
        return self.relay.flush()

    def fail(self, message: str) -> bytes:
        return b"data: " + error_body(502, message, code="upstream_stream_error") + b"\n\n"


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        obj = _decode(payload)
    except msgspec.DecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


class NativeStream:
    """A native SSE body relayed byte for byte; events scanned for usage and the end.

    Subclasses read their API's events. A body that ends without the API's
    terminal event (or dies mid-way) gets one error event of the API appended,
    so a truncated answer never passes for a complete one.
    """

    def __init__(self) -> None:
        self._scanner = EventScanner()
        self.first_content = False
        self.tokens: TokenUsage | None = None
        self.nano_aiu: int | None = None  # the cost, from any decoded event that carries it
        self.model: str | None = None
        self.error: str | None = None
        self.events = 0
        self._terminal = False  # the API's last event (or its own error event) went through

    @property
    def usage(self) -> TokenUsage | None:
        return with_nano_aiu(self.tokens, self.nano_aiu)

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
            obj = _json_object(payload)
        else:
            # data-only events: the type is inside the JSON
            obj = _json_object(payload)
            t = obj.get("type")
            kind = t if isinstance(t, str) else ""
        if obj:
            n = copilot_nano_aiu(obj)
            if n is not None:
                self.nano_aiu = n
        self._saw(kind, obj)

    def _wanted(self, kind: str) -> bool:
        """Whether this event's JSON must be decoded (deltas are not)."""
        raise NotImplementedError

    def _saw(self, kind: str, obj: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def _error_event(self, message: str) -> bytes:
        raise NotImplementedError


class NativeMessagesStream(NativeStream):
    # message_stop too: the one event after the usage, where a cost may also come
    _WANTED = frozenset({"message_start", "message_delta", "message_stop", "error"})

    def __init__(self) -> None:
        super().__init__()
        self._usage = UsageMerger()

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
                    self._usage.add(msg["usage"])
                    self.tokens = self._usage.usage()
        elif kind == "message_delta":
            # output_tokens is final here; newer upstreams repeat the input side too
            u = obj.get("usage")
            if isinstance(u, dict):
                self._usage.add(u)
                self.tokens = self._usage.usage()
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
            created = resp.get("created_at")
            self._created = created if isinstance(created, int) else 0
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._terminal = True
            self.tokens = responses_usage(resp.get("usage")) or self.tokens
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
    """A chat-completions SSE body translated event by event.

    The chunks are read here and fed to the translator one by one, so the cost
    a chunk carries (``copilot_usage``, often in a chunk of its own after the
    usage, which the translator does not look at) is seen too.
    """

    def __init__(self, translator: Translator, error_event: bytes) -> None:
        self.t = translator
        self._reader = ChunkReader()
        self._error_prefix = b"event: " + error_event + b"\n"
        self.error: str | None = None
        self.nano_aiu: int | None = None

    @property
    def first_content(self) -> bool:
        return bool(self.t.blocks)

    @property
    def usage(self) -> TokenUsage | None:
        u = self.t.usage
        if u is None:
            return with_nano_aiu(None, self.nano_aiu)
        return TokenUsage(
            input=u.prompt,
            output=u.completion,
            cache_read=u.cached,
            reasoning=u.reasoning,
            nano_aiu=self.nano_aiu,
        )

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

    def _feed(self, chunks: list[dict[str, Any]]) -> list[bytes]:
        out: list[bytes] = []
        for chunk in chunks:
            n = copilot_nano_aiu(chunk)
            if n is not None:
                self.nano_aiu = n
            out += self.t.feed(chunk)
        return out

    def feed(self, data: bytes) -> bytes:
        return self._out(self._feed(self._reader.feed(data)))

    def flush(self) -> bytes:
        out = self._feed(self._reader.close())
        if not self.t.ended and not self._reader.done and self.t.finish_reason is None:
            # neither [DONE] nor a finish_reason: cut off, not complete
            return self._out(out + self.t.error(_INCOMPLETE))
        return self._out(out + self.t.finish())

    def fail(self, message: str) -> bytes:
        return self._out(self.t.error(message))


# ---------------------------------------------------------------- whole bodies


class WholeTransform(Protocol):
    """Turns a complete upstream answer body into the client's body."""

    usage: TokenUsage | None
    model: str | None
    content_type: str | None  # None: the upstream's content type stays

    def convert(self, data: bytes) -> bytes:
        """The client body; TranslationError (502) when the answer is unusable."""
        ...


class ChatWhole:
    """A chat completion (or embeddings answer) relayed as is; usage read on the side."""

    content_type: str | None = None

    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.model: str | None = None

    def convert(self, data: bytes) -> bytes:
        try:
            parsed = completion_decoder.decode(data)
        except msgspec.DecodeError:
            return data  # relayed as is: the client may make sense of it
        self.usage = with_nano_aiu(from_chat(parsed.usage), nano_aiu_json(parsed.copilot_usage))
        self.model = parsed.model
        return data


class NativeWhole:
    """An agent API answer relayed as is; its own usage shape read on the side."""

    content_type: str | None = None

    def __init__(self, usage_of: Callable[[Any], TokenUsage | None]) -> None:
        self._usage_of = usage_of
        self.usage: TokenUsage | None = None
        self.model: str | None = None

    def convert(self, data: bytes) -> bytes:
        try:
            parsed = _decode(data)
        except msgspec.DecodeError:
            return data  # relayed as is: the client may make sense of it
        if isinstance(parsed, dict):
            self.usage = with_nano_aiu(
                self._usage_of(parsed.get("usage")), copilot_nano_aiu(parsed)
            )
            if isinstance(parsed.get("model"), str):
                self.model = parsed["model"]
        return data


class TranslatedWhole:
    """A chat completion translated into the agent API's answer."""

    content_type: str | None = "application/json"

    def __init__(self, translate: Callable[[Mapping[str, Any]], Mapping[str, Any]]) -> None:
        self._translate = translate
        self.usage: TokenUsage | None = None
        self.model: str | None = None

    def convert(self, data: bytes) -> bytes:
        try:
            chat = _decode(data)
        except msgspec.DecodeError:
            raise TranslationError(
                "upstream answered with malformed JSON", status=502, code="upstream_error"
            ) from None
        if not isinstance(chat, dict):
            raise TranslationError(
                "upstream answer is not a JSON object", status=502, code="upstream_error"
            )
        self.usage = with_nano_aiu(chat_usage(chat.get("usage")), copilot_nano_aiu(chat))
        if isinstance(chat.get("model"), str) and chat["model"]:
            self.model = chat["model"]
        return msgspec.json.encode(self._translate(chat))


__all__ = [
    "ChatTransform",
    "ChatWhole",
    "NativeMessagesStream",
    "NativeResponsesStream",
    "NativeStream",
    "NativeWhole",
    "StreamTransform",
    "TranslatedStream",
    "TranslatedWhole",
    "Translator",
    "WholeTransform",
]

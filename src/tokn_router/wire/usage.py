"""The one usage normaliser: every API's ``usage`` object → :class:`TokenUsage`.

Our clients meet three usage shapes:

- Chat Completions: ``prompt_tokens`` (cached ones included) with
  ``prompt_tokens_details.cached_tokens``, ``completion_tokens`` with
  ``completion_tokens_details.reasoning_tokens``;
- Responses: the same numbers as ``input_tokens`` / ``output_tokens`` and
  ``input_tokens_details`` / ``output_tokens_details``;
- Anthropic Messages: ``input_tokens`` counts only the prompt tokens that were
  neither read from nor written to the prompt cache; ``cache_read_input_tokens``
  and ``cache_creation_input_tokens`` hold the others. Streams split it:
  ``message_start`` carries the input side, ``message_delta`` the output (newer
  upstreams repeat the input side there).

The ledger's reading is the same for all three: ``input`` is every prompt token
the model processed, cached ones included, so that input totals compare across
APIs and providers; ``cache_read`` and ``cache_write`` say which part of it came
from or went into the prompt cache. For Anthropic usage ``{input_tokens 10,
cache_read_input_tokens 100, cache_creation_input_tokens 1000}`` that is
``input 1110, cache_read 100, cache_write 1000``.

Copilot also says what a request cost: ``copilot_usage.total_nano_aiu`` (AI
credits in billionths; 1 credit = 1e9 nano-AIU = $0.01). It sits beside
``usage``, not inside it: at the top level of a chat completion or chunk (often
a chunk of its own after the usage chunk), of a Responses event such as
``response.completed`` or of a whole answer, and on a Messages stream's
``message_delta`` (or inside ``message_start``'s ``message``).
:func:`copilot_nano_aiu` reads it wherever it is; :attr:`TokenUsage.nano_aiu`
carries it to the ledger.

:class:`UsageSniffer` reads usage out of an answer we only relay (the MITM
proxy's passthrough and switch modes); the agent handlers call the per-API
functions directly. Best effort: an answer that cannot be read has no usage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from tokn_router.wire.sse import EventScanner, Usage

_MAX_JSON = 16 * 1024 * 1024


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts as the ledger stores them; None means upstream did not say."""

    input: int | None = None  # every prompt token, cached (read or written) included
    output: int | None = None
    cache_read: int | None = None  # part of input read from the prompt cache
    cache_write: int | None = None  # part of input written to the prompt cache
    reasoning: int | None = None  # part of output spent on reasoning
    nano_aiu: int | None = None  # what upstream billed (copilot_usage.total_nano_aiu)


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return int(v)


def _detail(obj: Mapping[str, Any], holder: str, key: str) -> int | None:
    d = obj.get(holder)
    return _int(d.get(key)) if isinstance(d, Mapping) else None


def anthropic_usage(u: Any) -> TokenUsage | None:
    """Messages usage: ``input_tokens`` excludes cache reads and cache writes."""
    if not isinstance(u, Mapping):
        return None
    inp = _int(u.get("input_tokens"))
    read = _int(u.get("cache_read_input_tokens"))
    write = _int(u.get("cache_creation_input_tokens"))
    known = [n for n in (inp, read, write) if n is not None]
    return TokenUsage(
        input=sum(known) if known else None,
        output=_int(u.get("output_tokens")),
        cache_read=read,
        cache_write=write,
    )


def responses_usage(u: Any) -> TokenUsage | None:
    """Responses usage: ``input_tokens`` already includes the cached ones."""
    if not isinstance(u, Mapping):
        return None
    return TokenUsage(
        input=_int(u.get("input_tokens")),
        output=_int(u.get("output_tokens")),
        cache_read=_detail(u, "input_tokens_details", "cached_tokens"),
        reasoning=_detail(u, "output_tokens_details", "reasoning_tokens"),
    )


def chat_usage(u: Any) -> TokenUsage | None:
    """Chat-completions usage as decoded JSON: ``prompt_tokens`` includes cached ones."""
    if not isinstance(u, Mapping):
        return None
    return TokenUsage(
        input=_int(u.get("prompt_tokens")),
        output=_int(u.get("completion_tokens")),
        cache_read=_detail(u, "prompt_tokens_details", "cached_tokens"),
        reasoning=_detail(u, "completion_tokens_details", "reasoning_tokens"),
    )


def from_chat(u: Usage | None) -> TokenUsage | None:
    """Chat-completions usage as :mod:`tokn_router.wire.sse` decodes it."""
    if u is None:
        return None
    return TokenUsage(
        input=u.prompt_tokens,
        output=u.completion_tokens,
        cache_read=u.cached_tokens,
        reasoning=u.reasoning_tokens,
    )


def _nano_of(cu: Any) -> int | None:
    if not isinstance(cu, Mapping):
        return None
    n = cu.get("total_nano_aiu")
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n < 0:
        return None
    return round(n)


def copilot_nano_aiu(obj: Any) -> int | None:
    """``copilot_usage.total_nano_aiu`` of a body or event, or None.

    Looked up at the top level, then inside a ``response`` (Responses events) or
    ``message`` (Messages ``message_start``) envelope.
    """
    if not isinstance(obj, Mapping):
        return None
    n = _nano_of(obj.get("copilot_usage"))
    if n is not None:
        return n
    for key in ("response", "message"):
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            n = _nano_of(inner.get("copilot_usage"))
            if n is not None:
                return n
    return None


def nano_aiu_json(raw: bytes | None) -> int | None:
    """:func:`copilot_nano_aiu` of a raw ``copilot_usage`` JSON value (the chat relay's)."""
    if not raw:
        return None
    try:
        return _nano_of(msgspec.json.decode(raw))
    except msgspec.DecodeError:
        return None


def with_nano_aiu(u: TokenUsage | None, nano_aiu: int | None) -> TokenUsage | None:
    """``u`` carrying ``nano_aiu`` (a bare cost when upstream sent no token counts)."""
    if nano_aiu is None:
        return u
    if u is None:
        return TokenUsage(nano_aiu=nano_aiu)
    return msgspec.structs.replace(u, nano_aiu=nano_aiu)


def usage_from(u: Any) -> TokenUsage | None:
    """Normalise one ``usage`` object of any of the three APIs (told apart by its keys)."""
    if not isinstance(u, Mapping):
        return None
    if "prompt_tokens" in u or "completion_tokens" in u:
        return chat_usage(u)
    if "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:
        return anthropic_usage(u)
    if "input_tokens" in u or "output_tokens" in u:
        # Responses, or Anthropic without cache fields: the two readings agree then
        return responses_usage(u)
    return None


class UsageMerger:
    """Usage reported in parts (Anthropic streams): later non-null fields win.

    The cost (:func:`copilot_nano_aiu`) is noted apart: it is not a ``usage`` field.
    """

    __slots__ = ("_raw", "nano_aiu")

    def __init__(self) -> None:
        self._raw: dict[str, Any] = {}
        self.nano_aiu: int | None = None

    def add(self, u: Any) -> None:
        if isinstance(u, Mapping):
            self._raw.update({k: v for k, v in u.items() if v is not None})

    def note_cost(self, obj: Any) -> None:
        """Keep the cost ``obj`` (a body or an event) carries, if any; the last one wins."""
        n = copilot_nano_aiu(obj)
        if n is not None:
            self.nano_aiu = n

    def usage(self) -> TokenUsage | None:
        return with_nano_aiu(usage_from(self._raw) if self._raw else None, self.nano_aiu)


class UsageSniffer:
    """Fed the relayed body; :meth:`finish` returns ``(usage, model)``."""

    def __init__(self, content_type: str) -> None:
        self.sse = "event-stream" in content_type.lower()
        self.json = "json" in content_type.lower()
        self._scanner = EventScanner() if self.sse else None
        self._body = bytearray()
        self._usage = UsageMerger()
        self.model: str | None = None

    def feed(self, data: bytes) -> None:
        if self._scanner is not None:
            for _, payload in self._scanner.feed(data):
                self._event(payload)
        elif self.json and len(self._body) < _MAX_JSON:
            self._body += data

    def finish(self) -> tuple[TokenUsage | None, str | None]:
        if self._scanner is not None:
            for _, payload in self._scanner.flush():
                self._event(payload)
        elif self._body:
            self._object(bytes(self._body))
        return self._usage.usage(), self.model

    def _event(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            return
        self._object(payload)

    def _object(self, payload: bytes) -> None:
        try:
            obj = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(obj, dict):
            return
        holder = obj
        for key in ("response", "message"):  # Responses / Messages stream envelopes
            inner = obj.get(key)
            if isinstance(inner, dict):
                holder = inner
                break
        model = holder.get("model")
        if isinstance(model, str) and model and not self.model:
            self.model = model
        u = holder.get("usage")
        self._usage.add(u if isinstance(u, dict) else obj.get("usage"))
        self._usage.note_cost(obj)


__all__ = [
    "TokenUsage",
    "UsageMerger",
    "UsageSniffer",
    "anthropic_usage",
    "chat_usage",
    "copilot_nano_aiu",
    "from_chat",
    "nano_aiu_json",
    "responses_usage",
    "usage_from",
    "with_nano_aiu",
]

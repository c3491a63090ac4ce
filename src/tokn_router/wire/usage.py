"""Reading token usage out of an answer we only relay (MITM passthrough/switch).

Knows the three usage shapes our clients meet: Chat Completions
(``prompt_tokens``…), Responses (``input_tokens`` + details, inside
``response`` on stream events) and Anthropic Messages (``input_tokens``
excluding cached + ``cache_read_input_tokens``; output in ``message_delta``).
Everything is normalised to :class:`tokn_router.wire.sse.Usage` (prompt tokens
include cached ones). Best effort: an answer it cannot read has no usage.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tokn_router.wire.sse import EventScanner, Usage, _CompletionDetails, _PromptDetails

_MAX_JSON = 16 * 1024 * 1024


def usage_from(obj: Any) -> Usage | None:
    """Normalise one ``usage`` object of any of the three APIs."""
    if not isinstance(obj, dict):
        return None

    def num(key: str, src: dict[str, Any] = obj) -> int | None:
        v = src.get(key)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    if "prompt_tokens" in obj or "completion_tokens" in obj:
        ptd = obj.get("prompt_tokens_details") or {}
        ctd = obj.get("completion_tokens_details") or {}
        return Usage(
            prompt_tokens=num("prompt_tokens"),
            completion_tokens=num("completion_tokens"),
            total_tokens=num("total_tokens"),
            prompt_tokens_details=_PromptDetails(num("cached_tokens", ptd))
            if isinstance(ptd, dict)
            else None,
            completion_tokens_details=_CompletionDetails(num("reasoning_tokens", ctd))
            if isinstance(ctd, dict)
            else None,
        )
    if "cache_read_input_tokens" in obj or "cache_creation_input_tokens" in obj:
        # Anthropic: input_tokens excludes cached tokens
        cached = num("cache_read_input_tokens") or 0
        inp = num("input_tokens")
        return Usage(
            prompt_tokens=(inp or 0) + cached if inp is not None or cached else None,
            completion_tokens=num("output_tokens"),
            prompt_tokens_details=_PromptDetails(cached),
        )
    if "input_tokens" in obj or "output_tokens" in obj:
        itd = obj.get("input_tokens_details") or {}
        otd = obj.get("output_tokens_details") or {}
        return Usage(
            prompt_tokens=num("input_tokens"),
            completion_tokens=num("output_tokens"),
            total_tokens=num("total_tokens"),
            prompt_tokens_details=_PromptDetails(num("cached_tokens", itd))
            if isinstance(itd, dict)
            else None,
            completion_tokens_details=_CompletionDetails(num("reasoning_tokens", otd))
            if isinstance(otd, dict)
            else None,
        )
    return None


def _merge(old: Usage | None, new: Usage) -> Usage:
    """Anthropic streams split usage: input in message_start, output in message_delta."""
    if old is None:
        return new
    return Usage(
        prompt_tokens=new.prompt_tokens if new.prompt_tokens is not None else old.prompt_tokens,
        completion_tokens=new.completion_tokens
        if new.completion_tokens is not None
        else old.completion_tokens,
        total_tokens=new.total_tokens if new.total_tokens is not None else old.total_tokens,
        prompt_tokens_details=new.prompt_tokens_details or old.prompt_tokens_details,
        completion_tokens_details=new.completion_tokens_details or old.completion_tokens_details,
    )


class UsageSniffer:
    """Fed the relayed body; :meth:`finish` returns ``(usage, model)``."""

    def __init__(self, content_type: str) -> None:
        self.sse = "event-stream" in content_type.lower()
        self.json = "json" in content_type.lower()
        self._scanner = EventScanner() if self.sse else None
        self._body = bytearray()
        self.usage: Usage | None = None
        self.model: str | None = None

    def feed(self, data: bytes) -> None:
        if self._scanner is not None:
            for _, payload in self._scanner.feed(data):
                self._event(payload)
        elif self.json and len(self._body) < _MAX_JSON:
            self._body += data

    def finish(self) -> tuple[Usage | None, str | None]:
        if self._scanner is not None:
            for _, payload in self._scanner.flush():
                self._event(payload)
        elif self._body:
            self._object(bytes(self._body))
        return self.usage, self.model

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
        found = usage_from(holder.get("usage")) or usage_from(obj.get("usage"))
        if found is not None:
            self.usage = _merge(self.usage, found)

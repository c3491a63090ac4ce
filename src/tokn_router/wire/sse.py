"""Sans-I/O Server-Sent Events: the one framer and the one encoder.

Framing: :func:`_event_end` finds where an event ends in a byte buffer (a blank
line after LF or CRLF line ends) and :func:`_data_payload` joins its ``data:``
lines. Every reader is built on them:

* :class:`ChatStreamRelay` relays an upstream chat-completions body and extracts
  what the ledger needs on the side;
* :class:`EventScanner` yields ``(event name, data)`` of any SSE stream (native
  Responses / Messages streams, read for usage);
* :class:`ChunkReader` decodes upstream chat chunks for the translators.

Encoding: :func:`sse_event` writes one event (translated streams, error events).

:class:`ChatStreamRelay` is fed the upstream body bytes exactly as they arrive
and returns the bytes to forward to the client. It never re-encodes an event:
forwarded bytes are slices of what upstream sent. On the side it extracts what
the ledger needs (usage, upstream model, an error payload) by decoding only the
``data:`` lines with msgspec.

The one transformation it may apply is dropping the usage-only chunk
(``choices: []`` with a ``usage`` object) when the client did not ask for
usage: upstream is always asked for it so every stream is metered. To drop an
event its end must be known, so in that mode an incomplete trailing event is
held until its terminating blank line arrives; complete events are never held.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None

    @property
    def cached_tokens(self) -> int | None:
        d = self.prompt_tokens_details
        return d.cached_tokens if d else None

    @property
    def reasoning_tokens(self) -> int | None:
        d = self.completion_tokens_details
        return d.reasoning_tokens if d else None


class _Chunk(msgspec.Struct):
    model: str | None = None
    usage: Usage | None = None
    choices: list[msgspec.Raw] | None = None
    error: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    # Copilot's cost, beside usage; raw so an odd shape cannot cost the chunk's usage
    copilot_usage: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class ChatCompletion(msgspec.Struct):
    """The fields of a non-streamed chat completion the ledger reads."""

    model: str | None = None
    usage: Usage | None = None
    copilot_usage: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_chunk_decoder = msgspec.json.Decoder(_Chunk)
completion_decoder = msgspec.json.Decoder(ChatCompletion)


def _event_end(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """Find the next blank line at or after ``start``: (index, length) or (-1, 0).

    The terminator is the last line's end plus the blank line: ``\n\n``,
    ``\r\n\r\n``, or a mix (``\r\n\n`` is found as ``\n\n`` and leaves a
    ``\r`` in the event, which readers ignore; ``\n\r\n``). Linear overall:
    the search for ``\n\r\n`` is bounded by the ``\n\n`` hit, so a buffer
    holding many LF-framed events is not rescanned to its end per event. A
    CRLF-framed stream has no ``\n\n`` and falls back to one unbounded search;
    such streams are rare (none of our upstreams).
    """
    lf = buf.find(b"\n\n", start)
    cr = buf.find(b"\n\r\n", start) if lf == -1 else buf.find(b"\n\r\n", start, lf + 2)
    if cr == -1:
        return (lf, 2) if lf != -1 else (-1, 0)
    # a CRLF-ended last line: the terminator starts at its \r
    if cr > start and buf[cr - 1] == 0x0D:
        return cr - 1, 4
    return cr, 3


def _data_payload(event: bytes) -> bytes | None:
    """The joined ``data:`` field of one event (None when it has none)."""
    if event.startswith(b"data:") and b"\ndata:" not in event:
        # the common case: one data line (maybe followed by \r)
        payload = event[5:]
        nl = payload.find(b"\n")
        if nl != -1:
            payload = payload[:nl]
        return payload.strip()
    parts: list[bytes] = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            parts.append(line[5:].lstrip(b" ") if line[5:6] == b" " else line[5:])
    return b"\n".join(parts).strip() if parts else None


_encode = msgspec.json.encode


def sse_event(event: str | None, data: Any) -> bytes:
    """One event: ``event: <event>`` (when given) and ``data: <json>``, then a blank line.

    ``data`` is encoded as JSON, unless it is ``bytes``: then it is JSON already
    (an error body built elsewhere). JSON never holds a raw newline, so one
    ``data:`` line carries it.
    """
    payload = data if isinstance(data, bytes) else _encode(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


class ChatStreamRelay:
    """Relay one upstream chat-completions SSE body; extract usage on the side."""

    __slots__ = (
        "_buf",
        "_drop_usage",
        "copilot_usage",
        "done",
        "error",
        "events",
        "first_content",
        "model",
        "usage",
    )

    def __init__(self, *, drop_usage_chunk: bool) -> None:
        self._drop_usage = drop_usage_chunk
        self._buf = bytearray()
        self.usage: Usage | None = None
        self.copilot_usage: bytes | None = None  # raw JSON of the last copilot_usage seen
        self.model: str | None = None
        self.error: bytes | None = None  # raw JSON of a mid-stream {"error": ...}
        self.done = False  # saw `data: [DONE]`
        self.events = 0
        self.first_content = False  # set once an event with choices has passed

    def feed(self, data: bytes) -> bytes:
        """Take upstream bytes; return the bytes to send to the client now."""
        if not self._buf and not self._drop_usage and b"\r" not in data:
            # The common case (Copilot, Z.ai): LF-framed events, nothing held and
            # nothing to drop. Scan ``data`` in place: no copy into the buffer and
            # no slice per event (half of this method's cost per event).
            find = data.find
            pos = 0
            while True:
                end = find(b"\n\n", pos)
                if end == -1:
                    break
                if data.startswith(b"data:", pos) and find(b"\n", pos, end) == -1:
                    self._inspect_payload(data[pos + 5 : end].strip())
                else:
                    self._inspect(data[pos:end])
                pos = end + 2
            if pos < len(data):
                self._buf += data[pos:]  # forwarded now, kept to finish its inspection
            return data
        buf = self._buf
        buf += data
        pos = 0
        drops: list[tuple[int, int]] = []
        while True:
            end, sep = _event_end(buf, pos)
            if end == -1:
                break
            if self._inspect(bytes(buf[pos:end])):
                drops.append((pos, end + sep))
            pos = end + sep
        if not self._drop_usage:
            # Nothing is ever removed: forward the new bytes as they are and
            # keep only the incomplete tail for inspection.
            del buf[:pos]
            return data
        if drops:
            pieces: list[bytes] = []
            cur = 0
            for a, b in drops:
                pieces.append(bytes(buf[cur:a]))
                cur = b
            pieces.append(bytes(buf[cur:pos]))
            out = b"".join(pieces)
        else:
            out = bytes(buf[:pos])
        del buf[:pos]
        return out

    def flush(self) -> bytes:
        """End of upstream body: return any held bytes (an unterminated event)."""
        tail = bytes(self._buf)
        self._buf.clear()
        if tail.strip():
            self._inspect(tail)
        return tail if self._drop_usage else b""

    def _inspect(self, event: bytes) -> bool:
        """Extract side information; True when the event must be dropped."""
        payload = _data_payload(event)
        if payload is None:
            return False
        return self._inspect_payload(payload)

    def _inspect_payload(self, payload: bytes) -> bool:
        if not payload:
            return False
        self.events += 1
        if payload == b"[DONE]":
            self.done = True
            return False
        try:
            chunk = _chunk_decoder.decode(payload)
        except msgspec.DecodeError:
            return False
        if chunk.model and not self.model:
            self.model = chunk.model
        if chunk.error and bytes(chunk.error) != b"null":
            self.error = bytes(chunk.error)
        if chunk.choices:
            self.first_content = True
        if chunk.copilot_usage and bytes(chunk.copilot_usage) != b"null":
            self.copilot_usage = bytes(chunk.copilot_usage)
        if chunk.usage is not None:
            self.usage = chunk.usage
            return self._drop_usage and not chunk.choices
        return False


def _event_name(event: bytes) -> bytes | None:
    if not event.startswith(b"event:") and b"\nevent:" not in event:
        return None
    for line in event.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip()
    return None


class EventScanner:
    """Split an SSE byte stream into complete events: ``(event name, data payload)``.

    Fed the bytes as they arrive (any split); used to read usage out of
    native Responses / Messages streams that are otherwise relayed unchanged.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes | None, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[bytes | None, bytes]] = []
        pos = 0
        while True:
            end, sep = _event_end(buf, pos)
            if end == -1:
                break
            event = bytes(buf[pos:end])
            payload = _data_payload(event)
            if payload:
                out.append((_event_name(event), payload))
            pos = end + sep
        del buf[:pos]
        return out

    def flush(self) -> list[tuple[bytes | None, bytes]]:
        tail = bytes(self._buf).strip()
        self._buf.clear()
        if not tail:
            return []
        payload = _data_payload(tail)
        return [(_event_name(tail), payload)] if payload else []


class ChunkReader:
    """Decoded upstream chat-completions chunks, for the translators.

    ``feed`` takes bytes as they arrive (split anywhere) and returns the chunk
    dicts completed so far; ``done`` turns true at ``data: [DONE]``. A ``data:``
    payload that is not JSON comes back as an ``{"error": ...}`` chunk, so a
    broken upstream ends the translated stream with an error instead of a
    silent truncation. Comments and other fields (``event:``, ``id:``) carry
    nothing for the translators and are skipped.
    """

    __slots__ = ("_scanner", "done")

    def __init__(self) -> None:
        self._scanner = EventScanner()
        self.done = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return self._decode(self._scanner.feed(data))

    def close(self) -> list[dict[str, Any]]:
        """End of body: an event left without its blank line still counts."""
        return self._decode(self._scanner.flush())

    def _decode(self, events: list[tuple[bytes | None, bytes]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _, payload in events:
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                obj = _decode_any(payload)
            except msgspec.DecodeError:
                snippet = payload[:200].decode("utf-8", "replace")
                out.append(
                    {"error": {"message": f"upstream sent malformed stream data: {snippet}"}}
                )
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


_decode_any = msgspec.json.decode

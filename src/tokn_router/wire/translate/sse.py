"""SSE framing for the translated streams and a tiny upstream ``data:`` splitter.

The product-level relay parser lives in ``tokn_router.wire.sse``; this module only
holds what the translators need: encoding one event, and turning upstream
chat-completions bytes (split anywhere) into decoded chunk dicts.
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def sse_event(event: str, data: Any) -> bytes:
    """``event: <event>\\ndata: <json>\\n\\n`` (JSON never contains a raw newline)."""
    return b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


class ChunkReader:
    """Incremental parser of an upstream chat-completions SSE body.

    ``feed`` takes bytes as they arrive and returns the chunk dicts completed so
    far; ``done`` turns true at ``data: [DONE]``. A ``data:`` payload that is
    not JSON comes back as an ``{"error": ...}`` chunk so that a broken upstream
    ends the translated stream with an error instead of a silent truncation.
    """

    __slots__ = ("_buf", "_data", "done")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self.done = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        buf = self._buf + data if self._buf else data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl == -1:
                break
            self._line(buf[start:nl], out)
            start = nl + 1
        self._buf = buf[start:]
        return out

    def close(self) -> list[dict[str, Any]]:
        """End of body: dispatch an event left without its blank line."""
        out: list[dict[str, Any]] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._dispatch(out)
        return out

    def _line(self, line: bytes, out: list[dict[str, Any]]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._dispatch(out)
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # comments (":") and other fields (event:, id:, retry:) carry nothing for us

    def _dispatch(self, out: list[dict[str, Any]]) -> None:
        if not self._data:
            return
        payload = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        payload = payload.strip()
        if not payload:
            return
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = _decode(payload)
        except msgspec.DecodeError:
            snippet = payload[:200].decode("utf-8", "replace")
            out.append({"error": {"message": f"upstream sent malformed stream data: {snippet}"}})
            return
        if isinstance(obj, dict):
            out.append(obj)

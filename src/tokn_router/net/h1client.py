"""The HTTP/1.1 client side of one exchange, shared by every place that speaks it.

Three callers: the upstream transport (``net/transport.py``), the MITM proxy's
forwarding of hosts it does not intercept (``edges/proxy/listener.py``,
``relay_request``) and the ``CONNECT`` handshake with an outbound HTTP proxy
(``net/tunnels.py``). Each keeps its own I/O policy (timeouts, retries, how errors
are reported); this module holds what they have in common:

* :func:`encode_request`: the request head (and an in-memory body) through h11;
* :func:`read_head`: feed received bytes to h11 until the final response head
  (1xx are skipped) and work out how the body is framed (RFC 9112 §6.3);
* :class:`BodyDecoder`: the body framing itself (Content-Length, chunked,
  read-until-close). h11's body path costs ~7 µs per chunked SSE event (a state
  machine round per chunk, several buffer copies); this decoder ~1.5 µs, and it
  joins every chunk of one receive into one piece instead of one event each.

Sans-I/O except :func:`read_head`, which awaits a ``receive`` callable so that
each caller can wrap its reads in the timeout and error mapping it needs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

import h11

__all__ = [
    "CHUNKED",
    "LENGTH",
    "NONE",
    "UNTIL_EOF",
    "BodyDecoder",
    "BodyError",
    "NoResponse",
    "ResponseHead",
    "encode_request",
    "read_head",
]

# Body framing.
NONE, LENGTH, CHUNKED, UNTIL_EOF = range(4)
# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)

# Limit on a chunk-size or trailer line.
MAX_LINE: Final = 4096

# chunk-size [ chunk-ext ] OWS, as lenient as h11 (which accepts trailing spaces).
_CHUNK_HEADER: Final = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*")


class NoResponse(Exception):
    """The server closed the connection before sending any response byte."""


class BodyError(Exception):
    """The response body broke its framing (bad chunk header, EOF too early)."""


def encode_request(
    h: h11.Connection,
    method: str | bytes,
    target: str | bytes,
    headers: list[tuple[bytes, bytes]] | list[tuple[str, str]],
    body: Iterable[bytes] | None = (),
) -> list[bytes]:
    """The bytes of a request head, then of ``body`` and its end (unless ``body`` is None).

    ``None`` leaves the message open: the caller streams the body with
    ``h.send(h11.Data(...))`` and ``h.send(h11.EndOfMessage())``.
    """
    head = h11.Request(method=method, target=target, headers=headers)
    out = h.send_with_data_passthrough(head) or []
    if body is not None:
        for chunk in body:
            if chunk:
                out += h.send_with_data_passthrough(h11.Data(data=chunk)) or ()
        out += h.send_with_data_passthrough(h11.EndOfMessage()) or ()
    return out


@dataclass(slots=True)
class ResponseHead:
    """The final response head and how its body is framed."""

    response: h11.Response
    framing: int  # NONE, LENGTH, CHUNKED or UNTIL_EOF
    length: int  # Content-Length (LENGTH only)
    reusable: bool  # keep-alive allowed once the body ended cleanly
    buffered: bytes  # body bytes that arrived together with the head

    @property
    def status(self) -> int:
        return self.response.status_code


async def read_head(
    h: h11.Connection, receive: Callable[[], Awaitable[bytes | bytearray]], method: str
) -> ResponseHead:
    """Feed ``receive()`` to ``h`` until the final response head arrives.

    ``method`` is the request's (upper-case): a HEAD or a successful CONNECT has
    no body. Raises :class:`NoResponse` when the server closes before sending a
    byte, ``h11.RemoteProtocolError`` for a malformed or truncated head.
    """
    received = False
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            data = await receive()
            if not data and not received:
                raise NoResponse("Server disconnected without sending a response.")
            received = True
            h.receive_data(data)  # type: ignore[arg-type]  # bytearray works too
        elif type(event) is h11.Response:
            break
        elif type(event) is h11.InformationalResponse:
            if event.status_code == 101:
                # Protocol switch: not supported beyond handing back the head; the
                # body is empty and the connection closes.
                break
            continue  # 100 Continue, 103 Early Hints: wait for the real one
        else:
            raise h11.RemoteProtocolError(f"unexpected {event!r} before the response head")

    status = event.status_code
    framing = UNTIL_EOF
    length = 0
    if (
        status < 200
        or status in (204, 304)
        or method == "HEAD"
        or (method == "CONNECT" and status < 300)
    ):
        framing = NONE
    else:
        # h11 has validated the headers: Transfer-Encoding can only be "chunked",
        # and repeated Content-Length values are merged into one.
        for name, value in event.headers:  # lowercased names
            if name == b"transfer-encoding":
                framing = CHUNKED
                break
            if name == b"content-length":
                framing = LENGTH
                length = int(value)
    # h11 moves our side to MUST_CLOSE when either side disabled keep-alive
    # (Connection: close, HTTP/1.0); DONE also means the request went out completely.
    reusable = h.our_state is h11.DONE and status != 101 and framing != UNTIL_EOF
    return ResponseHead(
        response=event,  # type: ignore[arg-type]  # a 101 InformationalResponse is a head too
        framing=framing,
        length=length,
        reusable=reusable,
        buffered=h.trailing_data[0],
    )


class BodyDecoder:
    """Body framing of one response: :meth:`feed` received bytes, get the body bytes.

    ``done`` turns true at the end of the body. ``reusable`` turns false when bytes
    follow the body (they belong to no response we sent) or the framing broke.
    A framing error after some data in the same :meth:`feed` is not raised there:
    the data is returned and the error kept in ``error`` for the caller to raise
    next, so what came before the damage is delivered.
    """

    __slots__ = (
        "_pending",
        "_received",
        "_remaining",
        "_state",
        "done",
        "error",
        "framing",
        "reusable",
    )

    def __init__(self, framing: int, length: int = 0) -> None:
        self.framing = framing
        # LENGTH: body bytes still due. CHUNKED: bytes left in the current chunk.
        self._remaining = length
        self._received = 0
        self._state = _SIZE
        # A partial chunk-size line or CRLF left over from the last feed.
        self._pending = b""
        self.done = framing == NONE or (framing == LENGTH and length == 0)
        self.reusable = True
        self.error: BodyError | None = None

    def feed(self, data: bytes) -> bytes:
        """The body bytes in ``data`` (not empty); sets ``done`` at the end of the body."""
        framing = self.framing
        if framing == CHUNKED:
            if self._pending:
                data = self._pending + data
                self._pending = b""
            return self._dechunk(data)
        if framing == LENGTH:
            size = len(data)
            remaining = self._remaining
            if size < remaining:
                self._remaining = remaining - size
                self._received += size
                return data
            if size > remaining:
                self.reusable = False  # bytes after the body: don't trust the connection
                data = data[:remaining]
            self._remaining = 0
            self.done = True
            return data
        if framing == NONE:
            self.reusable = False  # bytes where no body may be
            return b""
        return data  # UNTIL_EOF: everything until the server closes

    def eof(self) -> None:
        """The server closed the connection: fine only for a read-until-close body."""
        framing = self.framing
        if self.done:
            return
        if framing == UNTIL_EOF:
            self.done = True
            self.reusable = False  # the server closed it
            return
        if framing == LENGTH:
            raise BodyError(
                "peer closed connection without sending complete message body: "
                f"received {self._received} bytes, expected {self._received + self._remaining}"
            )
        raise BodyError(
            "peer closed connection without sending complete message body (incomplete chunked read)"
        )

    def _dechunk(self, buf: bytes) -> bytes:
        """Chunked transfer coding (RFC 9112 §7.1): the chunk data in ``buf``.

        An incomplete size line or CRLF at the end stays pending for the next feed.
        Raises :class:`BodyError` on bad framing, unless data came before it in
        ``buf``: then that data is returned first.
        """
        end = len(buf)
        pos = 0
        state = self._state
        remaining = self._remaining
        out: list[bytes] = []
        try:
            while pos < end:
                if state == _DATA:
                    stop = pos + remaining
                    if stop <= end:
                        out.append(buf[pos:stop])  # buf itself when it is exactly one chunk
                        pos = stop
                        state = _DATA_END
                    else:
                        out.append(buf[pos:])
                        remaining -= end - pos
                        pos = end
                elif state == _SIZE:
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if end - pos > MAX_LINE:
                            raise BodyError("chunk header too long")
                        break
                    line = buf[pos:eol]
                    # The common line is bare hex digits: int() without the regex
                    # (isalnum keeps out the signs, spaces and underscores int()
                    # would accept; a non-hex letter makes int() fail).
                    try:
                        if not (0 < len(line) <= 20 and line.isalnum()):
                            raise ValueError
                        remaining = int(line, 16)
                    except ValueError:
                        match = _CHUNK_HEADER.fullmatch(line)
                        if match is None:
                            raise BodyError(f"illegal chunk header: {line!r}") from None
                        remaining = int(match[1], 16)
                    pos = eol + 2
                    state = _DATA if remaining else _TRAILER
                elif state == _DATA_END:
                    if end - pos < 2:
                        break
                    if buf[pos] != 13 or buf[pos + 1] != 10:
                        raise BodyError(f"malformed chunk footer: {buf[pos : pos + 2]!r}")
                    pos += 2
                    state = _SIZE
                elif state == _TRAILER:
                    # Trailer fields are dropped (no caller has a use for them).
                    eol = buf.find(b"\r\n", pos)
                    if eol < 0:
                        if end - pos > MAX_LINE:
                            raise BodyError("chunked trailer line too long")
                        break
                    state = _DONE if eol == pos else _TRAILER
                    pos = eol + 2
                else:  # _DONE, yet more bytes: not part of this response
                    self.reusable = False
                    pos = end
        except BodyError as exc:
            if not out:
                self.reusable = False
                raise
            # Deliver the data before the damage; the error comes next.
            self.error = exc
            self.reusable = False
            state = _DONE
            pos = end
        self._state = state
        self._remaining = remaining
        if pos < end:
            self._pending = buf[pos:]
        if state == _DONE:
            self.done = True
            if pos < end:
                self.reusable = False
            self._pending = b""
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

"""The framework-neutral request/answer pair every front end translates to and from.

The API listener (Quart, :mod:`tokn_router.edges.api`) and the MITM proxy's
route mode (:mod:`tokn_router.edges.proxy.modes`) both turn what they received
into a :class:`Call`, hand it to a handler of :mod:`tokn_router.serve`, and
write the :class:`Answer` it returns. So route, account, upstream, transform
and ledger are the same code, and the same row, whichever door a request came in.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tokn_router.errors import RequestError
from tokn_router.usage.record import Source
from tokn_router.wire import jsondepth

JSON = "application/json"
SSE = "text/event-stream"

_decode_obj = msgspec.json.Decoder(dict[str, Any])


class Headers:
    """Request headers, looked up case-insensitively (the first value wins)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = [(k.lower(), v) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        return next((v for k, v in self._items if k == name), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


# The request body as it arrives; a front end may raise RequestError from it
# (e.g. a body that times out).
BodySource = Callable[[], AsyncIterator[bytes]]


async def _no_body() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


@dataclass(slots=True)
class Call:
    """One client request, whichever front end received it."""

    method: str
    path: str  # as received, without the query
    headers: Headers
    body: BodySource = _no_body
    query: str = ""
    source: Source = "api"
    route_mode: str = "route"  # the proxy decided it already; the API reads X-Route-Mode
    client: tuple[str, int] | None = None
    # the name of the client key it came with, once the gate has verified it
    # (tokn_router.serve.gate); None = anonymous
    client_key: str | None = None

    async def read_body(self, limit: int) -> bytes:
        """The whole body; RequestError(413) past ``limit`` bytes."""
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        chunks = self.body()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parts.append(chunk)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:  # an async generator: finalise it here, not in the GC
                await aclose()
        return b"".join(parts)

    async def read_json(self, limit: int) -> dict[str, Any]:
        """The body as a JSON object, or a RequestError (415/413/400)."""
        ctype = self.headers.get("content-type") or ""
        if ctype and "json" not in ctype.lower():
            raise RequestError(
                415,
                f"content type must be application/json, not '{ctype}'",
                code="unsupported_media_type",
            )
        return decode_object(await self.read_body(limit))


def decode_object(raw: bytes) -> dict[str, Any]:
    """A client's body as a JSON object, or a RequestError(400) saying what is wrong."""
    if jsondepth.too_deep(raw):
        raise too_deep()
    try:
        return _decode_obj.decode(raw)
    except msgspec.ValidationError as e:
        # a valid JSON text of the wrong kind, or one with a number out of range
        message = (
            "request body must be a JSON object"
            if str(e).startswith("Expected `object`")
            else f"malformed JSON in request body: {e}"
        )
        raise RequestError(400, message, code="invalid_json") from None
    except msgspec.DecodeError as e:
        raise RequestError(
            400, f"malformed JSON in request body: {e}", code="invalid_json"
        ) from None
    except RecursionError:  # pragma: no cover - the depth scan refuses these first
        raise too_deep() from None


def too_deep() -> RequestError:
    return RequestError(
        400,
        f"request body nests deeper than {jsondepth.MAX_DEPTH} levels",
        code="invalid_json",
    )


def _too_large(limit: int) -> RequestError:
    return RequestError(413, f"request body exceeds {limit} bytes", code="request_too_large")


class StreamBody:
    """A streamed answer body: an async generator, its clean-up if it never ran, and
    what runs once it is over.

    An async generator closed before its first ``__anext__`` never runs its
    ``finally``. A front end closes a body that way when the client leaves
    between the answer's head and its first chunk; ``on_unstarted`` then
    releases what the body holds (the upstream response) and closes the row.

    ``on_end`` callbacks run once, when the body has ended, failed or been
    closed: a layer that must know (the client-key gate) registers one instead
    of wrapping the body in another generator, which would cost every event a
    hop.
    """

    __slots__ = ("_ends", "_gen", "_on_unstarted", "_started")

    def __init__(
        self, gen: AsyncGenerator[bytes, None], on_unstarted: Callable[[], Awaitable[None]]
    ) -> None:
        self._gen = gen
        self._on_unstarted = on_unstarted
        self._started = False
        self._ends: list[Callable[[], None]] = []

    def on_end(self, fn: Callable[[], None]) -> None:
        self._ends.append(fn)

    def __aiter__(self) -> StreamBody:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        try:
            return await self._gen.__anext__()
        except BaseException:
            # an async generator that raised (its end included) is finished
            self._end()
            raise

    async def aclose(self) -> None:
        try:
            if not self._started:
                self._started = True
                await self._on_unstarted()
            await self._gen.aclose()
        finally:
            self._end()

    def _end(self) -> None:
        ends, self._ends = self._ends, []
        for fn in ends:
            fn()


@dataclass(slots=True)
class Answer:
    """What to send back: status, headers, and the body whole or as it is produced.

    A streamed body is an async iterator the front end consumes to its end, or
    closes (``aclose``) when the client went away: that is what ends the
    upstream request and reports the ledger row.
    """

    status: int
    body: bytes | StreamBody = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""  # the upstream's reason phrase (proxy pass-through only)

    @property
    def streamed(self) -> bool:
        return not isinstance(self.body, bytes)

    @property
    def content_type(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "content-type"), None)

    def header(self, name: str, value: str) -> None:
        """Set ``name`` (replacing any value it had)."""
        low = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != low]
        self.headers.append((name, value))


def json_answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, body, [("Content-Type", JSON), *(headers or {}).items()])


def sse_answer(body: StreamBody, status: int = 200) -> Answer:
    headers = [("Content-Type", SSE), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
    return Answer(status, body, headers)


__all__ = [
    "JSON",
    "SSE",
    "Answer",
    "BodySource",
    "Call",
    "Headers",
    "StreamBody",
    "decode_object",
    "json_answer",
    "sse_answer",
    "too_deep",
]

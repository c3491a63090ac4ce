"""The framework-neutral request/answer pair (no servers)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import pytest
import trio

from tokn_router.errors import RequestError
from tokn_router.serve.call import Call, Headers, StreamBody


def _call(*chunks: bytes, headers: list[tuple[str, str]] | None = None) -> Call:
    async def body() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    return Call("POST", "/v1/chat/completions", Headers(headers or []), body=body)


def test_headers_are_case_insensitive_first_value_wins() -> None:
    h = Headers([("X-Route-Mode", "route"), ("x-route-mode", "switch")])
    assert h.get("x-ROUTE-mode") == "route"
    assert "X-Route-Mode" in h and "missing" not in h
    assert h.get("missing", "d") == "d"


def test_read_json_and_its_errors() -> None:
    assert trio.run(_call(b'{"a":', b" 1}").read_json, 100) == {"a": 1}
    cases = [
        (_call(b"x" * 50), 10, 413),  # over the limit while streaming
        (_call(b"{}", headers=[("content-length", "500")]), 10, 413),  # announced too large
        (_call(b"{}", headers=[("content-type", "text/plain")]), 10, 415),
        (_call(b"[1]"), 10, 400),
        (_call(b"{oops"), 10, 400),
    ]
    for call, limit, status in cases:
        with pytest.raises(RequestError) as exc:
            trio.run(call.read_json, limit)
        assert exc.value.status == status


def test_stream_body_closed_before_its_first_chunk_still_cleans_up() -> None:
    events: list[str] = []

    async def gen() -> AsyncGenerator[bytes, None]:
        try:
            yield b"x"
        finally:
            events.append("finally")

    async def unstarted() -> None:
        events.append("unstarted")

    async def main() -> None:
        never = StreamBody(gen(), unstarted)
        await never.aclose()  # the generator's finally cannot run: on_unstarted does
        assert events == ["unstarted"]
        events.clear()
        started = StreamBody(gen(), unstarted)
        assert [c async for c in started] == [b"x"]
        await started.aclose()
        assert events == ["finally"]

    trio.run(main)


def test_stream_body_on_end_runs_once_however_the_body_ends() -> None:
    async def gen(fail: bool) -> AsyncGenerator[bytes, None]:
        yield b"x"
        if fail:
            raise RuntimeError("upstream broke")
        yield b"y"

    async def unstarted() -> None:
        return None

    def body(fail: bool = False) -> tuple[StreamBody, list[str]]:
        ends: list[str] = []
        b = StreamBody(gen(fail), unstarted)
        b.on_end(lambda: ends.append("end"))
        return b, ends

    async def main() -> None:
        whole, ends = body()
        assert [c async for c in whole] == [b"x", b"y"]
        assert ends == ["end"]  # at its end, before any aclose
        await whole.aclose()
        assert ends == ["end"]

        failed, ends = body(fail=True)
        with pytest.raises(RuntimeError):
            async for _ in failed:
                pass
        assert ends == ["end"]

        left, ends = body()
        assert await left.__anext__() == b"x"
        assert ends == []
        await left.aclose()  # the client went away mid-body
        assert ends == ["end"]

        never, ends = body()
        await never.aclose()
        assert ends == ["end"]

    trio.run(main)

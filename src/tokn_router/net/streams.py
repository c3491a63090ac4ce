"""Small trio stream helpers shared by the proxy listener and outbound tunnels."""

from __future__ import annotations

import trio


class PrefixedStream(trio.abc.HalfCloseableStream):
    """A stream whose reads first return bytes already read past a handshake.

    (CONNECT trailing data, a peek, bytes a proxy sent after its answer.) ``send_eof``
    is passed on when the wrapped stream can half-close, else it does nothing.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes = b"") -> None:
        self._stream = stream
        self._prefix = prefix

    def unread(self, data: bytes) -> None:
        self._prefix = data + self._prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

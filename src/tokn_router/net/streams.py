"""Small trio stream helpers: TLS that hands over every complete record, byte prefixes.

Shared by the upstream transport (``net/transport.py``), the outbound tunnels
(``net/tunnels.py``) and the MITM proxy listener (``edges/proxy/listener.py``).
"""

from __future__ import annotations

import errno
import operator
import os
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import trio

__all__ = ["PrefixedStream", "TLSStream", "receive_from_socket"]

# One socket read per wake-up. 64 KiB holds a whole burst of SSE records.
_RECEIVE_SIZE: Final = 65536
# The largest plaintext a TLS record carries: one SSLObject.read never returns more.
_RECORD_SIZE: Final = 16384


async def receive_from_socket(sock: trio.socket.SocketType, max_bytes: int) -> bytes:
    """One read from a connected trio socket, waiting only when nothing is there.

    What ``trio.SocketStream.receive_some`` does, minus one scheduler turn per
    wake-up: after waiting for readability trio reads and then yields once more
    (a cancel-shielded checkpoint), which costs a whole run-loop iteration (an
    ``epoll_wait``) for every paced event. Here the wait itself is the checkpoint;
    only a read that did not wait yields afterwards. Errors as SocketStream maps
    them: ``ClosedResourceError`` once the socket is closed (also when another task
    closes it mid-wait), ``BrokenResourceError`` for a reset.
    """
    try:
        try:
            data = os.read(sock.fileno(), max_bytes)
        except BlockingIOError:
            pass
        else:
            await trio.lowlevel.checkpoint()
            return data
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                # fileno() again: -1 once closed, never a number reused meanwhile.
                return os.read(sock.fileno(), max_bytes)
            except BlockingIOError:
                continue
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("this socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


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


class TLSStream(trio.abc.Stream):
    """TLS over a trio stream: one ``ssl.SSLObject`` between two ``ssl.MemoryBIO``.

    Why not ``trio.SSLStream``: its ``receive_some`` returns the plaintext of *one*
    TLS record per call, and passes scheduler checkpoints of its own on top of the
    socket's. Copilot sends every SSE event as its own record, so a burst of N
    events cost N calls (and N trips through the consumer). Here each
    ``receive_some`` reads the socket once, only when nothing is buffered, and
    returns the plaintext of every complete record received so far in one piece
    (up to ``max_bytes``; the rest comes with the next call).

    Semantics, as the callers need them:

    * The handshake runs on first use or through :meth:`do_handshake`; a failure
      raises ``trio.BrokenResourceError`` whose ``__cause__`` is the ``ssl`` error
      (certificate verification included).
    * The peer's ``close_notify`` and a bare transport EOF both end the stream
      (``b""``): HTTP framing tells a complete body from a truncated one, as
      ``trio.SSLStream(https_compatible=True)`` assumes. :attr:`clean_close` says
      which one it was.
    * A TLS error after data raises ``BrokenResourceError`` on the *next* call: the
      plaintext decrypted before the damage is handed over first.
    * Cancellation: a cancelled receive consumed nothing (the socket read either
      completed or did not start); a cancelled send or handshake leaves the stream
      broken, as with ``trio.SSLStream``.
    * Transport errors (e.g. ``ClosedResourceError`` when another task closed the
      socket) pass through unchanged.
    * :meth:`aclose` sends ``close_notify`` (without waiting for the peer's) when
      ``close_notify`` is true, then closes the transport.
    * One task may receive while another sends; two concurrent receives (or sends)
      raise ``trio.BusyResourceError``.
    """

    def __init__(
        self,
        transport_stream: trio.abc.Stream,
        ssl_context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        close_notify: bool = True,
        initial: bytes = b"",
    ) -> None:
        self.transport_stream = transport_stream
        # Plain TCP: read the socket directly (see receive_from_socket).
        self._receive: Callable[[int], Awaitable[bytes | bytearray]] = (
            partial(receive_from_socket, transport_stream.socket)
            if isinstance(transport_stream, trio.SocketStream)
            else transport_stream.receive_some
        )
        self._in = ssl.MemoryBIO()
        if initial:  # bytes already read from the transport (a peek, CONNECT trailing data)
            self._in.write(initial)
        self._out = ssl.MemoryBIO()
        self._ssl = ssl_context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        self._server_side = server_side
        self._close_notify = close_notify
        self._handshaken = False
        self._handshake_lock: trio.Lock | None = None
        self._eof = False
        self.clean_close = False
        """True once the peer's ``close_notify`` arrived (False for a bare EOF)."""
        self._error: BaseException | None = None  # a TLS error held back behind data
        self._broken = False
        self._closed = False
        self._receiving = False
        self._sending = False
        # Set while the receive path sends records of its own (a KeyUpdate answer,
        # a renegotiation): a concurrent send_all waits for it, so records leave in
        # the order OpenSSL produced them.
        self._flushing: trio.Event | None = None
        # Server side, TLS 1.3: OpenSSL emits the session tickets at the end of the
        # handshake. They wait for our first write, so a client that only sends
        # never finds unexpected bytes (the same choice trio.SSLStream makes).
        self._held = b""
        # Plaintext decrypted but not returned yet (a caller asked for less).
        self._plain = b""

    # -------------------------------------------------------------- inspection

    def selected_alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    def version(self) -> str | None:
        return self._ssl.version()

    def getpeercert(self, binary_form: bool = False) -> object:
        return self._ssl.getpeercert(binary_form)

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._ssl

    # --------------------------------------------------------------- handshake

    async def do_handshake(self) -> None:
        """Complete the handshake now (it also runs on the first send or receive)."""
        if self._handshaken:
            await trio.lowlevel.checkpoint()
            return
        self._check()
        if self._handshake_lock is None:
            self._handshake_lock = trio.Lock()
        async with self._handshake_lock:
            if not self._handshaken:
                await self._handshake()

    async def _handshake(self) -> None:
        tls, incoming, outgoing, transport = self._ssl, self._in, self._out, self.transport_stream
        try:
            while True:
                try:
                    tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except (ssl.SSLError, ssl.CertificateError) as exc:
                    raise trio.BrokenResourceError from exc
                out = outgoing.read()
                if done:
                    if self._server_side and tls.version() == "TLSv1.3":
                        self._held = out
                    elif out:
                        await transport.send_all(out)
                    break
                if out:
                    await transport.send_all(out)
                data = await self._receive(_RECEIVE_SIZE)
                if data:
                    incoming.write(data)
                else:
                    incoming.write_eof()  # the next do_handshake raises SSLEOFError
        except BaseException:
            self._broken = True
            raise
        self._handshaken = True

    # ----------------------------------------------------------------- receive

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._closed or self._broken:
            self._check()
        self._receiving = True
        try:
            if not self._handshaken:
                await self.do_handshake()
            if self._plain:
                await trio.lowlevel.checkpoint()
                return self._take(self._plain, max_bytes)
            # Records already complete in the incoming BIO (they came with the
            # handshake, or behind a max_bytes cut) are returned without waiting.
            data = self._decrypt() if self._in.pending else b""
            if data or self._eof:
                await trio.lowlevel.checkpoint()
                return self._take(data, max_bytes) if data else b""
            while True:
                error = self._error
                if error is not None:
                    self._broken = True
                    raise trio.BrokenResourceError from error
                if self._out.pending and not self._sending and self._flushing is None:
                    await self._flush()  # e.g. the answer to a KeyUpdate
                chunk = await self._receive(_RECEIVE_SIZE)
                if chunk:
                    self._in.write(chunk)
                else:
                    self._in.write_eof()
                data = self._decrypt()
                if data:
                    return self._take(data, max_bytes) if max_bytes is not None else data
                if self._eof:
                    return b""
        finally:
            self._receiving = False

    def _take(self, data: bytes, max_bytes: int | None) -> bytes:
        if max_bytes is None or len(data) <= max_bytes:
            self._plain = b""
            return data
        self._plain = data[max_bytes:]
        return data[:max_bytes]

    def _decrypt(self) -> bytes:
        """The plaintext of every complete record in the incoming BIO, joined.

        Sets ``_eof`` at close_notify or transport EOF; keeps a TLS error in
        ``_error`` (raised by the caller once the data before it is delivered).
        OpenSSL takes from the BIO only the records it decrypts (no read-ahead), so
        an empty BIO means nothing more is complete: stop there rather than pay
        for the SSLWantReadError that one more read would raise.
        """
        if self._eof or self._error is not None:
            return b""
        read = self._ssl.read
        incoming = self._in
        first = b""
        parts: list[bytes] | None = None
        try:
            while True:
                piece = read(_RECORD_SIZE)
                if not piece:  # close_notify
                    self._eof = self.clean_close = True
                    break
                if not first:
                    first = piece
                elif parts is None:
                    parts = [first, piece]
                else:
                    parts.append(piece)
                if not incoming.pending:
                    if incoming.eof:  # the transport ended right after this record
                        self._eof = True
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._eof = self.clean_close = True
        except ssl.SSLEOFError:  # transport EOF without close_notify
            self._eof = True
        except ssl.SSLSyscallError as exc:
            # OpenSSL reports some bare EOFs this way.
            if exc.errno in (None, 0):
                self._eof = True
            else:
                self._error = exc
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._error = exc
        if parts is not None:
            return b"".join(parts)
        return first

    # -------------------------------------------------------------------- send

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check()
            if not self._handshaken:
                await self.do_handshake()
            if not data:
                await trio.lowlevel.checkpoint()
                return
            while self._flushing is not None:
                await self._flushing.wait()
            self._check()
            try:
                self._ssl.write(data)
            except (ssl.SSLError, ssl.CertificateError) as exc:
                self._broken = True
                raise trio.BrokenResourceError from exc
            await self._send_pending()
        finally:
            self._sending = False

    async def _flush(self) -> None:
        """Send what the receive path left in the outgoing BIO (no send in progress)."""
        done = self._flushing = trio.Event()
        try:
            await self._send_pending()
        finally:
            self._flushing = None
            done.set()

    async def _send_pending(self) -> None:
        out = self._out.read()
        if self._held:
            out = self._held + out
            self._held = b""
        try:
            await self.transport_stream.send_all(out)
            # A receive in another task may have queued records meanwhile.
            while self._out.pending:
                await self.transport_stream.send_all(self._out.read())
        except BaseException:
            # Some unknown part of the records went out: the stream is unusable.
            self._broken = True
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    # ------------------------------------------------------------------- close

    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if self._broken:
            raise trio.BrokenResourceError("the TLS stream is broken")

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            idle = not self._sending and self._flushing is None
            if self._close_notify and self._handshaken and not self._broken and idle:
                try:
                    self._ssl.unwrap()
                except ssl.SSLWantReadError:
                    pass  # close_notify is queued; not waiting for the peer's
                except (ssl.SSLError, ssl.CertificateError):
                    pass
                out = self._out.read()
                if out:
                    try:
                        await self.transport_stream.send_all(out)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # the peer is gone already: nothing to be polite to
                    except OSError as exc:  # pragma: no cover - raw OS error from a stream
                        if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                            raise
        finally:
            await self.transport_stream.aclose()

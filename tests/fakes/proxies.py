"""Outbound proxies for tests: an HTTP proxy (CONNECT + absolute-form) and SOCKS5.

Both run ``trio.serve_tcp`` on 127.0.0.1 in a background thread and record every
connection they carried. ``hosts`` maps fake host names to addresses so tests can
prove that name resolution happened at the proxy (e.g. ``{"upstream.test": "127.0.0.1"}``).
A failing connection never takes the server down.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

log = logging.getLogger("tests.fakes.proxies")

_NET_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, EOFError)


@dataclass
class ProxyRecord:
    """One connection carried by a proxy."""

    kind: str  # "connect" | "forward" | "socks5"
    host: str
    port: int
    method: str = ""  # CONNECT / GET / POST ... (HTTP proxy)
    target: str = ""  # request target as sent by the client
    atyp: str = ""  # SOCKS5 address type: "ipv4" | "domain" | "ipv6"
    headers: dict[str, str] = field(default_factory=dict)  # HTTP proxy request headers
    auth_user: str | None = None  # from Proxy-Authorization Basic
    ok: bool = False  # upstream connection established
    error: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    closed: bool = False
    time: float = 0.0

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


class _Reader:
    """Buffered reads over a trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def until(self, sep: bytes, limit: int = 65536) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[: i + len(sep)])
                del self.buf[: i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise EOFError("header too long")
            await self._fill()

    def rest(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class _BackgroundTcpServer:
    """Common thread + trio.serve_tcp plumbing and the record store."""

    scheme = "tcp"

    def __init__(self, *, hosts: dict[str, str] | None = None, name: str = "proxy") -> None:
        self.name = name
        self.hosts: dict[str, str] = dict(hosts or {})
        self.port = 0
        self._cond = threading.Condition()
        self._records: list[ProxyRecord] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Any:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"{self.name} failed to start") from self._error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._token is not None and self._cancel is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:
            self._error = e
            log.exception("%s crashed", self.name)
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as cs:
            self._cancel = cs
            async with trio.open_nursery() as n:
                listeners = await n.start(
                    partial(trio.serve_tcp, self._safe_handle, 0, host="127.0.0.1")
                )
                self.port = listeners[0].socket.getsockname()[1]
                self._started.set()

    async def _safe_handle(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await self.handle(stream)
        except Exception as e:  # one bad connection must not kill the server
            log.debug("%s: connection error: %r", self.name, e)

    async def handle(self, stream: trio.SocketStream) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- records -----------------------------------------------------------------------
    def _add(self, rec: ProxyRecord) -> ProxyRecord:
        rec.time = time.time()
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()
        return rec

    def _changed(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def records(self) -> list[ProxyRecord]:
        with self._cond:
            return list(self._records)

    @property
    def hostports(self) -> list[str]:
        """``host:port`` of every carried connection, in order."""
        return [r.hostport for r in self.records]

    def reset(self) -> None:
        with self._cond:
            self._records.clear()
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name}: condition not met within {timeout}s")
                self._cond.wait(min(left, 0.05))

    # -- shared helpers ----------------------------------------------------------------
    def _resolve(self, host: str) -> str:
        return self.hosts.get(host.lower(), host)

    def _target(self, host: str, port: int) -> tuple[str, int]:
        """``hosts`` may also map ``"name:443"`` to ``"127.0.0.1:PORT"`` (port rewrite)."""
        mapped = self.hosts.get(f"{host.lower()}:{port}")
        if mapped is not None:
            addr, _, p = mapped.rpartition(":")
            return addr, int(p)
        return self._resolve(host), port

    async def _relay(
        self, rec: ProxyRecord, a: trio.abc.Stream, b: trio.abc.Stream, first_up: bytes = b""
    ) -> None:
        """Copy bytes both ways until both sides are done (half-close aware)."""

        async def pump(
            src: trio.abc.Stream, dst: trio.abc.Stream, up: bool, cancel: trio.CancelScope
        ) -> None:
            try:
                while True:
                    data = await src.receive_some(65536)
                    if not data:
                        break
                    await dst.send_all(data)
                    if up:
                        rec.bytes_up += len(data)
                    else:
                        rec.bytes_down += len(data)
                try:
                    if isinstance(dst, trio.SocketStream):
                        await dst.send_eof()
                    else:  # pragma: no cover
                        cancel.cancel()
                except _NET_ERRORS:
                    cancel.cancel()
            except _NET_ERRORS:
                cancel.cancel()

        if first_up:
            await b.send_all(first_up)
            rec.bytes_up += len(first_up)
        async with trio.open_nursery() as n:
            n.start_soon(pump, a, b, True, n.cancel_scope)
            n.start_soon(pump, b, a, False, n.cancel_scope)
        rec.closed = True
        self._changed()


class HttpProxy(_BackgroundTcpServer):
    """HTTP proxy: ``CONNECT host:port`` tunnels and absolute-form ``http://`` forwarding.

    ``auth=("user", "pass")`` makes it demand Basic ``Proxy-Authorization`` (407 otherwise).
    Forwarded plain-HTTP requests are sent with ``Connection: close`` (one request per
    proxy connection).
    """

    scheme = "http"

    def __init__(
        self,
        *,
        hosts: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        name: str = "http-proxy",
    ) -> None:
        super().__init__(hosts=hosts, name=name)
        self.auth = auth

    async def handle(self, stream: trio.SocketStream) -> None:
        reader = _Reader(stream)
        head = await reader.until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await stream.send_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        headers: dict[str, str] = {}
        raw_headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line or ":" not in line:
                continue
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
            raw_headers.append((k.strip(), v.strip()))
        auth_user = None
        pa = headers.get("proxy-authorization", "")
        if pa.lower().startswith("basic "):
            try:
                auth_user, _, auth_pass = base64.b64decode(pa[6:]).decode().partition(":")
            except Exception:
                auth_user, auth_pass = None, ""
        else:
            auth_pass = ""
        if method.upper() == "CONNECT":
            host, _, port_s = target.rpartition(":")
            host = host.strip("[]")
            rec = ProxyRecord("connect", host, int(port_s or 443), method="CONNECT", target=target)
        else:
            if not target.lower().startswith("http://"):
                await stream.send_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            rest = target[7:]
            hostport, slash, path = rest.partition("/")
            host, colon, port_s = hostport.rpartition(":")
            if not colon or not port_s.isdigit():
                host, port_s = hostport, "80"
            host = host.strip("[]")
            rec = ProxyRecord("forward", host, int(port_s), method=method.upper(), target=target)
            rec.target = target
            path = "/" + path if slash else "/"
        rec.headers = headers
        rec.auth_user = auth_user
        self._add(rec)
        if self.auth is not None and (auth_user, auth_pass) != self.auth:
            rec.error = "proxy auth required"
            await stream.send_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="fake"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
            )
            self._changed()
            return
        try:
            upstream = await trio.open_tcp_stream(*self._target(rec.host, rec.port))
        except OSError as e:
            rec.error = repr(e)
            self._changed()
            await stream.send_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        rec.ok = True
        self._changed()
        async with upstream:
            if rec.kind == "connect":
                await stream.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await self._relay(rec, stream, upstream, reader.rest())
            else:
                drop = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}
                out = [f"{method} {path} {version}"]
                out += [f"{k}: {v}" for k, v in raw_headers if k.lower() not in drop]
                out.append("Connection: close")
                first = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + reader.rest()
                await self._relay(rec, stream, upstream, first)


_ATYP = {1: "ipv4", 3: "domain", 4: "ipv6"}


class Socks5Proxy(_BackgroundTcpServer):
    """SOCKS5 (RFC 1928), no authentication, CONNECT only; records host, port, address type."""

    scheme = "socks5"

    def __init__(self, *, hosts: dict[str, str] | None = None, name: str = "socks5-proxy") -> None:
        super().__init__(hosts=hosts, name=name)

    async def handle(self, stream: trio.SocketStream) -> None:
        r = _Reader(stream)
        ver, nmethods = await r.exactly(2)
        if ver != 5:
            return
        methods = await r.exactly(nmethods)
        if 0 not in methods:
            await stream.send_all(b"\x05\xff")
            return
        await stream.send_all(b"\x05\x00")
        ver, cmd, _rsv, atyp = await r.exactly(4)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await r.exactly(4)))
        elif atyp == 3:
            (ln,) = await r.exactly(1)
            host = (await r.exactly(ln)).decode("idna")
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await r.exactly(16)))
        else:
            await stream.send_all(b"\x05\x08\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        (port,) = struct.unpack("!H", await r.exactly(2))
        rec = self._add(
            ProxyRecord("socks5", host, port, atyp=_ATYP[atyp], target=f"{host}:{port}")
        )
        if cmd != 1:
            rec.error = f"unsupported command {cmd}"
            await stream.send_all(b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00")
            return
        try:
            upstream = await trio.open_tcp_stream(*self._target(host, port))
        except OSError as e:
            rec.error = repr(e)
            self._changed()
            code = 4 if isinstance(e, OSError) and "resolve" in str(e).lower() else 5
            await stream.send_all(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
            return
        rec.ok = True
        self._changed()
        async with upstream:
            bound_host, bound_port = upstream.socket.getsockname()[:2]
            try:
                packed = ipaddress.IPv4Address(bound_host).packed
                reply = b"\x05\x00\x00\x01" + packed
            except ValueError:
                reply = b"\x05\x00\x00\x04" + ipaddress.IPv6Address(bound_host).packed
            await stream.send_all(reply + struct.pack("!H", bound_port))
            await self._relay(rec, stream, upstream, r.rest())

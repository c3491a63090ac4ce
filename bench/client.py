"""The load client: one epoll loop over raw non-blocking sockets, no framework.

Run as ``python -m bench.client`` with a JSON :class:`Spec` on stdin; it writes a
JSON result on stdout. ``python -m bench.client --serve`` stays up and answers one
JSON line per spec line: the orchestrator keeps a few of these worker processes for
the whole benchmark (no process start-up per run), so the client never shares a
process (or a GIL) with what it measures.

Each of ``connections`` connections is opened at once and sends ``per_conn``
requests one after the other (HTTP/1.1 keep-alive). A response is read with a
minimal parser: status line, ``Content-Length`` or chunked framing; SSE events
are counted as blank-line separators in the de-chunked body. Per request it
records the time from sending the request to the first SSE event and to the end
of the body; paced runs also record every gap between consecutive events.

A response counts as an error when the status is not 200, the connection breaks
or the run's deadline passes before it ends, a stream does not end with
``data: [DONE]``, or (when ``expect_events`` is set) its event count differs.

Through the MITM proxy (``proxy_port`` set), each connection goes to the proxy,
sends ``CONNECT host:443``, reads the ``200``, then runs TLS over the socket with
an ``ssl.SSLObject`` between two ``ssl.MemoryBIO`` (the epoll loop moves the
ciphertext; ``SSLWantReadError`` means "wait for the socket"), trusting only the
daemon's CA (``ca_file``), SNI = ``host``, ALPN ``http/1.1``; the requests then go
inside the tunnel exactly as on a plain connection. The ``Host`` header names the
tunnel's host. Connection k uses ``proxy_hosts[k % len]`` (one name for a warm
tunnel, a fresh name per connection for "first request to a new host").
It records per tunnel the time from the TCP connect to the ``200``
(``connect_ms``) and from the ``200`` to the finished handshake (``tls_ms``).

With ``tls`` (DIRECT to the fake upstream's HTTPS port), the same ``SSLObject``
runs straight over the TCP connection (no ``CONNECT``), trusting ``ca_file``.

With ``new_conn_each``, every request goes on a new connection (the next one is
opened when the previous response has ended: sequential, one at a time), and its
latency is measured from the TCP connect, so it includes connect, ``CONNECT`` and
the TLS handshake.

Cost: measured with ``resource.getrusage`` and reported as ``cpu_s``, so the
orchestrator can show that the client is not the bottleneck.
"""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import select
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field

DONE_TAIL = b"data: [DONE]\n\n"
TAIL_LEN = len(DONE_TAIL)


@dataclass
class Spec:
    port: int
    path: str
    body: str
    stream: bool
    connections: int
    per_conn: int
    expect_events: int | None = None
    record_gaps: bool = False
    start_at: float = (
        0.0  # time.perf_counter() (CLOCK_MONOTONIC) at which to start (aligns worker processes)
    )
    deadline_s: float = 120.0
    stagger_s: float = 0.0  # spread the connects evenly over this long
    host: str = "127.0.0.1"
    headers: dict[str, str] = field(default_factory=dict)
    new_conn_each: bool = False  # every request on a new connection, one at a time
    # through the MITM proxy: CONNECT to these hosts (port 443) at 127.0.0.1:proxy_port
    proxy_port: int | None = None
    proxy_hosts: list[str] = field(default_factory=list)
    ca_file: str = ""  # the daemon's CA certificate (the only trusted root)
    tls: bool = False  # TLS straight to host:port (DIRECT to an HTTPS upstream)


@dataclass
class Result:
    first_ms: list[float] = field(default_factory=list)  # streams only
    total_ms: list[float] = field(default_factory=list)
    gaps_us: list[int] = field(default_factory=list)
    connect_ms: list[float] = field(default_factory=list)  # TCP connect -> CONNECT 200
    tls_ms: list[float] = field(default_factory=list)  # CONNECT 200 -> TLS handshake done
    completed: int = 0
    events: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    t_start: float = 0.0
    t_end: float = 0.0
    cpu_s: float = 0.0


def build_request(spec: Spec, host: str | None = None) -> bytes:
    """The request bytes; ``host`` is the tunnel's host (``Host`` header, port 443)."""
    body = spec.body.encode()
    lines = [
        f"POST {spec.path} HTTP/1.1",
        f"Host: {host}" if host else f"Host: {spec.host}:{spec.port}",
        "Content-Type: application/json",
        "Accept: text/event-stream" if spec.stream else "Accept: application/json",
        "Authorization: Bearer bench",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in spec.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# connection states
CONNECTING = 0  # TCP connect in progress
TUNNEL = 1  # CONNECT sent, waiting for the proxy's 200
HANDSHAKE = 2  # TLS handshake inside the tunnel
READY = 3  # requests and responses (plain, or TLS inside the tunnel)


class Conn:
    __slots__ = (
        "bio_in",
        "bio_out",
        "body_left",
        "carry",
        "chunk_left",
        "chunked",
        "close_after",
        "events",
        "final",
        "gaps",
        "head",
        "host",
        "in_response",
        "last_ev",
        "last_nl",
        "left",
        "pending",
        "request",
        "sock",
        "state",
        "status",
        "t_conn",
        "t_first",
        "t_send",
        "t_tunnel",
        "tail",
        "tls",
    )

    def __init__(self, sock: socket.socket, left: int, request: bytes, t_conn: float) -> None:
        self.sock = sock
        self.left = left  # requests still to send on this connection
        self.request = request
        self.pending = b""  # unsent bytes (ciphertext through a tunnel)
        self.state = CONNECTING
        self.host = ""  # the tunnel's host (proxied connections)
        self.tls: ssl.SSLObject | None = None
        self.bio_in: ssl.MemoryBIO | None = None
        self.bio_out: ssl.MemoryBIO | None = None
        self.t_conn = t_conn
        self.t_tunnel = 0.0
        self.reset()

    def reset(self) -> None:
        self.in_response = False
        self.head = b""
        self.status = 0
        self.chunked = False
        self.close_after = False
        self.body_left = 0
        self.chunk_left = 0  # >0: data bytes to read; <0: CRLF bytes to skip
        self.final = False
        self.carry = b""
        self.events = 0
        self.last_nl = False
        self.tail = b""
        self.t_send = 0.0
        self.t_first = 0.0
        self.last_ev = 0.0
        self.gaps: list[int] = []


class Client:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.request = build_request(spec)
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.res = Result()
        self.open = 0
        self.n_connects = 0
        self.tls_ctx: ssl.SSLContext | None = None
        self.requests: dict[str, bytes] = {}  # per tunnel host
        if spec.proxy_port is not None or spec.tls:
            if spec.proxy_port is not None and not spec.proxy_hosts:
                raise ValueError("proxy_port without proxy_hosts")
            ctx = ssl.create_default_context(cafile=spec.ca_file)  # only the given CA
            ctx.set_alpn_protocols(["http/1.1"])
            self.tls_ctx = ctx

    def error(self, kind: str) -> None:
        self.res.errors[kind] = self.res.errors.get(kind, 0) + 1

    # -- connections ----------------------------------------------------------

    def connect(self, left: int) -> None:
        spec = self.spec
        t = time.perf_counter()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        port = spec.port if spec.proxy_port is None else spec.proxy_port
        rc = sock.connect_ex((spec.host, port))
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.error("connect")
            if left > 1:  # the connection's later requests go on a new one
                self.connect(left - 1)
            return
        if spec.proxy_port is None:
            conn = Conn(sock, left, self.request, t)
        else:
            host = spec.proxy_hosts[self.n_connects % len(spec.proxy_hosts)]
            request = self.requests.get(host)
            if request is None:
                request = self.requests[host] = build_request(spec, host)
            conn = Conn(sock, left, request, t)
            conn.host = host
        self.n_connects += 1
        self.conns[sock.fileno()] = conn
        self.ep.register(sock.fileno(), select.EPOLLOUT)
        self.open += 1

    def close(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        if self.conns.pop(fd, None) is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(fd)
        conn.sock.close()
        self.open -= 1

    def send_raw(self, conn: Conn, data: bytes) -> bool:
        """Send bytes (after any still pending); False when the connection failed."""
        if conn.pending:
            conn.pending += data
            return True
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.fail(conn, "send")
            return False
        if n < len(data):
            conn.pending = data[n:]
            self.ep.modify(conn.sock.fileno(), select.EPOLLOUT)
        return True

    def send_next(self, conn: Conn) -> None:
        conn.reset()
        conn.left -= 1
        conn.in_response = True
        # on a new connection per request, the latency includes connect (+ tunnel + TLS)
        conn.t_send = conn.t_conn if self.spec.new_conn_each else time.perf_counter()
        data = conn.request
        if conn.tls is not None:
            assert conn.bio_out is not None
            conn.tls.write(data)
            data = conn.bio_out.read()
        self.send_raw(conn, data)

    def on_writable(self, conn: Conn) -> None:
        if conn.state == CONNECTING:
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(conn, "connect")
                return
            self.ep.modify(conn.sock.fileno(), select.EPOLLIN)
            if self.tls_ctx is None:
                conn.state = READY
                self.send_next(conn)
            elif self.spec.tls:
                conn.t_tunnel = time.perf_counter()
                self.start_tls(conn, self.spec.host, b"")
            else:
                conn.state = TUNNEL
                target = f"{conn.host}:443"
                self.send_raw(conn, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            return
        try:
            n = conn.sock.send(conn.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.fail(conn, "send")
            return
        conn.pending = conn.pending[n:]
        if not conn.pending:
            self.ep.modify(conn.sock.fileno(), select.EPOLLIN)

    def fail(self, conn: Conn, kind: str) -> None:
        self.error(kind)
        if not conn.in_response:  # failed while being set up: its first request is lost
            conn.left -= 1
        left = conn.left
        self.close(conn)
        if left > 0:  # the connection's later requests go on a new one
            self.connect(left)

    # -- CONNECT + TLS --------------------------------------------------------

    def on_tunnel(self, conn: Conn, data: bytes, t: float) -> None:
        """Bytes while waiting for the proxy's answer to CONNECT."""
        conn.head += data
        end = conn.head.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.head) > 65536:
                self.fail(conn, "bad_response")
            return
        status = conn.head[9:12]
        rest = conn.head[end + 4 :]
        conn.head = b""
        if status != b"200":
            self.fail(conn, f"connect_{status.decode(errors='replace')}")
            return
        conn.t_tunnel = t
        self.start_tls(conn, conn.host, rest)

    def start_tls(self, conn: Conn, host: str, rest: bytes) -> None:
        assert self.tls_ctx is not None
        conn.bio_in, conn.bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        conn.tls = self.tls_ctx.wrap_bio(conn.bio_in, conn.bio_out, server_hostname=host)
        conn.state = HANDSHAKE
        if rest:
            conn.bio_in.write(rest)
        self.handshake(conn)

    def handshake(self, conn: Conn) -> None:
        tls, out = conn.tls, conn.bio_out
        assert tls is not None and out is not None
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            if out.pending:
                self.send_raw(conn, out.read())
            return
        except ssl.SSLError:  # certificate verification included
            self.fail(conn, "tls")
            return
        t = time.perf_counter()
        if out.pending and not self.send_raw(conn, out.read()):  # the client Finished
            return
        if tls.selected_alpn_protocol() not in (None, "http/1.1"):
            self.fail(conn, "alpn")
            return
        if not self.spec.tls:  # per tunnel through the MITM proxy
            self.res.connect_ms.append((conn.t_tunnel - conn.t_conn) * 1000.0)
            self.res.tls_ms.append((t - conn.t_tunnel) * 1000.0)
        conn.state = READY
        self.send_next(conn)

    def decrypt(self, conn: Conn, data: bytes) -> tuple[bytes, bool] | None:
        """(plaintext, peer closed) from received ciphertext; None when TLS failed."""
        tls, bio_in, out = conn.tls, conn.bio_in, conn.bio_out
        assert tls is not None and bio_in is not None and out is not None
        bio_in.write(data)
        pieces = []
        eof = False
        try:
            while True:
                piece = tls.read(65536)
                if not piece:
                    eof = True
                    break
                pieces.append(piece)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify
            eof = True
        except ssl.SSLError:
            self.fail(conn, "tls")
            return None
        if out.pending and not self.send_raw(conn, out.read()):  # e.g. a key update
            return None
        return b"".join(pieces), eof

    # -- responses ------------------------------------------------------------

    def on_readable(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        try:
            data = conn.sock.recv(65536)  # below the mmap threshold: no page faults per call
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.fail(conn, "reset")
            return
        t = time.perf_counter()
        if data:
            state = conn.state
            if state == READY and conn.tls is None:
                self.on_data(conn, data, t)
                return
            if state == TUNNEL:
                self.on_tunnel(conn, data, t)
                return
            if state == HANDSHAKE:
                assert conn.bio_in is not None
                conn.bio_in.write(data)
                self.handshake(conn)
                return
            got = self.decrypt(conn, data)
            if got is None:
                return
            data, eof = got
            if data:
                self.on_data(conn, data, t)
            if not eof or self.conns.get(fd) is not conn:
                return
        # the peer closed
        if conn.in_response:
            self.fail(conn, "closed")
        elif conn.state == TUNNEL:
            self.fail(conn, "tunnel_closed")
        elif conn.state == HANDSHAKE:
            self.fail(conn, "tls")
        else:
            self.close(conn)

    def on_data(self, conn: Conn, data: bytes, t: float) -> None:
        """Response bytes (plaintext)."""
        if not conn.in_response:
            return  # bytes after a complete response: ignore
        if not conn.status:
            conn.head += data
            end = conn.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = conn.head[:end].lower()
            data = conn.head[end + 4 :]
            conn.head = b""
            try:
                conn.status = int(head[9:12])
            except ValueError:
                self.fail(conn, "bad_response")
                return
            conn.close_after = b"connection: close" in head
            if b"transfer-encoding: chunked" in head:
                conn.chunked = True
            else:
                i = head.find(b"content-length:")
                if i < 0:
                    self.fail(conn, "no_length")
                    return
                j = head.find(b"\r\n", i)
                conn.body_left = int(head[i + 15 : j if j >= 0 else None])
        if conn.chunked:
            self.dechunk(conn, data, t)
        else:
            conn.body_left -= len(data)
            if conn.body_left <= 0:
                self.finish(conn, t)

    def dechunk(self, conn: Conn, data: bytes, t: float) -> None:
        if conn.carry:
            data = conn.carry + data
            conn.carry = b""
        i = 0
        n = len(data)
        while i < n:
            left = conn.chunk_left
            if left > 0:
                take = min(left, n - i)
                self.piece(conn, data[i : i + take], t)
                i += take
                conn.chunk_left = left - take
                if conn.chunk_left == 0:
                    conn.chunk_left = -2
            elif left < 0:
                skip = min(-left, n - i)
                i += skip
                conn.chunk_left = left + skip
                if conn.chunk_left == 0 and conn.final:
                    self.finish(conn, t)
                    return
            else:
                j = data.find(b"\r\n", i)
                if j < 0:
                    conn.carry = data[i:]
                    return
                size = int(data[i:j].split(b";", 1)[0], 16)
                i = j + 2
                if size == 0:
                    conn.final = True
                    conn.chunk_left = -2  # the CRLF after the last chunk (no trailers)
                else:
                    conn.chunk_left = size
        if conn.final and conn.chunk_left == 0:
            self.finish(conn, t)

    def piece(self, conn: Conn, piece: bytes, t: float) -> None:
        k = piece.count(b"\n\n")
        if conn.last_nl and piece[0] == 10:  # b"\n"
            k += 1
        conn.last_nl = piece[-1] == 10
        conn.tail = piece if len(piece) >= TAIL_LEN else (conn.tail + piece)[-TAIL_LEN:]
        if not k:
            return
        if not conn.events:
            conn.t_first = t
        conn.events += k
        if self.spec.record_gaps:
            if conn.last_ev:
                conn.gaps.append(int((t - conn.last_ev) * 1e6))
                k -= 1
            conn.gaps.extend([0] * k)
            conn.last_ev = t

    def finish(self, conn: Conn, t: float) -> None:
        spec = self.spec
        res = self.res
        ok = True
        if conn.status != 200:
            self.error(f"status_{conn.status}")
            ok = False
        elif spec.stream:
            if conn.tail[-TAIL_LEN:] != DONE_TAIL:
                self.error("no_done")
                ok = False
            elif spec.expect_events is not None and conn.events != spec.expect_events:
                self.error("event_count")
                ok = False
        if ok:
            res.completed += 1
            res.total_ms.append((t - conn.t_send) * 1000.0)
            if spec.stream:
                res.first_ms.append((conn.t_first - conn.t_send) * 1000.0)
            res.gaps_us.extend(conn.gaps)
        res.events += conn.events
        res.t_end = max(res.t_end, t)
        conn.in_response = False
        if conn.left > 0 and not conn.close_after and not spec.new_conn_each:
            self.send_next(conn)
            return
        left = conn.left
        self.close(conn)
        if left > 0:  # new_conn_each, or the server ends keep-alive: reconnect
            self.connect(left)

    # -- run ------------------------------------------------------------------

    def run(self) -> Result:
        spec = self.spec
        delay = spec.start_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.res.t_start = time.perf_counter()
        self.res.t_end = self.res.t_start
        t0 = self.res.t_start
        n = spec.connections
        # connect times, latest first (popped from the end)
        starts = [t0 + spec.stagger_s * i / n for i in range(n)][::-1]
        deadline = t0 + spec.deadline_s
        conns = self.conns
        poll = self.ep.poll
        while self.open or starts:
            now = time.perf_counter()
            while starts and starts[-1] <= now:
                starts.pop()
                self.connect(spec.per_conn)
            remaining = deadline - now
            if remaining <= 0:
                for conn in list(conns.values()):
                    lost = conn.left + (1 if conn.in_response else 0)
                    for _ in range(lost):
                        self.error("timeout")
                    self.close(conn)
                for _ in range(len(starts) * spec.per_conn):
                    self.error("timeout")
                break
            timeout = min(remaining, 1.0)
            if starts:
                timeout = max(0.0, min(timeout, starts[-1] - now))
            for fd, ev in poll(timeout):
                c = conns.get(fd)
                if c is None:
                    continue
                conn = c
                if ev & select.EPOLLOUT:
                    self.on_writable(conn)
                    if conns.get(fd) is not conn:  # closed (its fd may be a new connection's)
                        continue
                if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self.on_readable(conn)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        self.res.cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return self.res


def result_json(res: Result) -> str:
    out = dict(res.__dict__)  # not asdict(): it deep-copies the long lists
    out["first_ms"] = [round(x, 4) for x in res.first_ms]
    out["total_ms"] = [round(x, 4) for x in res.total_ms]
    out["connect_ms"] = [round(x, 4) for x in res.connect_ms]
    out["tls_ms"] = [round(x, 4) for x in res.tls_ms]
    return json.dumps(out, separators=(",", ":"))


def main() -> None:
    if "--serve" in sys.argv[1:]:
        # One spec per line in, one result per line out, until stdin closes.
        for line in sys.stdin:
            if line.strip():
                sys.stdout.write(result_json(Client(Spec(**json.loads(line))).run()) + "\n")
                sys.stdout.flush()
        return
    spec = Spec(**json.load(sys.stdin))
    sys.stdout.write(result_json(Client(spec).run()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

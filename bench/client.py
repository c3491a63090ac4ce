"""The load client: one epoll loop over raw non-blocking sockets, no framework.

Run as ``python -m bench.client`` with a JSON :class:`Spec` on stdin; it writes a
JSON result on stdout. The orchestrator starts one or more of these processes per
run so the client never shares a process (or a GIL) with what it measures.

Each of ``connections`` connections is opened at once and sends ``per_conn``
requests one after the other (HTTP/1.1 keep-alive). A response is read with a
minimal parser: status line, ``Content-Length`` or chunked framing; SSE events
are counted as blank-line separators in the de-chunked body. Per request it
records the time from sending the request to the first SSE event and to the end
of the body; paced runs also record every gap between consecutive events.

A response counts as an error when the status is not 200, the connection breaks
or the run's deadline passes before it ends, a stream does not end with
``data: [DONE]``, or (when ``expect_events`` is set) its event count differs.

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


@dataclass
class Result:
    first_ms: list[float] = field(default_factory=list)  # streams only
    total_ms: list[float] = field(default_factory=list)
    gaps_us: list[int] = field(default_factory=list)
    completed: int = 0
    events: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    t_start: float = 0.0
    t_end: float = 0.0
    cpu_s: float = 0.0


def build_request(spec: Spec) -> bytes:
    body = spec.body.encode()
    lines = [
        f"POST {spec.path} HTTP/1.1",
        f"Host: {spec.host}:{spec.port}",
        "Content-Type: application/json",
        "Accept: text/event-stream" if spec.stream else "Accept: application/json",
        "Authorization: Bearer bench",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in spec.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Conn:
    __slots__ = (
        "body_left",
        "carry",
        "chunk_left",
        "chunked",
        "close_after",
        "connecting",
        "events",
        "final",
        "gaps",
        "head",
        "in_response",
        "last_ev",
        "last_nl",
        "left",
        "pending",
        "sock",
        "status",
        "t_first",
        "t_send",
        "tail",
    )

    def __init__(self, sock: socket.socket, left: int) -> None:
        self.sock = sock
        self.left = left  # requests still to send on this connection
        self.pending = b""  # unsent request bytes
        self.connecting = True
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

    def error(self, kind: str) -> None:
        self.res.errors[kind] = self.res.errors.get(kind, 0) + 1

    # -- connections ----------------------------------------------------------

    def connect(self, left: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = sock.connect_ex((self.spec.host, self.spec.port))
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.error("connect")
            return
        conn = Conn(sock, left)
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

    def send_next(self, conn: Conn) -> None:
        conn.reset()
        conn.left -= 1
        conn.in_response = True
        conn.t_send = time.perf_counter()
        data = self.request
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.fail(conn, "send")
            return
        if n < len(data):
            conn.pending = data[n:]
            self.ep.modify(conn.sock.fileno(), select.EPOLLOUT)

    def on_writable(self, conn: Conn) -> None:
        if conn.connecting:
            conn.connecting = False
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.error("connect")
                conn.left = 0
                self.close(conn)
                return
            self.ep.modify(conn.sock.fileno(), select.EPOLLIN)
            self.send_next(conn)
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
        left = conn.left
        self.close(conn)
        if left > 0:  # the connection's later requests go on a new one
            self.connect(left)

    # -- responses ------------------------------------------------------------

    def on_readable(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)  # below the mmap threshold: no page faults per call
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.fail(conn, "reset")
            return
        t = time.perf_counter()
        if not data:
            if conn.in_response:
                self.fail(conn, "closed")
            else:
                self.close(conn)
            return
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
        if conn.left > 0 and not conn.close_after:
            self.send_next(conn)
            return
        left = conn.left
        self.close(conn)
        if left > 0:  # the server ends keep-alive (e.g. after N requests): reconnect
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
                    if fd not in conns:
                        continue
                if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self.on_readable(conn)
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        self.res.cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return self.res


def main() -> None:
    spec = Spec(**json.load(sys.stdin))
    res = Client(spec).run()
    out = dict(res.__dict__)  # not asdict(): it deep-copies the long lists
    out["first_ms"] = [round(x, 4) for x in res.first_ms]
    out["total_ms"] = [round(x, 4) for x in res.total_ms]
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

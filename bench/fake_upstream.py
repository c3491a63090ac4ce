"""A fast fake Copilot upstream for the benchmark: epoll, prebuilt byte strings.

Run as ``python -m bench.fake_upstream [--port 0] [--tls-cert PEM [--tls-port 0]]
[--procs 1]``; it prints ``listening on http://127.0.0.1:PORT [https://127.0.0.1:TLSPORT]
pids PID...`` once ready and serves until killed. With ``--procs N`` it forks N-1 more
processes that accept on the same ports (``SO_REUSEPORT``); the kernel spreads
connections over them.

**TLS** (``--tls-cert``: a PEM with the key and the certificate chain; the bench
makes one with trustme): a second listening socket speaks HTTPS, the way Copilot is
reached. Each ``send()`` below goes through a non-blocking ``ssl.SSLSocket``, so
**every SSE event is its own TLS record**, as Copilot sends them: nothing coalesces
unless the reader is behind. The plain port stays open next to it (the second
configuration of the bench).

It is one plain ``select.epoll`` loop per process with no framework: a request is
parsed with a few ``bytes`` operations and answered from byte strings built once,
so the fake costs a few microseconds per streamed event and is never what a
benchmark measures.

Routes (HTTP/1.1 keep-alive, ``Content-Length`` request bodies only):

``GET /copilot_internal/v2/token``
    a Copilot token exchange answer: ``token``, ``expires_at`` (now + 1800),
    ``refresh_in`` (1500), ``endpoints.api`` = this server's URL.
``GET /models`` (also ``/v1/models``)
    ``{"data": [...], "object": "list"}`` with gpt-4.1, gpt-5-mini, claude-sonnet-4.5.
``POST /chat/completions`` (also ``/v1/chat/completions``)
    Non-stream: a small chat completion with ``usage``. Stream (``"stream": true``):
    the Copilot SSE shape, one ``send()`` per event, chunked transfer encoding:

    1. a ``prompt_filter_results`` chunk with empty ``choices``
    2. N content chunks (``delta.role`` on the first), ``usage: null``
    3. a finish chunk (``finish_reason: "stop"``)
    4. a usage-only chunk (``choices: []``), only if ``stream_options.include_usage``
    5. ``data: [DONE]``

    **N** (content chunks) is the body's ``max_tokens`` (default 200); the
    **per-chunk delay** is the body's ``x_bench_delay_ms`` (default 0): the fake
    waits that long before each content chunk, on a drift-free schedule
    (chunk k is due ``k × delay`` after the prelude), so a paced stream ideally
    lasts exactly N × delay. Both travel in the body because tokn-router forwards
    unknown body keys but not client headers; for direct use, the request headers
    ``X-Bench-Chunks`` / ``X-Bench-Delay-Ms`` override them.
``GET /healthz``
    ``ok``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import os
import select
import socket
import ssl
import sys
import time
from typing import Any

try:  # the project depends on msgspec; fall back to json so the fake stands alone
    import msgspec

    _loads: Any = msgspec.json.decode
except ImportError:  # pragma: no cover
    _loads = json.loads

DEFAULT_CHUNKS = 200
MODEL = "gpt-4.1-2025-04-14"
CREATED = 1730000000

_SAFE = {"filtered": False, "severity": "safe"}
_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": _FILTER}]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _event(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def _frame(data: bytes) -> bytes:
    """One chunk of a chunked transfer-encoded body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "choices": [{"delta": delta, "finish_reason": finish, "index": 0, "logprobs": None}],
        "created": CREATED,
        "id": "chatcmpl-bench",
        "model": MODEL,
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_bench",
        "usage": None,
    }


def _usage(chunks: int) -> dict[str, Any]:
    return {
        "completion_tokens": chunks,
        "completion_tokens_details": {"accepted_prediction_tokens": 0, "reasoning_tokens": 0},
        "prompt_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 2},
        "total_tokens": 12 + chunks,
    }


def _model(mid: str, name: str, vendor: str, endpoints: list[str]) -> dict[str, Any]:
    return {
        "id": mid,
        "name": name,
        "vendor": vendor,
        "version": mid,
        "object": "model",
        "preview": False,
        "model_picker_enabled": True,
        "is_chat_default": False,
        "is_chat_fallback": False,
        "policy": {"state": "enabled"},
        "billing": {"is_premium": False, "multiplier": 0.0},
        "supported_endpoints": endpoints,
        "capabilities": {
            "type": "chat",
            "family": mid,
            "tokenizer": "o200k_base",
            "object": "model_capabilities",
            "limits": {"max_prompt_tokens": 128000, "max_output_tokens": 16384},
            "supports": {"streaming": True, "tool_calls": True},
        },
    }


MODELS = [
    _model("gpt-4.1", "GPT-4.1", "Azure OpenAI", ["/chat/completions", "/responses"]),
    _model("gpt-5-mini", "GPT-5 mini", "Azure OpenAI", ["/chat/completions", "/responses"]),
    _model("claude-sonnet-4.5", "Claude Sonnet 4.5", "Anthropic", ["/chat/completions"]),
]

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n"
    b"x-request-id: bench\r\n"
    b"\r\n"
)
PRELUDE = _frame(
    _event(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }
    )
)
FIRST_CONTENT = _frame(_event(_chunk({"role": "assistant", "content": "tok"})))
CONTENT = _frame(_event(_chunk({"content": " tok"})))
FINISH = _frame(_event(_chunk({}, "stop")))
DONE_END = _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n"

_usage_frames: dict[int, bytes] = {}
_completions: dict[int, bytes] = {}


def usage_frame(chunks: int) -> bytes:
    b = _usage_frames.get(chunks)
    if b is None:
        obj = {
            "choices": [],
            "created": CREATED,
            "id": "chatcmpl-bench",
            "model": MODEL,
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_bench",
            "usage": _usage(chunks),
        }
        b = _usage_frames[chunks] = _frame(_event(obj))
    return b


def completion_response(chunks: int) -> bytes:
    b = _completions.get(chunks)
    if b is None:
        body = _dumps(
            {
                "choices": [
                    {
                        "finish_reason": "stop",
                        "index": 0,
                        "logprobs": None,
                        "message": {"content": "Hello from the bench fake.", "role": "assistant"},
                    }
                ],
                "created": CREATED,
                "id": "chatcmpl-bench",
                "model": MODEL,
                "object": "chat.completion",
                "prompt_filter_results": PROMPT_FILTER_RESULTS,
                "system_fingerprint": "fp_bench",
                "usage": _usage(chunks),
            }
        )
        b = _completions[chunks] = json_response(200, body)
    return b


def json_response(status: int, body: bytes, reason: bytes = b"OK") -> bytes:
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"x-request-id: bench\r\n\r\n%s" % (status, reason, len(body), body)
    )


NOT_FOUND = json_response(404, b'{"message":"Not Found"}', b"Not Found")
BAD_REQUEST = json_response(400, b'{"error":{"message":"bad request"}}', b"Bad Request")


class Conn:
    __slots__ = ("busy", "closed", "handshaking", "inbuf", "outbuf", "sock", "tls", "writing")

    def __init__(self, sock: socket.socket, tls: bool = False) -> None:
        self.sock = sock
        self.tls = tls  # an ssl.SSLSocket (non-blocking)
        self.handshaking = tls
        self.inbuf = bytearray()
        self.outbuf: list[bytes] = []
        self.busy = False  # a paced stream is being sent: later requests wait
        self.closed = False
        self.writing = False  # registered for EPOLLOUT


class Paced:
    __slots__ = ("conn", "delay", "due", "first", "left", "tail")

    def __init__(self, conn: Conn, left: int, delay: float, due: float, tail: bytes) -> None:
        self.conn = conn
        self.first = True
        self.left = left
        self.delay = delay
        self.due = due
        self.tail = tail


class FakeServer:
    def __init__(
        self,
        listener: socket.socket,
        url: str,
        tls_listener: socket.socket | None = None,
        tls_url: str = "",
        tls_ctx: ssl.SSLContext | None = None,
    ) -> None:
        self.listener = listener
        self.url = url
        self.tls_listener = tls_listener
        self.tls_url = tls_url
        self.tls_ctx = tls_ctx
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.timers: list[tuple[float, int, Paced]] = []
        self._seq = itertools.count()
        self.models = json_response(200, _dumps({"data": MODELS, "object": "list"}))

    # -- loop -----------------------------------------------------------------

    def serve_forever(self) -> None:
        lfd = self.listener.fileno()
        self.ep.register(lfd, select.EPOLLIN)
        tfd = -1
        if self.tls_listener is not None:
            tfd = self.tls_listener.fileno()
            self.ep.register(tfd, select.EPOLLIN)
        timers = self.timers
        monotonic = time.monotonic
        while True:
            timeout = -1.0
            if timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            for fd, ev in self.ep.poll(timeout):
                if fd == lfd:
                    self._accept(self.listener, False)
                    continue
                if fd == tfd:
                    self._accept(self.tls_listener, True)  # type: ignore[arg-type]
                    continue
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if ev & select.EPOLLOUT:
                    self._flush(conn)
                if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self._read(conn)
            if timers:
                now = monotonic()
                while timers and timers[0][0] <= now:
                    _, _, p = heapq.heappop(timers)
                    self._tick(p)

    def _accept(self, listener: socket.socket, tls: bool) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls:
                assert self.tls_ctx is not None
                sock = self.tls_ctx.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            self.conns[sock.fileno()] = Conn(sock, tls)
            self.ep.register(sock.fileno(), select.EPOLLIN)

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        fd = conn.sock.fileno()
        self.conns.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(fd)
        conn.sock.close()

    def _read(self, conn: Conn) -> None:
        if conn.tls:
            self._read_tls(conn)
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        self._process(conn)

    def _read_tls(self, conn: Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        if conn.handshaking:
            try:
                sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLError, OSError):
                self._close(conn)
                return
            conn.handshaking = False
        # An SSLSocket returns one record per recv, and epoll does not see what
        # OpenSSL already buffered: read until it wants more from the socket.
        got = False
        while True:
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except (ssl.SSLError, OSError):
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            conn.inbuf += data
            got = True
        if got:
            self._process(conn)

    def _send(self, conn: Conn, data: bytes) -> None:
        """One ``send()`` per call (one TCP segment per event, as upstream does)."""
        if conn.closed:
            return
        if conn.outbuf:
            conn.outbuf.append(data)
            return
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            n = 0  # TLS: retried later with these same bytes first, as OpenSSL requires
        except OSError:
            self._close(conn)
            return
        if n < len(data):
            conn.outbuf.append(data[n:])
            if not conn.writing:
                conn.writing = True
                self.ep.modify(conn.sock.fileno(), select.EPOLLIN | select.EPOLLOUT)

    def _flush(self, conn: Conn) -> None:
        if conn.closed or not conn.outbuf:
            return
        data = b"".join(conn.outbuf)
        conn.outbuf.clear()
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            n = 0
        except OSError:
            self._close(conn)
            return
        if n < len(data):
            conn.outbuf.append(data[n:])
        elif conn.writing:
            conn.writing = False
            self.ep.modify(conn.sock.fileno(), select.EPOLLIN)

    # -- requests -------------------------------------------------------------

    def _process(self, conn: Conn) -> None:
        buf = conn.inbuf
        while not conn.busy and not conn.closed:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            lines = head.split(b"\r\n")
            try:
                method, target, _ = lines[0].split(b" ", 2)
            except ValueError:
                self._send(conn, BAD_REQUEST)
                self._close(conn)
                return
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
            clen = int(headers.get(b"content-length", b"0") or b"0")
            if len(buf) < end + 4 + clen:
                return
            body = bytes(buf[end + 4 : end + 4 + clen])
            del buf[: end + 4 + clen]
            self._handle(conn, method, target.split(b"?", 1)[0], headers, body)

    def _handle(
        self, conn: Conn, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> None:
        if method == b"POST" and path in (b"/chat/completions", b"/v1/chat/completions"):
            self._chat(conn, headers, body)
        elif method == b"GET" and path in (b"/models", b"/v1/models"):
            self._send(conn, self.models)
        elif method == b"GET" and path == b"/copilot_internal/v2/token":
            url = self.tls_url if conn.tls else self.url  # the API on the scheme asked
            now = int(time.time())
            token = f"tid=bench;exp={now + 1800};sku=free_limited_copilot;proxy-ep=bench:0"
            obj = {
                "token": token,
                "expires_at": now + 1800,
                "refresh_in": 1500,
                "sku": "free_limited_copilot",
                "chat_enabled": True,
                "endpoints": {"api": url, "proxy": url, "telemetry": url},
            }
            self._send(conn, json_response(200, _dumps(obj)))
        elif path == b"/healthz":
            self._send(conn, json_response(200, b'"ok"'))
        else:
            self._send(conn, NOT_FOUND)

    def _chat(self, conn: Conn, headers: dict[bytes, bytes], body: bytes) -> None:
        try:
            req = _loads(body)
        except ValueError:
            self._send(conn, BAD_REQUEST)
            return
        if not isinstance(req, dict):
            self._send(conn, BAD_REQUEST)
            return
        chunks = req.get("max_tokens")
        if b"x-bench-chunks" in headers:
            chunks = int(headers[b"x-bench-chunks"])
        if not isinstance(chunks, int) or chunks < 0:
            chunks = DEFAULT_CHUNKS
        delay_ms = req.get("x_bench_delay_ms") or 0
        if b"x-bench-delay-ms" in headers:
            delay_ms = float(headers[b"x-bench-delay-ms"])
        if req.get("stream") is not True:
            self._send(conn, completion_response(chunks))
            return
        opts = req.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        tail = FINISH + (usage_frame(chunks) if include_usage else b"") + DONE_END
        self._send(conn, SSE_HEAD + PRELUDE)
        if delay_ms and chunks:
            delay = float(delay_ms) / 1000.0
            conn.busy = True
            p = Paced(conn, chunks, delay, time.monotonic() + delay, tail)
            heapq.heappush(self.timers, (p.due, next(self._seq), p))
            return
        send = self._send
        if chunks:
            send(conn, FIRST_CONTENT)
            for _ in range(chunks - 1):
                send(conn, CONTENT)
        # finish, usage and [DONE] leave together, as upstream sends them
        send(conn, tail)

    def _tick(self, p: Paced) -> None:
        conn = p.conn
        if conn.closed:
            return
        self._send(conn, FIRST_CONTENT if p.first else CONTENT)
        p.first = False
        p.left -= 1
        if p.left > 0:
            p.due += p.delay
            heapq.heappush(self.timers, (p.due, next(self._seq), p))
            return
        self._send(conn, p.tail)
        conn.busy = False
        if conn.inbuf:
            self._process(conn)


def _die_with_parent() -> None:
    """A forked server process gets SIGKILL when the first one dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def make_listener(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(4096)
    s.setblocking(False)
    return s


def tls_context(pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fake_upstream")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert", default="", help="PEM (key + chain): also serve HTTPS")
    ap.add_argument("--tls-port", type=int, default=0)
    ap.add_argument("--procs", type=int, default=1, help="processes sharing the ports")
    args = ap.parse_args(argv)
    first = make_listener(args.port)
    port = first.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    ctx = tls_context(args.tls_cert) if args.tls_cert else None
    first_tls = make_listener(args.tls_port) if ctx else None
    tls_url = f"https://127.0.0.1:{first_tls.getsockname()[1]}" if first_tls else ""
    pids = [os.getpid()]
    for _ in range(max(0, args.procs - 1)):
        listener = make_listener(port)
        tls_listener = make_listener(first_tls.getsockname()[1]) if first_tls else None
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            first.close()
            if first_tls is not None:
                first_tls.close()
            FakeServer(listener, url, tls_listener, tls_url, ctx).serve_forever()
            os._exit(0)
        listener.close()
        if tls_listener is not None:
            tls_listener.close()
        pids.append(pid)
    urls = f"{url} {tls_url}" if tls_url else url
    sys.stdout.write(f"listening on {urls} pids {' '.join(map(str, pids))}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        FakeServer(first, url, first_tls, tls_url, ctx).serve_forever()


if __name__ == "__main__":
    main()

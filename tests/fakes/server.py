"""Shared plumbing of every fake upstream: the server thread, the ASGI loop, records,
scripted failures and stream knobs.

* ``BackgroundServer`` serves any ASGI app on 127.0.0.1 (random port) from a daemon
  thread with its own ``trio.run``; TLS when given a ``trustme`` leaf::

      with BackgroundServer(app) as srv:          # binds 127.0.0.1:0
          httpx.get(srv.url + "/models")

      with BackgroundServer(app, tls_cert=ca.issue_cert("127.0.0.1", "localhost")) as srv:
          srv.url   # https://127.0.0.1:PORT

* ``ScriptedServer`` is the base of the fake upstreams (``github.py``, ``copilot.py``,
  ``zai.py``, ``https_host.py``): it records every request (``RecordedRequest``), applies
  queued ``Script``s (canned status/body, ``delay``, ``hang``, ``reply``, ``chunks``,
  ``chunk_delay``, ``drop_after``, ``hang_after``, ``usage``), sends replies and SSE
  streams while watching for the client going away, and offers ``wait_for`` so tests
  wait on conditions instead of sleeping. Each upstream adds its state, routes and
  credential rules through the cooperative hooks ``_reset_state``, ``_add_routes``,
  ``_mount``, ``_service_for`` and ``_identify``.

All state shared with the test thread is guarded by one ``threading.Condition``
(``self._cond``, re-entrant). This module is longer than most because the ASGI loop, the
stream sender and the scripting knobs only make sense together.
"""

from __future__ import annotations

import contextlib
import copy
import email.utils
import fnmatch
import itertools
import json as jsonlib
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, Self

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

ASGIApp = Callable[..., Awaitable[None]]

log = logging.getLogger("tests.fakes.server")


class BackgroundServer:
    """Serve ``app`` on 127.0.0.1 (random port) from a daemon thread.

    ``app`` is any ASGI 3 callable (raw ASGI or a ``quart_trio.QuartTrio`` app; for
    Quart apps ``RESPONSE_TIMEOUT`` is set to ``None`` automatically).
    ``tls_cert`` is a ``trustme.LeafCert``; when given, the server speaks HTTPS only.
    ``alpn`` defaults to HTTP/1.1 only so that abrupt-drop scripting behaves the same
    everywhere.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: Any | None = None,
        alpn: tuple[str, ...] = ("http/1.1",),
        graceful_timeout: float = 0.5,
        name: str = "fake-server",
    ) -> None:
        self.app = app
        self.host = host
        self.name = name
        cfg = getattr(app, "config", None)
        if isinstance(cfg, dict):  # Quart: never cut streamed responses after 60 s
            cfg["RESPONSE_TIMEOUT"] = None
        self._config = Config()
        self._config.bind = [f"{host}:{port}"]
        self._config.graceful_timeout = graceful_timeout
        self._config.accesslog = None
        self._config.errorlog = logging.getLogger(f"tests.fakes.{name}")
        self._config.keep_alive_timeout = 30
        self._config.alpn_protocols = list(alpn)
        self._pem_path: str | None = None
        if tls_cert is not None:
            fd, path = tempfile.mkstemp(prefix="fake-tls-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(tls_cert.private_key_and_cert_chain_pem.bytes())
            self._pem_path = path
            self._config.certfile = path
            self._config.keyfile = path
        self.scheme = "https" if tls_cert is not None else "http"
        self.port: int = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._shutdown: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:41234``."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"{self.name}: server did not start within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"{self.name}: server failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._token is not None and self._shutdown is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pem_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._pem_path)
            self._pem_path = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- thread body -------------------------------------------------------------
    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as e:  # surface start-up failures to start()
            self._error = e
            log.exception("%s crashed", self.name)
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(serve, self.app, self._config, shutdown_trigger=self._shutdown.wait)
            )
            self.port = int(binds[0].rsplit(":", 1)[1])
            self._started.set()


# --------------------------------------------------------------------------------------
# records and scripts
# --------------------------------------------------------------------------------------

MISSING: Any = object()  # "no json= given" (``None`` is a valid JSON body)


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date (RFC 7231) ``seconds_from_now`` in the future, e.g. for Retry-After."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@dataclass
class RecordedRequest:
    """One request the fake received (headers are lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    query_string: str
    headers: dict[str, str]
    body: bytes
    json: Any
    form: dict[str, str] | None
    service: str  # github-web | github-api | copilot | zai | unknown
    token: str | None = None  # raw credential from Authorization
    github_token: str | None = None  # the gho_ behind a Copilot token
    login: str | None = None
    time: float = 0.0
    status: int | None = None
    scripted: bool = False
    streamed: bool = False
    completed: bool = False
    disconnected: bool = False
    dropped: bool = False
    usage: dict[str, Any] | None = None  # usage the fake reported

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Script:
    """One canned behaviour for the next matching request(s). See ``ScriptedServer.script``."""

    path: str
    method: str | None = None
    token: str | None = None
    times: int | None = 1
    # canned response (used when ``status`` is set)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = MISSING
    text: str | None = None
    html: str | None = None
    body: bytes | None = None
    # behaviour of the real handler
    delay: float = 0.0
    hang: bool = False
    reply: str | None = None
    chunks: int | list[str] | None = None
    chunk_delay: float = 0.0
    drop_after: int | None = None
    hang_after: int | None = None
    usage: dict[str, Any] | None = None
    used: int = 0

    def matches(self, rec: RecordedRequest) -> bool:
        if self.method is not None and self.method.upper() != rec.method:
            return False
        if "*" in self.path or "?" in self.path:
            if not fnmatch.fnmatchcase(rec.path, self.path):
                return False
        elif self.path != rec.path:
            return False
        return self.token is None or self.token in (rec.token, rec.github_token, rec.login)


# --------------------------------------------------------------------------------------
# replies
# --------------------------------------------------------------------------------------


@dataclass
class Reply:
    """A whole response."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Stream:
    """SSE events; ``True`` marks a content delta (counted by drop_after/hang_after)."""

    events: list[tuple[bytes, bool]]
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200


Handler = Callable[[RecordedRequest, Script | None], Reply | Stream]

SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


class HttpError(Exception):
    """Raised by a handler to answer with ``reply`` at once (e.g. a failed auth check)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def dumps(obj: Any) -> str:
    """Compact JSON, the way the real upstreams send it."""
    return jsonlib.dumps(obj, separators=(",", ":"))


def json_reply(status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    return Reply(
        status,
        dumps(obj).encode(),
        [("content-type", "application/json; charset=utf-8"), *headers],
    )


def text_reply(status: int, text: str, ctype: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, text.encode(), [("content-type", ctype)])


def sse(obj: Any, event: str | None = None) -> bytes:
    """One SSE event: optional ``event:`` line, one ``data:`` line (str or compact JSON)."""
    data = obj if isinstance(obj, str) else dumps(obj)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested dicts key by key (for ``usage=`` overrides)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _canned(script: Script) -> Reply:
    assert script.status is not None
    headers = {k.lower(): v for k, v in script.headers.items()}
    if script.json is not MISSING:
        body = dumps(script.json).encode()
        headers.setdefault("content-type", "application/json; charset=utf-8")
    elif script.html is not None:
        body = script.html.encode()
        headers.setdefault("content-type", "text/html; charset=utf-8")
    elif script.text is not None:
        body = script.text.encode()
        headers.setdefault("content-type", "text/plain; charset=utf-8")
    else:
        body = script.body or b""
    return Reply(script.status, body, list(headers.items()))


# --------------------------------------------------------------------------------------
# the scripted ASGI server
# --------------------------------------------------------------------------------------


class ScriptedServer:
    """Base of the fake upstreams. Use as a context manager or ``start()``/``stop()``.

    Subclasses add their state in ``_reset_state``, exact ``(method, path)`` routes in
    ``_add_routes``, prefix-owned paths in ``_mount``, the ``service`` label of a path in
    ``_service_for`` and credential bookkeeping in ``_identify``; each calls ``super()``
    so several upstreams can share one server (see ``combined.py``).
    """

    def __init__(self, *, tls_cert: Any | None = None, name: str = "fake-upstream") -> None:
        self._cond = threading.Condition()
        self._server = BackgroundServer(self, tls_cert=tls_cert, name=name)
        self._ids = itertools.count(1)
        self._routes: dict[tuple[str, str], Handler] = {}
        self._add_routes(self._routes)
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    def _next_id(self) -> int:
        """A fresh number for ids (tokens, tool calls, response ids); unique per server."""
        return next(self._ids)

    # -- hooks for the upstreams -------------------------------------------------------
    def _reset_state(self) -> None:
        """(Re)create the upstream's own state; called under the lock."""

    def _add_routes(self, routes: dict[tuple[str, str], Handler]) -> None:
        """Add exact ``(METHOD, path)`` routes."""

    def _mount(self, rec: RecordedRequest) -> Handler | None:
        """The handler for a path this upstream owns by prefix, or ``None``."""
        return None

    def _service_for(self, path: str) -> str:
        return "unknown"

    def _identify(self, rec: RecordedRequest) -> None:
        """Fill ``rec.token``/``github_token``/``login`` beyond Authorization; under the lock."""

    # -- state -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget scripts, records, counters and every upstream's state (back to defaults)."""
        with self._cond:
            self._records: list[RecordedRequest] = []
            self._scripts: list[Script] = []
            self.disconnects = 0
            self.drops = 0
            self._reset_state()
            self._cond.notify_all()

    # -- scripting ---------------------------------------------------------------------
    def script(
        self,
        path: str,
        *,
        status: int | None = None,
        json: Any = MISSING,
        text: str | None = None,
        html: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        token: str | None = None,
        times: int | None = 1,
        delay: float = 0.0,
        hang: bool = False,
        reply: str | None = None,
        chunks: int | list[str] | None = None,
        chunk_delay: float = 0.0,
        drop_after: int | None = None,
        hang_after: int | None = None,
        usage: dict[str, Any] | None = None,
    ) -> Script:
        """Queue a behaviour for the next ``times`` requests to ``path`` (None = forever).

        ``path`` is the request path (``/chat/completions``, ``/api/coding/paas/v4/models``;
        ``*`` globs allowed). ``token`` restricts to requests whose credential, underlying
        GitHub token, or login equals it. With ``status`` the canned response is sent
        instead of the real handler (body from ``json``/``text``/``html``/``body``);
        otherwise the real handler runs with the given stream/reply modifiers.
        Scripts are consumed first-in first-out among those that match.
        """
        s = Script(
            path=path,
            method=method,
            token=token,
            times=times,
            status=status,
            headers=dict(headers or {}),
            json=json,
            text=text,
            html=html,
            body=body,
            delay=delay,
            hang=hang,
            reply=reply,
            chunks=chunks,
            chunk_delay=chunk_delay,
            drop_after=drop_after,
            hang_after=hang_after,
            usage=usage,
        )
        with self._cond:
            self._scripts.append(s)
        return s

    # -- inspection --------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._records)

    def requests_to(
        self, path: str, method: str | None = None, *, service: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests whose path equals ``path`` (or ends with it when it starts with '*')."""
        out = []
        for r in self.requests:
            ok = fnmatch.fnmatchcase(r.path, path) if "*" in path else r.path == path
            if (
                ok
                and (method is None or r.method == method.upper())
                and (service is None or r.service == service)
            ):
                out.append(r)
        return out

    def last(self, path: str | None = None) -> RecordedRequest:
        reqs = self.requests_to(path) if path else self.requests
        if not reqs:
            raise AssertionError(f"no request recorded for {path or 'any path'}")
        return reqs[-1]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Block until ``predicate()`` is truthy (re-checked on every fake state change)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s")
                self._cond.wait(min(left, 0.05))

    def wait_for_requests(
        self, path: str, count: int = 1, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        return self.wait_for(
            lambda: (r := self.requests_to(path)) and len(r) >= count and r, timeout
        )

    def wait_disconnect(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` clients in total have disconnected mid-response."""
        self.wait_for(lambda: self.disconnects >= count, timeout)

    # -- ASGI --------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        rec = self._record(scope, body)
        with self._cond:
            script = self._take_script(rec)
        conn = _Conn(self, rec, receive, send)
        try:
            await self._serve(conn, rec, script)
        finally:
            with self._cond:
                self._cond.notify_all()

    async def _serve(self, conn: _Conn, rec: RecordedRequest, script: Script | None) -> None:
        if script is not None:
            rec.scripted = True
            if script.hang:
                await conn.wait_disconnect(None)
                return
            if script.delay and await conn.wait_disconnect(script.delay):
                return
            if script.status is not None:
                await conn.reply(_canned(script))
                return
        try:
            reply = self._dispatch(rec, script)
        except HttpError as e:
            reply = e.reply
        if isinstance(reply, Stream):
            await conn.stream(reply, script)
        else:
            if script is not None and script.hang_after is not None:
                await conn.wait_disconnect(None)
                return
            await conn.reply(reply)

    def _record(self, scope: dict[str, Any], body: bytes) -> RecordedRequest:
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            key = k.decode("latin-1").lower()
            val = v.decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        qs = scope.get("query_string", b"").decode("latin-1")
        query = dict(urllib.parse.parse_qsl(qs, keep_blank_values=True))
        parsed: Any = None
        form: dict[str, str] | None = None
        ctype = headers.get("content-type", "")
        if body:
            if "x-www-form-urlencoded" in ctype:
                form = dict(
                    urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
                )
            else:
                try:
                    parsed = jsonlib.loads(body)
                except ValueError:
                    parsed = None
        path = scope["path"]
        rec = RecordedRequest(
            method=scope["method"].upper(),
            path=path,
            query=query,
            query_string=qs,
            headers=headers,
            body=body,
            json=parsed,
            form=form,
            service=self._service_for(path),
            time=time.time(),
        )
        auth = headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() in ("bearer", "token") and cred.strip():
            rec.token = cred.strip()
        with self._cond:
            self._identify(rec)
            self._records.append(rec)
            self._cond.notify_all()
        return rec

    def _take_script(self, rec: RecordedRequest) -> Script | None:
        for s in self._scripts:
            if s.matches(rec):
                s.used += 1
                if s.times is not None and s.used >= s.times:
                    self._scripts.remove(s)
                return s
        return None

    def _dispatch(self, rec: RecordedRequest, script: Script | None) -> Reply | Stream:
        p, m = rec.path, rec.method
        handler = self._mount(rec) or self._routes.get((m, p))
        if handler is None:
            if any(path == p for (_, path) in self._routes):
                return json_reply(405, {"message": "Method Not Allowed"})
            return json_reply(
                404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
            )
        return handler(rec, script)


class _Conn:
    """Sends one response, watching for the client going away."""

    def __init__(self, fake: ScriptedServer, rec: RecordedRequest, receive: Any, send: Any) -> None:
        self.fake = fake
        self.rec = rec
        self.receive = receive
        self.send = send
        self.finished = False

    def _mark(self, **flags: Any) -> None:
        with self.fake._cond:
            for k, v in flags.items():
                setattr(self.rec, k, v)
            if flags.get("disconnected"):
                self.fake.disconnects += 1
            if flags.get("dropped"):
                self.fake.drops += 1
            self.fake._cond.notify_all()

    async def _watch(self, cancel: trio.CancelScope) -> None:
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                if not self.finished:
                    self._mark(disconnected=True)
                cancel.cancel()
                return

    async def wait_disconnect(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None = forever); True if the client disconnected meanwhile."""
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as n:
                n.start_soon(self._watch, cs)
                if seconds is None:
                    await trio.sleep_forever()
                await trio.sleep(seconds)
                n.cancel_scope.cancel()
        return self.rec.disconnected

    async def reply(self, r: Reply) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in r.headers]
        headers.append((b"content-length", str(len(r.body)).encode()))
        # marked before the bytes go out, so a client that has read the whole
        # response can rely on the record being final
        self.finished = True
        self._mark(status=r.status, completed=True)
        await self.send({"type": "http.response.start", "status": r.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": r.body, "more_body": False})

    async def stream(self, s: Stream, script: Script | None) -> None:
        drop_after = script.drop_after if script else None
        hang_after = script.hang_after if script else None
        delay = script.chunk_delay if script else 0.0
        self._mark(status=s.status, streamed=True)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in s.headers]
        dropped = False
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as n:
                n.start_soon(self._watch, cs)
                await self.send(
                    {"type": "http.response.start", "status": s.status, "headers": headers}
                )
                deltas = 0
                last = len(s.events) - 1
                for i, (data, is_delta) in enumerate(s.events):
                    if is_delta:
                        if drop_after is not None and deltas >= drop_after:
                            dropped = True
                            break
                        if hang_after is not None and deltas >= hang_after:
                            await trio.sleep_forever()
                        if delay and deltas:
                            await trio.sleep(delay)
                        deltas += 1
                    if i == last:
                        self.finished = True
                        self._mark(completed=True)
                    await self.send({"type": "http.response.body", "body": data, "more_body": True})
                if dropped:
                    # Returning without finishing the body makes hypercorn close the
                    # TCP connection: the client sees an incomplete chunked body.
                    self._mark(dropped=True)
                else:
                    self.finished = True
                    await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                n.cancel_scope.cancel()

"""Run an ASGI app with hypercorn in a background thread (its own ``trio.run``).

Usage::

    with BackgroundServer(app) as srv:          # binds 127.0.0.1:0
        httpx.get(srv.url + "/models")

    with BackgroundServer(app, tls_cert=ca.issue_cert("127.0.0.1", "localhost")) as srv:
        srv.url   # https://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any

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

"""The daemon: one ``trio.run``, one supervising nursery.

Task tree (every task has an owner; shutdown is an ordered sequence)::

    root nursery
    ├── usage writer                 (ends after the request path stops reporting)
    └── services nursery
        ├── signal handler           SIGINT/SIGTERM → graceful stop, SIGHUP → reload
        ├── config watcher           file edits → reload accounts; client keys (once a second)
        ├── refresher per account    credential + model list
        ├── window saver             rate windows -> windows.json (restored at start)
        ├── API listener             hypercorn.trio.serve(shutdown_trigger=…)
        └── MITM proxy listener      (serve --with-proxy)

Client keys (:mod:`tokn_router.serve.gate`): a listener on a non-loopback address
requires them unless ``[server] auth = "none"``; on loopback they are optional
unless ``auth = "keys"``. Spending is read back from the ledger at start-up, so
budgets survive a restart.

Shutdown: the listeners stop accepting and close idle keep-alive
connections at once; requests in flight get ``server.shutdown_grace_secs``.
Streams still running then are cut by cancelling their helper tasks, which ends each
with its API's error event (``server shutting down``, see
:mod:`tokn_router.serve.pump`); hypercorn's own deadline, a moment later, bounds
the rest. Then the services nursery is cancelled, the ledger channel closed,
and the writer flushes every row before the process exits 0.

It is one module of over 400 lines on purpose: the one supervising nursery and every
task it owns (start-up, reload, shutdown) are read in one file, which is where ownership
is easiest to check.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import gc
import logging
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypercorn import trio as hypercorn_trio
from hypercorn.config import Config as HConfig

from tokn_router._version import __version__
from tokn_router.accounts import config as config_mod
from tokn_router.accounts import identity, resets, window_store
from tokn_router.accounts.config import Config, ConfigFile, ProxyModeConfig
from tokn_router.accounts.pool import AccountState, Pool
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.refresher import Refresher
from tokn_router.clients.keys import KeyStore
from tokn_router.clients.ledger import keyed_spend
from tokn_router.clients.limits import PERIOD_SECS
from tokn_router.clients.policy import AuthMode, auth_mode, is_loopback_bind
from tokn_router.edges.api import ApiServices, create_app
from tokn_router.edges.lan import LanInfo
from tokn_router.errors import ToknError
from tokn_router.net.client import ProxySetting, make_client, tls_context
from tokn_router.net.transport import TrioH11Transport
from tokn_router.net.tunnels import open_upstream
from tokn_router.serve.common import Services
from tokn_router.serve.gate import Gate
from tokn_router.serve.metrics import Metrics
from tokn_router.serve.relay import Relay
from tokn_router.serve.routes import ENDPOINTS
from tokn_router.usage import NoDatabaseError, UsageDbError, open_ledger, open_readonly
from tokn_router.usage.record import RequestRecord

log = logging.getLogger("tokn_router.daemon")

WINDOWS_SAVE_DELAY = 1.0  # seconds: coalesce a burst of window changes into one write

# After the grace period, how long the cut streams get to send their error event
# before hypercorn cancels whatever is left.
CUT_MARGIN_SECS = 1.0


class KeepAliveSafe:
    """ASGI wrapper: lets hypercorn close idle keep-alive connections (quart-trio).

    hypercorn tells the app ``http.disconnect`` from inside the send of the
    last body chunk, where it recycles the connection for the next request.
    quart-trio cancels the request on that message, and the cancellation lands
    in hypercorn's own bookkeeping that arms the keep-alive timer: such a
    connection is then never closed by the server, neither after
    ``keep_alive_timeout`` nor at shutdown (which then waits out the whole
    grace period for a client that is merely connected). A disconnect that
    arrives once the response is complete means nothing to the app, so it is
    held back; the request ends on its own as soon as that send returns.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        done = False

        async def send_(message: Any) -> None:
            nonlocal done
            if message.get("type") == "http.response.body" and not message.get("more_body"):
                done = True
            await send(message)

        async def receive_() -> Any:
            message = await receive()
            if done and message.get("type") == "http.disconnect":
                await trio.sleep_forever()
            return message

        await self.app(scope, receive_, send_)


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` and `proxy start` ask of the daemon.

    ``api=False`` runs the MITM proxy alone (``tokn-router proxy start``); its
    route mode is served by the same handlers as the API listener.
    """

    config_path: Path
    host: str | None = None  # API listener (and, in LAN mode, the proxy too)
    port: int | None = None
    no_proxy: bool = False
    # Accepted for old command lines; no effect: a non-loopback bind requires client
    # keys unless [server] auth = "none" says otherwise.
    insecure_allow_remote: bool = False
    api: bool = True
    with_proxy: bool = False
    proxy_host: str | None = None  # default [proxy_mode] host, or --host in LAN mode
    proxy_port: int | None = None
    proxy_route_mode: str | None = None


def bind_notes(host: str, auth: str | None, what: str, active_keys: int) -> list[str]:
    """What the banner says about who may use a listener on ``host``.

    A non-loopback bind is allowed: it requires client keys unless the config says
    ``[server] auth = "none"``, which is then stated loudly, every start.
    """
    mode = auth_mode(host, auth)
    if mode is AuthMode.OFF and not is_loopback_bind(host):
        return [
            f'WARNING: {what} {host} is open to anyone who can reach it ([server] auth = "none"): '
            "they can use your accounts"
        ]
    if mode is AuthMode.REQUIRED:
        hint = (
            ""
            if active_keys
            else "; none exists yet: create one with `tokn-router keys create NAME`"
        )
        return [f"{what} {host}: client keys required ({active_keys} active{hint})"]
    if mode is AuthMode.OPTIONAL and active_keys:
        return [f"{what} {host}: client keys optional ({active_keys} active)"]
    return []


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaf_errors(sub)]
    return [exc]


def listen_error(host: str, port: int, eg: BaseExceptionGroup[OSError], flag: str) -> ToknError:
    """One line for a listener that cannot bind, with what to do about it.

    hypercorn and trio wrap the OSError in nurseries of their own; the user
    needs the errno text, not "Exceptions from Trio nursery (1 sub-exception)".
    """
    err = _leaf_errors(eg)[0]
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    hint = ""
    if getattr(err, "errno", None) == errno.EADDRINUSE:
        hint = (
            f" (another tokn-router running? `tokn-router status` shows it; "
            f"or pick another port with {flag} N)"
        )
    elif getattr(err, "errno", None) == errno.EACCES:
        hint = f" (ports below 1024 need privileges; pick another with {flag} N)"
    elif getattr(err, "errno", None) == errno.EADDRNOTAVAIL:
        hint = " (no network interface has that address)"
    shown = f"[{host}]" if ":" in host else host
    return ToknError(f"cannot listen on {shown}:{port}: {reason}{hint}")


def setup_logging() -> None:
    asked = os.environ.get("TOKN_ROUTER_LOG", "").strip()
    level = (asked or "info").upper()
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    if not asked:
        # the line per request (serve/common.py) is for whoever asks for
        # TOKN_ROUTER_LOG=info; the default keeps stderr to events
        logging.getLogger("tokn_router.request").setLevel(logging.WARNING)


def _say(line: str) -> None:
    print(line, flush=True)


def _client_url(url: str) -> str:
    """A URL a local client can use: a wildcard bind becomes loopback."""
    for wildcard, local in (("//0.0.0.0:", "//127.0.0.1:"), ("//[::]:", "//[::1]:")):
        url = url.replace(wildcard, local)
    return url.rstrip("/")


def client_hint(url: str | None, proxy_url: str | None) -> str:
    """The one line that tells a user where to point their clients."""
    if url:
        base = _client_url(url)
        return f"point your client here: OPENAI_BASE_URL={base}/v1 ANTHROPIC_BASE_URL={base}"
    assert proxy_url is not None
    return (
        f"point your client here: HTTPS_PROXY={_client_url(proxy_url)} "
        '(eval "$(tokn-router proxy env)" sets it and the CA variables)'
    )


class Daemon:
    def __init__(self, opts: ServeOptions) -> None:
        self.opts = opts
        self.file = ConfigFile(opts.config_path)
        self._config_stat = self._stat()  # before loading: an edit racing start-up is seen
        self.cfg: Config = self.file.load()
        self.host = opts.host or self.cfg.server.host
        self.port = self.cfg.server.port if opts.port is None else opts.port
        # In LAN mode (--host) the proxy listens on the same interface as the API.
        self.proxy_host = opts.proxy_host or opts.host or self.cfg.proxy_mode.host
        self.proxy_port = self.cfg.proxy_mode.port if opts.proxy_port is None else opts.proxy_port
        self.lan_mode = opts.api and not is_loopback_bind(self.host)
        config_mod.ensure_state_dir(opts.config_path.parent)
        # the editor identity every request carries: packaged set, [identity], install id
        self.install_id = identity.load_install_id(config_mod.state_dir(opts.config_path))
        identity.configure(identity.resolve(self.cfg.identity, self.install_id))
        self.proxy_setting = ProxySetting.from_config(self.cfg.proxy, disabled=opts.no_proxy)
        self.transport = TrioH11Transport(verify=tls_context())
        self.client = make_client(self.proxy_setting, self.cfg.upstream, direct=self.transport)
        self.pool = Pool(self.cfg)
        self._windows_path = window_store.path_for(opts.config_path)
        saved_windows, _ = window_store.load(self._windows_path)
        self.pool.restore_windows(saved_windows)
        self.refresher = Refresher(
            self.pool,
            self.client,
            self.cfg.github,
            self._persist,
            control_timeout=self.cfg.upstream.connect_timeout_secs,
        )
        self._resets_path = resets.path_for(opts.config_path)
        self._resets_stat = self._stat(self._resets_path)
        self._resets_seen: dict[str, float] = {}
        self._started = time.time()
        # per-request helper tasks (a stream's keep-alive ticker, its pump if it
        # has one), cut when the grace period ends
        self._helper_scopes: set[trio.CancelScope] = set()
        self._helpers_cut = False
        proxied = self.proxy_setting.url is not None or self.proxy_setting.use_env
        self.relay = Relay(
            self.pool, self.refresher, self.client, direct=None if proxied else self.transport
        )
        # a broken key store stops the start: serving without the keys it holds
        # would shut out (or, on loopback, mislabel) every client
        self.keys = KeyStore(config_mod.state_dir(opts.config_path)).load()
        self.metrics = Metrics(
            pool=lambda: self.pool,
            endpoints=[e.path for e in ENDPOINTS],
            ledger_health=self._ledger_health,
            ledger_depth=self._ledger_depth,
        )
        self.gate = Gate(
            config=lambda: self.cfg,
            keys=self.keys,
            metrics=self.metrics,
            api_host=self.host,
            proxy_host=self.proxy_host,
        )
        self.shutdown = trio.Event()
        self._windows_saved = self.pool.windows_version
        self._account_scopes: dict[int, trio.CancelScope] = {}
        self._services: trio.Nursery | None = None
        self._ledger: Any = None
        self._modes: Any = None
        self._certstore: Any = None
        self._listeners: dict[str, str | None] = {"api": None, "proxy": None}

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self._ledger = open_ledger(self.cfg, self.opts.config_path)
        svc = ApiServices(
            config=lambda: self.cfg,
            pool=self.pool,
            relay=self.relay,
            report=self._report,
            spawn=self._spawn,
            gate=self.gate,
            loopback_only=is_loopback_bind(self.host),
            health_extra=self._health_extra,
        )
        if self.opts.with_proxy or self.lan_mode:
            # imported here: cryptography adds ~0.1 s to a start-up that needs no CA
            from tokn_router.edges.proxy.ca import CertStore

            self._certstore = CertStore(config_mod.ca_dir(self.cfg, self.opts.config_path))
            await trio.to_thread.run_sync(self._certstore.load)
        if self.lan_mode:
            svc.lan = LanInfo(
                proxy_port=None,
                ca_cert_path=self._certstore.cert_path,
                ca_sha256=self._certstore.fingerprint_sha256(),
            )
        async with self.client, trio.open_nursery() as root:
            await root.start(self._ledger.run)
            await self._read_spending()
            try:
                async with trio.open_nursery() as services:
                    self._services = services
                    await services.start(self.transport.run_timeouts)
                    services.start_soon(self._signals)
                    services.start_soon(self._save_windows)
                    for st in self.pool.states:
                        self._start_account(st)
                    proxy_url = None
                    if self.opts.with_proxy:
                        proxy_url = await self._start_proxy(services, svc)
                        if svc.lan is not None:
                            svc.lan = dataclasses.replace(
                                svc.lan, proxy_port=int(proxy_url.rsplit(":", 1)[1])
                            )
                    url = None
                    if self.opts.api:
                        url = await self._start_api(services, create_app(svc))
                    self._banner(url, proxy_url)
                    # start-up is over: what it built lives as long as the process,
                    # so the collector never walks it again (and is on again if
                    # `serve` turned it off for the imports)
                    gc.freeze()
                    gc.enable()
                    services.start_soon(self._watch_config)
                    await self.shutdown.wait()
                    await self._drain()
                    services.cancel_scope.cancel()
            finally:
                # every request has reported by now: let the writer flush and end
                self._ledger.close()
                with trio.CancelScope(shield=True):
                    await self._write_windows()

    async def _requests_done(self) -> None:
        if self.opts.api:
            await self._api_done.wait()
        if self._modes is not None:
            await self._modes.idle.wait()

    async def _drain(self) -> None:
        """Give the requests in flight (both listeners) the grace period, then cut them.

        hypercorn closes idle connections the moment the shutdown trigger fires
        (see KeepAliveSafe); the proxy listener's idle connections end with the
        services nursery right after this.
        """
        grace = self.cfg.server.shutdown_grace_secs
        with trio.move_on_after(grace):
            await self._requests_done()
            return
        # streams still running end with an error event instead of a silent cut
        self._helpers_cut = True
        for scope in list(self._helper_scopes):
            scope.cancel()
        with trio.move_on_after(CUT_MARGIN_SECS + 1.0):
            await self._requests_done()

    async def _start_proxy(self, nursery: trio.Nursery, svc: Services) -> str:
        # imported here: a daemon without the proxy never loads its modules
        from tokn_router.edges.proxy import listener
        from tokn_router.edges.proxy.modes import InterceptList, ProxyModes

        self._modes = ProxyModes(
            svc=svc,
            default_mode=lambda: self.opts.proxy_route_mode or self.cfg.proxy_mode.route_mode,
        )
        host = self.proxy_host
        built: list[tuple[ProxyModeConfig, InterceptList]] = []

        def intercepts(h: str, p: int) -> bool:
            # a reloaded config brings a new [proxy_mode] object: rebuild the list once
            section = self.cfg.proxy_mode
            if not built or built[0][0] is not section:
                built[:] = [(section, InterceptList(section))]
            return built[0][1](h, p)

        try:
            port = await nursery.start(
                functools.partial(
                    listener.serve_proxy,
                    host,
                    self.proxy_port,
                    intercept=intercepts,
                    handler=self._modes.handle,
                    certstore=self._certstore,
                    connect_upstream=self._connect_upstream(),
                    help_text=self._proxy_help,
                    authorize=self.gate.proxy_head,
                )
            )
        except* OSError as eg:
            flag = "--port" if not self.opts.api else "--proxy-port"
            raise listen_error(host, self.proxy_port, eg, flag) from None
        nursery.start_soon(self._warm_leaves)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    async def _warm_leaves(self) -> None:
        """Mint the leaf certificates of the built-in hosts off the event loop.

        A leaf and its TLS context cost ~2 ms each; doing them now keeps that
        out of the first request every agent makes to api.openai.com & co.
        """
        from tokn_router.edges.proxy.modes import BUILTIN_INTERCEPT

        for host in BUILTIN_INTERCEPT:
            await trio.to_thread.run_sync(self._certstore.warm, host)

    def _connect_upstream(self) -> Any:
        """How tunnels reach non-intercepted hosts: through [proxy] when one is set."""
        return functools.partial(open_upstream, self.proxy_setting)

    def _proxy_help(self) -> str:
        return (
            "tokn-router MITM proxy\n\n"
            "Set HTTPS_PROXY to this address and trust the tokn-router CA:\n"
            '  eval "$(tokn-router proxy env)"\n'
            "Requests to LLM API hosts are answered by the account pool (route mode);\n"
            "others are tunnelled untouched.\n"
        )

    async def _start_api(self, nursery: trio.Nursery, app: Any) -> str:
        hcfg = HConfig()
        host = self.host
        hcfg.bind = [f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"]
        hcfg.accesslog = None
        hcfg.errorlog = logging.getLogger("hypercorn.error")
        # the daemon cuts streams at the end of the grace period itself (_drain);
        # hypercorn's deadline only catches what is left a moment later
        hcfg.graceful_timeout = self.cfg.server.shutdown_grace_secs + CUT_MARGIN_SECS
        hcfg.keep_alive_timeout = 75
        # hypercorn defaults to 100: a burst of agents connecting at once would
        # overflow the accept queue and wait seconds for a retry
        hcfg.backlog = 4096
        hcfg.h11_max_incomplete_size = 64 * 1024
        hcfg.h2_max_inbound_frame_size = 2**14
        self._api_done = trio.Event()

        async def run_api(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await hypercorn_trio.serve(
                    KeepAliveSafe(app),
                    hcfg,
                    shutdown_trigger=self.shutdown.wait,
                    task_status=task_status,
                )
            finally:
                self._api_done.set()

        try:
            binds = await nursery.start(run_api)
        except* OSError as eg:
            raise listen_error(host, self.port, eg, "--port") from None
        return str(binds[0]) if binds else f"http://{host}:{self.port}"

    def _banner(self, url: str | None, proxy_url: str | None) -> None:
        # "listening on" comes last: whoever waits for it sees the whole banner.
        self._listeners = {"api": url, "proxy": proxy_url}
        _say(f"tokn-router {__version__}")
        states = self.pool.states
        if not states:
            _say(
                "no account configured yet: add one with `tokn-router login` "
                "(or `tokn-router import --from gh|copilot-plugin|env`); it is picked up live"
            )
        for st in states:
            flag = "" if st.account.enabled else " (disabled)"
            _say(f"account {st.id} [{st.provider.id}]{flag}")
        if self._ledger is not None and self._ledger.enabled:
            _say(f"usage ledger: {self._ledger.path}")
        if self._certstore is not None:
            _say(f"CA certificate: {self._certstore.cert_path}")
            _say(f"CA SHA-256 fingerprint: {self._certstore.fingerprint_sha256()}")
        auth = self.cfg.server.auth
        active = self.gate.active_keys()
        if self.opts.insecure_allow_remote:
            _say(
                "note: --insecure-allow-remote is no longer needed and has no effect: a "
                'non-loopback bind requires client keys unless [server] auth = "none"'
            )
        if url:
            for line in bind_notes(self.host, auth, "API", active):
                _say(line)
        if proxy_url:
            for line in bind_notes(self.proxy_host, auth, "proxy", active):
                _say(line)
        if self.lan_mode:
            _say(
                "LAN mode: clients bootstrap from /-/lan/bootstrap.json; verify the CA "
                "fingerprint above before trusting it"
            )
        if proxy_url:
            mode = self.opts.proxy_route_mode or self.cfg.proxy_mode.route_mode
            _say(f"proxy listening on {proxy_url} (route mode: {mode})")
        _say(client_hint(url, proxy_url))
        if url:
            _say(f"listening on {url}")

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as sigs:
            async for sig in sigs:
                if sig == signal.SIGHUP:
                    log.info("SIGHUP: reloading %s", self.opts.config_path)
                    self.reload()
                elif not self.shutdown.is_set():
                    log.info(
                        "shutting down (in-flight requests get %.0fs)",
                        self.cfg.server.shutdown_grace_secs,
                    )
                    self.shutdown.set()
                else:
                    log.warning("second signal: stopping now")
                    assert self._services is not None
                    self._services.cancel_scope.cancel()

    # --------------------------------------------------------------- config

    def _stat(self, path: Path | None = None) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path or self.opts.config_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def _watch_config(self) -> None:
        # trio has no portable file watcher; a stat per second is cheap.
        last = self._config_stat
        while True:
            await trio.sleep(1.0)
            # a stat of keys.json; a small read when `tokn-router keys` changed it
            self.gate.reload_keys()
            cur = self._stat()
            if cur != last:
                last = cur
                if cur is not None:
                    self.reload()
            cur_resets = self._stat(self._resets_path)
            if cur_resets != self._resets_stat:
                self._resets_stat = cur_resets
                self._apply_resets()

    def _apply_resets(self) -> None:
        """Reset the accounts `tokn-router account reset` stamped since this daemon started."""
        stamps = resets.read(self._resets_path)
        for account_id in resets.due(stamps, self._resets_seen, self._started):
            self._resets_seen[account_id] = stamps[account_id]
            st = self.pool.find(account_id)
            if st is None:
                continue
            self.pool.reset(st)
            log.info("account %s reset: cooldown and last error cleared", account_id)

    def reload(self) -> None:
        try:
            new = self.file.load()
        except ToknError as e:
            log.error("config reload failed, keeping the previous config: %s", e)
            return
        self.cfg = new
        identity.configure(identity.resolve(new.identity, self.install_id))
        log.info("config reloaded from %s", self.opts.config_path)
        self.refresher.github = new.github
        added, removed = self.pool.apply_config(new)
        for st in removed:
            scope = self._account_scopes.pop(id(st), None)
            if scope is not None:
                scope.cancel()
        for st in added:
            self._start_account(st)
        if added or removed:
            log.info(
                "accounts reloaded: +%s -%s",
                ",".join(s.id for s in added) or "0",
                ",".join(s.id for s in removed) or "0",
            )

    def _start_account(self, st: AccountState) -> None:
        assert self._services is not None
        scope = trio.CancelScope()
        self._account_scopes[id(st)] = scope

        async def runner() -> None:
            with scope:
                await self.refresher.run_account(st)

        self._services.start_soon(runner)

    async def _persist(self, account_id: str, cred: Credential) -> None:
        def edit(doc: Any) -> None:
            if config_mod.find_account_table(doc, account_id) is None:
                return  # removed meanwhile
            config_mod.set_account_fields(
                doc,
                account_id,
                access_token=cred.token,
                access_token_expires_at=cred.expires_at,
                # where the exchange said the API is: a restart must not guess it
                api_base_url=cred.api_base,
            )

        await trio.to_thread.run_sync(self.file.update, edit)

    # -------------------------------------------------------------- windows

    async def _save_windows(self) -> None:
        """Save the rate windows when they change, a burst of changes in one write."""
        while True:
            await self.pool.wait_windows_change(self._windows_saved)
            await trio.sleep(WINDOWS_SAVE_DELAY)
            await self._write_windows()

    async def _write_windows(self) -> None:
        version = self.pool.windows_version
        if version == self._windows_saved:
            return
        snapshot = self.pool.windows_snapshot()
        try:
            await trio.to_thread.run_sync(window_store.save, self._windows_path, snapshot)
        except OSError as e:
            log.warning("cannot save the rate windows to %s: %s", self._windows_path, e)
        self._windows_saved = version

    def _spawn(self, fn: Any) -> None:
        # Per-request helper tasks (stream tickers and pumps) belong to the services nursery,
        # each in a scope _drain cancels when the grace period is over.
        assert self._services is not None
        scope = trio.CancelScope()
        if self._helpers_cut:
            scope.cancel()

        async def helper() -> None:
            self._helper_scopes.add(scope)
            try:
                with scope:
                    await fn()
            finally:
                self._helper_scopes.discard(scope)

        self._services.start_soon(helper)

    # ---------------------------------------------------------------- usage

    def _report(self, record: RequestRecord) -> None:
        if self._ledger is not None:
            self._ledger.submit(record)
        self.gate.finished(record)

    def _ledger_health(self) -> dict[str, Any]:
        return self._ledger.health_dict() if self._ledger is not None else {}

    def _ledger_depth(self) -> int:
        return self._ledger.queue_depth() if self._ledger is not None else 0

    async def _read_spending(self) -> None:
        """Seed the client keys' budgets with the ledger's rows of the longest window."""
        if self._ledger is None or not self._ledger.enabled:
            if any(r.limits.has_budget() for r in self.keys.records()):
                log.warning(
                    "the usage ledger is disabled: client key budgets count only what this "
                    "process serves and start from zero at each restart"
                )
            return
        since = int(time.time()) - max(PERIOD_SECS.values())
        path = self._ledger.path

        def read() -> list[tuple[str, float, float | None, int]]:
            try:
                conn = open_readonly(path)
            except NoDatabaseError:
                return []
            try:
                return list(keyed_spend(conn, since))
            finally:
                conn.close()

        try:
            events = await trio.to_thread.run_sync(read)
        except (UsageDbError, OSError, sqlite3.Error) as e:
            log.error("client key budgets start from zero: cannot read the usage ledger: %s", e)
            return
        n = self.gate.seed(events)
        if n:
            log.info("client keys: %d request(s) of the last 30 days read from the ledger", n)

    def _health_extra(self) -> dict[str, Any]:
        # listeners: what `tokn-router status` shows (None until the banner ran)
        extra: dict[str, Any] = {"listeners": self._listeners}
        if self._ledger is not None:
            extra["usage"] = self._ledger.health_dict()
        return extra


async def serve(opts: ServeOptions) -> None:
    setup_logging()
    started = time.monotonic()
    daemon = Daemon(opts)
    await daemon.run()
    log.info("stopped after %.0fs", time.monotonic() - started)

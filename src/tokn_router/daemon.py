"""The daemon: one ``trio.run``, one supervising nursery.

Task tree (every task has an owner; shutdown is an ordered sequence)::

    root nursery
    ├── usage writer                 (ends after the request path stops reporting)
    └── services nursery
        ├── signal handler           SIGINT/SIGTERM → graceful stop, SIGHUP → reload
        ├── config watcher           file edits → reload accounts
        ├── refresher per account    credential + model list
        ├── API listener             hypercorn.trio.serve(shutdown_trigger=…)
        └── MITM proxy listener      (serve --with-proxy)

Shutdown: the listeners stop accepting and give in-flight requests
``server.shutdown_grace_secs``; then the services nursery is cancelled, the
ledger channel closed, and the writer flushes every row before the process
exits 0.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import gc
import ipaddress
import logging
import os
import signal
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
from tokn_router.accounts.config import Config, ConfigFile, ProxyModeConfig
from tokn_router.accounts.pool import AccountState, Pool
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.refresher import Refresher
from tokn_router.edges.api import ApiServices, create_app
from tokn_router.edges.lan import LanInfo
from tokn_router.errors import ToknError, UsageError
from tokn_router.net.client import ProxySetting, make_client, tls_context
from tokn_router.net.transport import TrioH11Transport
from tokn_router.net.tunnels import open_upstream
from tokn_router.serve.common import Services
from tokn_router.serve.relay import Relay
from tokn_router.usage import open_ledger
from tokn_router.usage.record import RequestRecord

log = logging.getLogger("tokn_router.daemon")


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
    insecure_allow_remote: bool = False
    api: bool = True
    with_proxy: bool = False
    proxy_host: str | None = None  # default [proxy_mode] host, or --host in LAN mode
    proxy_port: int | None = None
    proxy_route_mode: str | None = None


def is_loopback_bind(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, allow_remote: bool, what: str = "--host") -> None:
    if not is_loopback_bind(host) and not allow_remote:
        raise UsageError(
            f"refusing to listen on non-loopback address {host} ({what}): anyone who can reach "
            "it could use your accounts; pass --insecure-allow-remote to do it anyway"
        )


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


class _DropListenerLine(logging.Filter):
    """Drop the proxy listener's own "proxy listening on" record.

    The banner already prints that line on stdout (with the URL and route
    mode); a second copy on stderr only confuses.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("proxy listening on")


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
    logging.getLogger("tokn_router.proxy").addFilter(_DropListenerLine())
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
        if opts.api:
            check_bind(self.host, opts.insecure_allow_remote)
        # In LAN mode (--host) the proxy listens on the same interface as the API.
        self.proxy_host = opts.proxy_host or opts.host or self.cfg.proxy_mode.host
        self.proxy_port = self.cfg.proxy_mode.port if opts.proxy_port is None else opts.proxy_port
        if opts.with_proxy:
            check_bind(self.proxy_host, opts.insecure_allow_remote, "proxy host")
        self.lan_mode = opts.api and not is_loopback_bind(self.host)
        config_mod.ensure_state_dir(opts.config_path.parent)
        self.proxy_setting = ProxySetting.from_config(self.cfg.proxy, disabled=opts.no_proxy)
        self.transport = TrioH11Transport(verify=tls_context())
        self.client = make_client(self.proxy_setting, self.cfg.upstream, direct=self.transport)
        self.pool = Pool(self.cfg)
        self.refresher = Refresher(self.pool, self.client, self.cfg.github, self._persist)
        self.relay = Relay(self.pool, self.refresher, self.client)
        self.shutdown = trio.Event()
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
            # not awaited: opening (or creating) the database runs in a thread
            # while the listeners bind; rows submitted meanwhile wait in its channel
            root.start_soon(self._ledger.run)
            try:
                async with trio.open_nursery() as services:
                    self._services = services
                    await services.start(self.transport.run_timeouts)
                    services.start_soon(self._signals)
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
                    if self.opts.api:
                        await self._api_done.wait()
                    if self._modes is not None:
                        # proxied requests in flight get the same grace period
                        with trio.move_on_after(self.cfg.server.shutdown_grace_secs):
                            await self._modes.idle.wait()
                    services.cancel_scope.cancel()
            finally:
                # every request has reported by now: let the writer flush and end
                self._ledger.close()

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
        hcfg.graceful_timeout = self.cfg.server.shutdown_grace_secs
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
                    app, hcfg, shutdown_trigger=self.shutdown.wait, task_status=task_status
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

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.opts.config_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def _watch_config(self) -> None:
        # trio has no portable file watcher; a stat per second is cheap.
        last = self._config_stat
        while True:
            await trio.sleep(1.0)
            cur = self._stat()
            if cur != last:
                last = cur
                if cur is not None:
                    self.reload()

    def reload(self) -> None:
        try:
            new = self.file.load()
        except ToknError as e:
            log.error("config reload failed, keeping the previous config: %s", e)
            return
        self.cfg = new
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
            )

        await trio.to_thread.run_sync(self.file.update, edit)

    def _spawn(self, fn: Any) -> None:
        # Per-request helper tasks (stream pumps) belong to the services nursery.
        assert self._services is not None
        self._services.start_soon(fn)

    # ---------------------------------------------------------------- usage

    def _report(self, record: RequestRecord) -> None:
        if self._ledger is not None:
            self._ledger.submit(record)

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

"""``tokn-router serve``: run the daemon."""

from __future__ import annotations

import gc
from typing import Literal

from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.cli._params import Flag, Host, Port


@app.command
async def serve(
    *,
    host: Host = None,
    port: Port = None,
    with_proxy: Flag = False,
    proxy_port: Port = None,
    proxy_route_mode: Literal["route", "passthrough", "switch"] | None = None,
    no_proxy: Flag = False,
    insecure_allow_remote: Flag = False,
) -> None:
    """Run the local OpenAI-compatible API (default 127.0.0.1:4141).

    Parameters
    ----------
    host
        Address to listen on (default ``[server] host``). A non-loopback address
        requires client keys (``tokn-router keys``) unless ``[server] auth = "none"``;
        with --with-proxy the proxy listens there too (LAN mode).
    port
        Port to listen on (default ``[server] port``; 0 picks a free one).
    with_proxy
        Also run the MITM forward proxy (``[proxy_mode]``) in the same process.
    proxy_port
        Port of the MITM proxy (default ``[proxy_mode] port``; 0 picks a free one).
    proxy_route_mode
        Default route mode of the proxy listener (default ``[proxy_mode] route_mode``).
    no_proxy
        Ignore the ``[proxy]`` section (outbound proxy) for this run.
    insecure_allow_remote
        No effect (kept for old command lines): a non-loopback bind requires client keys.
    """
    # The daemon's imports allocate objects that live as long as the process:
    # collecting cycles among them is wasted start-up time (~8 %). The daemon
    # turns the collector back on once it listens (Daemon.run).
    gc.disable()
    from tokn_router.daemon import ServeOptions
    from tokn_router.daemon import serve as run

    await run(
        ServeOptions(
            config_path=_context.config_path(),
            host=host,
            port=port,
            with_proxy=with_proxy,
            proxy_port=proxy_port,
            proxy_route_mode=proxy_route_mode,
            no_proxy=no_proxy,
            insecure_allow_remote=insecure_allow_remote,
        )
    )

"""``tokn-router serve``: run the daemon."""

from __future__ import annotations

from typing import Annotated, Literal

from cyclopts import Parameter

from tokn_router.cli import _context, app


@app.command
async def serve(
    *,
    host: str | None = None,
    port: int | None = None,
    no_proxy: bool = False,
    insecure_allow_remote: bool = False,
) -> None:
    """Run the local OpenAI-compatible API (default 127.0.0.1:4141).

    Parameters
    ----------
    host
        Address to listen on (default ``[server] host``). Non-loopback needs --insecure-allow-remote.
    port
        Port to listen on (default ``[server] port``; 0 picks a free one).
    no_proxy
        Ignore the ``[proxy]`` section (outbound proxy) for this run.
    insecure_allow_remote
        Allow listening on a non-loopback address.
    """
    from tokn_router.daemon import ServeOptions
    from tokn_router.daemon import serve as run

    await run(
        ServeOptions(
            config_path=_context.config_path(),
            host=host,
            port=port,
            no_proxy=no_proxy,
            insecure_allow_remote=insecure_allow_remote,
        )
    )


_ = (Annotated, Literal, Parameter)

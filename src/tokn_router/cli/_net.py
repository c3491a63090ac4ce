"""Network helpers for CLI commands: short control-plane timeouts, one-line failures.

The daemon's client reads streams for minutes (``upstream.read_timeout_secs``,
300 s); a command waiting on GitHub must not. Control-plane calls (login,
import, ``account show``'s quota, ``doctor``) use ``upstream.connect_timeout_secs``
(15 s by default) for every phase: connecting, each read, and the pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx2 as httpx

from tokn_router import redact
from tokn_router.accounts.config import Config, UpstreamConfig
from tokn_router.errors import UpstreamError
from tokn_router.net import client as upstream


def control_timeout(cfg: Config) -> float:
    """Seconds a control-plane call may wait for a connection or an answer."""
    return cfg.upstream.connect_timeout_secs


def control_client(cfg: Config, *, no_proxy: bool = False) -> httpx.AsyncClient:
    """A client for one-shot commands: [proxy] applies, every timeout is short."""
    t = control_timeout(cfg)
    setting = upstream.ProxySetting.from_config(cfg.proxy, disabled=no_proxy)
    return upstream.make_client(
        setting, UpstreamConfig(connect_timeout_secs=t, read_timeout_secs=t)
    )


def contacting(what: str) -> None:
    """Say who we are waiting for, next to the command's other progress lines.

    stdout, not stderr: a failure stays the one line on stderr. Commands
    printing --json do not call this.
    """
    print(f"contacting {what}…", flush=True)


def _seconds(t: float) -> str:
    return f"{t:g}s"


@contextlib.contextmanager
def network_errors(what: str, timeout: float | None = None) -> Iterator[None]:
    """Turn transport failures (refused, DNS, TLS, proxy, timeout) into one line."""
    try:
        yield
    except httpx.TimeoutException:
        within = f" within {_seconds(timeout)}" if timeout else ""
        raise UpstreamError(
            redact.text(
                f"{what} did not answer{within}; check your network and the [proxy] "
                "settings (`tokn-router doctor` checks both)"
            )
        ) from None
    except httpx.HTTPError as e:
        detail = str(e) or type(e).__name__
        raise UpstreamError(redact.text(f"cannot reach {what}: {detail}")) from None

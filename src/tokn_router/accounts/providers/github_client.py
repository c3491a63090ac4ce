"""GitHub over HTTP: the device flow, the Copilot token exchange, user and quota.

Every function takes an ``httpx.AsyncClient`` so callers decide proxies and TLS;
what is sent and how answers are read is :mod:`tokn_router.accounts.providers.github`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx2 as httpx
import trio

from tokn_router.accounts.providers import github as gh
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.providers.github import DeviceCode, DeviceFlowError
from tokn_router.accounts.schema import GithubConfig
from tokn_router.errors import AuthError, UpstreamError


async def request_device_code(client: httpx.AsyncClient, cfg: GithubConfig) -> DeviceCode:
    url = gh.github_url(cfg) + "/login/device/code"
    resp = await client.post(
        url,
        json={"client_id": gh.CLIENT_ID, "scope": gh.SCOPE},
        headers={"Accept": "application/json"},
    )
    return gh.device_code_from(cfg, resp.status_code, resp.content)


async def poll_access_token(
    client: httpx.AsyncClient,
    cfg: GithubConfig,
    code: DeviceCode,
    *,
    on_wait: Callable[[float], Awaitable[None] | None] | None = None,
    min_interval: float = 0.0,
) -> str:
    """Poll until the user authorises; returns the GitHub OAuth token (see :func:`gh.poll_step`)."""
    url = gh.github_url(cfg) + "/login/oauth/access_token"
    interval = float(max(code.interval, min_interval))
    deadline = trio.current_time() + code.expires_in
    while True:
        await trio.sleep(interval)
        if on_wait is not None:
            r = on_wait(interval)
            if r is not None:
                await r
        resp = await client.post(
            url,
            json={
                "client_id": gh.CLIENT_ID,
                "device_code": code.device_code,
                "grant_type": gh.DEVICE_GRANT,
            },
            headers={"Accept": "application/json"},
        )
        step = gh.poll_step(resp.status_code, resp.content, interval)
        if isinstance(step, str):
            return step
        interval = step
        if trio.current_time() > deadline:
            raise DeviceFlowError(
                "the device code expired before it was authorised; run login again"
            )


async def exchange_copilot_token(
    client: httpx.AsyncClient, github_token: str, url: str
) -> Credential:
    """``GET /copilot_internal/v2/token`` → a short-lived Copilot credential."""
    try:
        resp = await client.get(url, headers=gh.exchange_headers(github_token))
    except httpx.HTTPError as e:
        raise UpstreamError(f"cannot reach {url}: {type(e).__name__}: {e}") from None
    return gh.credential_from_exchange(resp.status_code, resp.content)


async def get_user(
    client: httpx.AsyncClient, cfg: GithubConfig, github_token: str
) -> dict[str, Any]:
    url = gh.api_url(cfg) + "/user"
    resp = await client.get(
        url, headers={"Authorization": f"token {github_token}", "Accept": "application/json"}
    )
    if resp.status_code != 200:
        raise AuthError(f"GitHub /user failed ({resp.status_code})", status=resp.status_code)
    return gh.json_object(resp.content)


async def get_copilot_user(
    client: httpx.AsyncClient, cfg: GithubConfig, github_token: str
) -> dict[str, Any]:
    """``GET /copilot_internal/user``: plan and quota snapshots."""
    url = gh.api_url(cfg) + "/copilot_internal/user"
    resp = await client.get(url, headers=gh.quota_headers(github_token))
    if resp.status_code != 200:
        raise UpstreamError(
            f"GitHub /copilot_internal/user failed ({resp.status_code})", status=resp.status_code
        )
    return gh.json_object(resp.content)

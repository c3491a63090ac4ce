"""GitHub endpoints: OAuth device flow, Copilot token exchange, user and quota.

All functions take an ``httpx.AsyncClient`` so callers decide proxies and TLS.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import trio

from tokn_router.accounts import identity
from tokn_router.accounts.config import GithubConfig
from tokn_router.accounts.providers.base import Credential
from tokn_router.errors import AuthError, UpstreamError

CLIENT_ID = "Iv1.b507a08c87ecfe98"
SCOPE = "read:user"
_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def github_url(cfg: GithubConfig) -> str:
    return (os.environ.get("TOKN_ROUTER_GITHUB_URL") or cfg.url or "https://github.com").rstrip("/")


def api_url(cfg: GithubConfig) -> str:
    return (
        os.environ.get("TOKN_ROUTER_GITHUB_API_URL") or cfg.api_url or "https://api.github.com"
    ).rstrip("/")


def token_url(cfg: GithubConfig) -> str:
    return api_url(cfg) + "/copilot_internal/v2/token"


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------- device flow


@dataclass(frozen=True, slots=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int


async def request_device_code(client: httpx.AsyncClient, cfg: GithubConfig) -> DeviceCode:
    url = github_url(cfg) + "/login/device/code"
    resp = await client.post(
        url, json={"client_id": CLIENT_ID, "scope": SCOPE}, headers={"Accept": "application/json"}
    )
    data = _json(resp)
    if resp.status_code != 200 or "device_code" not in data:
        raise UpstreamError(
            f"GitHub refused the device code request ({resp.status_code}): "
            f"{data.get('error_description') or data.get('error') or resp.text[:200]}",
            status=resp.status_code,
        )
    return DeviceCode(
        device_code=str(data["device_code"]),
        user_code=str(data["user_code"]),
        verification_uri=str(data.get("verification_uri") or github_url(cfg) + "/login/device"),
        expires_in=int(data.get("expires_in") or 900),
        # honour the server's interval, 0 included (test servers); GitHub's default is 5
        interval=int(data["interval"]) if isinstance(data.get("interval"), (int, float)) else 5,
    )


class DeviceFlowError(AuthError):
    pass


async def poll_access_token(
    client: httpx.AsyncClient,
    cfg: GithubConfig,
    code: DeviceCode,
    *,
    on_wait: Callable[[float], Awaitable[None] | None] | None = None,
    min_interval: float = 0.0,
) -> str:
    """Poll until the user authorises; returns the GitHub OAuth token.

    Errors arrive with HTTP 200, so ``access_token`` is checked first and then
    ``error`` (protocol reference §1): ``authorization_pending`` keeps polling,
    ``slow_down`` adds 5 s (or takes the server's ``interval``),
    ``expired_token`` / ``access_denied`` and the fatal codes stop.
    """
    url = github_url(cfg) + "/login/oauth/access_token"
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
            json={"client_id": CLIENT_ID, "device_code": code.device_code, "grant_type": _GRANT},
            headers={"Accept": "application/json"},
        )
        data = _json(resp)
        if data.get("access_token"):
            return str(data["access_token"])
        err = data.get("error")
        if err == "authorization_pending":
            pass
        elif err == "slow_down":
            interval = float(data.get("interval") or interval + 5)
        elif err == "expired_token":
            raise DeviceFlowError(
                "the device code expired before it was authorised; run login again"
            )
        elif err == "access_denied":
            raise DeviceFlowError("authorisation was denied on GitHub")
        elif err:
            desc = data.get("error_description") or ""
            raise DeviceFlowError(f"GitHub device flow failed: {err}{': ' + desc if desc else ''}")
        else:
            raise UpstreamError(
                f"unexpected answer from GitHub while polling ({resp.status_code})",
                status=resp.status_code,
            )
        if trio.current_time() > deadline:
            raise DeviceFlowError(
                "the device code expired before it was authorised; run login again"
            )


# ---------------------------------------------------------------- Copilot token


def _exchange_error(resp: httpx.Response) -> AuthError:
    data = _json(resp)
    status = resp.status_code
    details = data.get("error_details") if isinstance(data.get("error_details"), dict) else {}
    message = (details or {}).get("message") or data.get("message") or resp.text[:200].strip()
    notification = (details or {}).get("notification_id")
    if status == 404:
        text = (
            "this GitHub token cannot be exchanged for a Copilot token (404). Tokens from "
            "`gh auth login` and personal access tokens usually lack Copilot access; run "
            "`tokn-router login` (device flow) or import the Copilot plugin's token with "
            "`tokn-router import --from copilot-plugin`"
        )
    elif status == 401:
        text = "GitHub rejected the token (401): it was revoked or has expired; run `tokn-router login`"
    elif status == 403:
        text = f"GitHub refused a Copilot token (403{', ' + notification if notification else ''})"
        if message:
            text += f": {message}"
    else:
        text = f"Copilot token exchange failed ({status})" + (f": {message}" if message else "")
    return AuthError(text, status=status, body=resp.text[:2000])


async def exchange_copilot_token(
    client: httpx.AsyncClient, github_token: str, url: str
) -> Credential:
    """``GET /copilot_internal/v2/token`` → a short-lived Copilot credential."""
    headers = {
        "Authorization": f"token {github_token}",
        "Accept": "application/json",
        "X-GitHub-Api-Version": identity.TOKEN_API_VERSION,
        "Editor-Version": identity.EDITOR_VERSION,
        "Editor-Plugin-Version": identity.EDITOR_PLUGIN_VERSION,
        "User-Agent": identity.USER_AGENT,
    }
    try:
        resp = await client.get(url, headers=headers)
    except httpx.HTTPError as e:
        raise UpstreamError(f"cannot reach {url}: {type(e).__name__}: {e}") from None
    if resp.status_code != 200:
        raise _exchange_error(resp)
    data = _json(resp)
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise UpstreamError("Copilot token exchange answered without a token", status=200)
    expires_at = data.get("expires_at")
    refresh_in = data.get("refresh_in")
    endpoints = data.get("endpoints") if isinstance(data.get("endpoints"), dict) else {}
    api_base = (endpoints or {}).get("api")
    return Credential(
        token=token,
        expires_at=int(expires_at)
        if isinstance(expires_at, (int, float))
        else int(time.time()) + 1500,
        refresh_in=int(refresh_in) if isinstance(refresh_in, (int, float)) else None,
        api_base=api_base if isinstance(api_base, str) else None,
    )


async def get_user(
    client: httpx.AsyncClient, cfg: GithubConfig, github_token: str
) -> dict[str, Any]:
    url = api_url(cfg) + "/user"
    resp = await client.get(
        url, headers={"Authorization": f"token {github_token}", "Accept": "application/json"}
    )
    if resp.status_code != 200:
        raise AuthError(f"GitHub /user failed ({resp.status_code})", status=resp.status_code)
    return _json(resp)


async def get_copilot_user(
    client: httpx.AsyncClient, cfg: GithubConfig, github_token: str
) -> dict[str, Any]:
    """``GET /copilot_internal/user``: plan and quota snapshots."""
    url = api_url(cfg) + "/copilot_internal/user"
    resp = await client.get(
        url,
        headers={
            "Authorization": f"token {github_token}",
            "Accept": "application/json",
            "X-GitHub-Api-Version": identity.TOKEN_API_VERSION,
            "Editor-Version": identity.EDITOR_VERSION,
            "User-Agent": identity.USER_AGENT,
        },
    )
    if resp.status_code != 200:
        raise UpstreamError(
            f"GitHub /copilot_internal/user failed ({resp.status_code})", status=resp.status_code
        )
    return _json(resp)

"""GitHub, without I/O: where its endpoints are, what we send, how we read the answers.

The HTTP calls themselves are in :mod:`tokn_router.accounts.providers.github_client`.
Keeping this half free of httpx and trio lets the Copilot provider, the config
commands and the importers use it without loading an HTTP stack.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from tokn_router.accounts import identity
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.schema import GithubConfig
from tokn_router.errors import AuthError, UpstreamError
from tokn_router.wire.errors import identity_hint

CLIENT_ID = "Iv1.b507a08c87ecfe98"
SCOPE = "read:user"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def github_url(cfg: GithubConfig) -> str:
    return (os.environ.get("TOKN_ROUTER_GITHUB_URL") or cfg.url or "https://github.com").rstrip("/")


def api_url(cfg: GithubConfig) -> str:
    return (
        os.environ.get("TOKN_ROUTER_GITHUB_API_URL") or cfg.api_url or "https://api.github.com"
    ).rstrip("/")


def token_url(cfg: GithubConfig) -> str:
    return api_url(cfg) + "/copilot_internal/v2/token"


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body, or ``{}`` for anything else (GitHub errors are not always JSON)."""
    try:
        data = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return {}
    return data if isinstance(data, dict) else {}


def _text(body: bytes, limit: int) -> str:
    return body.decode("utf-8", "replace")[:limit]


# ------------------------------------------------------------------- device flow


@dataclass(frozen=True, slots=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int


class DeviceFlowError(AuthError):
    pass


def device_code_from(cfg: GithubConfig, status: int, body: bytes) -> DeviceCode:
    """The answer to ``POST /login/device/code``."""
    data = json_object(body)
    if status != 200 or "device_code" not in data:
        raise UpstreamError(
            f"GitHub refused the device code request ({status}): "
            f"{data.get('error_description') or data.get('error') or _text(body, 200)}",
            status=status,
        )
    return DeviceCode(
        device_code=str(data["device_code"]),
        user_code=str(data["user_code"]),
        verification_uri=str(data.get("verification_uri") or github_url(cfg) + "/login/device"),
        expires_in=int(data.get("expires_in") or 900),
        # honour the server's interval, 0 included (test servers); GitHub's default is 5
        interval=int(data["interval"]) if isinstance(data.get("interval"), (int, float)) else 5,
    )


def poll_step(status: int, body: bytes, interval: float) -> str | float:
    """Read one answer of ``POST /login/oauth/access_token``.

    Returns the OAuth token (a ``str``), or the seconds to wait before polling
    again. GitHub answers errors with HTTP 200, so ``access_token`` is checked
    first and then ``error``: ``authorization_pending`` keeps the interval,
    ``slow_down`` adds 5 s (or takes the server's ``interval``);
    ``expired_token``, ``access_denied`` and the other codes end the flow.
    """
    data = json_object(body)
    if data.get("access_token"):
        return str(data["access_token"])
    err = data.get("error")
    if err == "authorization_pending":
        return interval
    if err == "slow_down":
        return float(data.get("interval") or interval + 5)
    if err == "expired_token":
        raise DeviceFlowError("the device code expired before it was authorised; run login again")
    if err == "access_denied":
        raise DeviceFlowError("authorisation was denied on GitHub")
    if err:
        desc = data.get("error_description") or ""
        raise DeviceFlowError(f"GitHub device flow failed: {err}{': ' + desc if desc else ''}")
    raise UpstreamError(f"unexpected answer from GitHub while polling ({status})", status=status)


# ---------------------------------------------------------------- Copilot token


def exchange_headers(github_token: str) -> dict[str, str]:
    """Headers of ``GET /copilot_internal/v2/token``, as the editor plugin sends them."""
    ident = identity.current().values  # the packaged set, or [identity] over it
    return {
        "Authorization": f"token {github_token}",
        "Accept": "application/json",
        "X-GitHub-Api-Version": ident.token_api_version,
        "Editor-Version": ident.editor_version,
        "Editor-Plugin-Version": ident.editor_plugin_version,
        "User-Agent": ident.user_agent,
    }


def exchange_error(status: int, body: bytes) -> AuthError:
    data = json_object(body)
    text_body = _text(body, 2000)
    details = data.get("error_details") if isinstance(data.get("error_details"), dict) else {}
    message = (details or {}).get("message") or data.get("message") or text_body[:200].strip()
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
        text = f"Copilot token exchange failed: HTTP {status}" + (
            f" ({message})" if message else ""
        )
    hint = identity_hint(
        status,
        body,
        "text/html" if text_body.lstrip()[:1] == "<" else "",
        version_key="identity.token_api_version",
    )
    if hint:
        text += f" (hint: {hint})"
    return AuthError(text, status=status, body=text_body)


def credential_from_exchange(status: int, body: bytes) -> Credential:
    """The answer of the token exchange: a short-lived Copilot credential, or AuthError."""
    if status != 200:
        raise exchange_error(status, body)
    data = json_object(body)
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
        # authoritative for where the API lives (GitHub Enterprise, data residency)
        api_base=api_base
        if isinstance(api_base, str) and api_base.startswith(("https://", "http://"))
        else None,
    )


def quota_headers(github_token: str) -> dict[str, str]:
    """Headers of ``GET /copilot_internal/user`` (plan and quota snapshots)."""
    ident = identity.current().values
    return {
        "Authorization": f"token {github_token}",
        "Accept": "application/json",
        "X-GitHub-Api-Version": ident.token_api_version,
        "Editor-Version": ident.editor_version,
        "User-Agent": ident.user_agent,
    }

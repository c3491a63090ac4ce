"""Verifying and storing credentials: the end of ``login`` and ``import``.

Every credential is verified before it is stored: a Copilot token exchange for
GitHub tokens, ``GET {base}/models`` for Z.ai keys. Where an existing token is
found is :mod:`tokn_router.accounts.token_sources`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx2 as httpx

from tokn_router import redact
from tokn_router.accounts import config
from tokn_router.accounts.config import ConfigFile
from tokn_router.accounts.providers import PROVIDERS, github_client
from tokn_router.accounts.providers import github as gh
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.schema import Account, Config, GithubConfig
from tokn_router.accounts.token_sources import COPILOT
from tokn_router.errors import AccountError, AuthError, ConfigError, UpstreamError, UsageError

# ------------------------------------------------------------------ verification


def check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider '{provider}' (known: {', '.join(PROVIDERS)})")


async def verify_copilot(
    client: httpx.AsyncClient, token: str, refresh_url: str, source: str
) -> Credential:
    """Exchange a GitHub token once to prove Copilot access."""
    try:
        return await github_client.exchange_copilot_token(client, token, refresh_url)
    except UpstreamError as e:
        raise type(e)(redact.text(f"{source}: {e}", [token]), status=e.status, body="") from None


async def github_login(client: httpx.AsyncClient, cfg: GithubConfig, token: str) -> str | None:
    """The GitHub login of a token (``GET {api_url}/user``), or None."""
    try:
        user = await github_client.get_user(client, cfg, token)
    except (UpstreamError, httpx.HTTPError):
        return None
    login = user.get("login")
    return login if isinstance(login, str) and login else None


async def verify_zai(client: httpx.AsyncClient, key: str, base_url: str) -> int:
    """``GET {base}/models`` with the key; returns how many models it lists."""
    url = base_url.rstrip("/") + "/models"
    try:
        resp = await client.get(
            url, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"}
        )
    except httpx.HTTPError as e:
        raise UpstreamError(
            redact.text(f"cannot reach {url}: {e or type(e).__name__}", [key])
        ) from None
    if resp.status_code in (401, 403):
        raise AuthError(
            f"the API key was rejected by {url} ({resp.status_code}); check the key and "
            "that --provider / --base-url match where it was issued",
            status=resp.status_code,
        )
    if resp.status_code != 200:
        raise UpstreamError(f"{url} answered {resp.status_code}", status=resp.status_code)
    try:
        data = resp.json()
    except ValueError:
        return 0
    models = data.get("data") if isinstance(data, dict) else None
    return len(models) if isinstance(models, list) else 0


# ------------------------------------------------------------------------ storing


def check_id_free(cfg: Config, account_id: str) -> None:
    if cfg.account(account_id) is not None:
        raise AccountError(
            f"an account with id '{account_id}' already exists; pick another with --id, "
            f"or remove it first with `tokn-router account remove {account_id}`"
        )


def copilot_account(
    account_id: str, github_token: str, cred: Credential, refresh_url: str, base_url: str | None
) -> Account:
    return Account(
        id=account_id,
        provider=COPILOT,
        refresh_token=github_token,
        access_token=cred.token,
        access_token_expires_at=cred.expires_at,
        refresh_url=refresh_url,
        base_url=base_url,
    )


def api_key_account(account_id: str, provider: str, key: str, base_url: str | None) -> Account:
    return Account(id=account_id, provider=provider, api_key=key, base_url=base_url)


def validate_id(account_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._@-]+", account_id):
        raise UsageError(f"invalid account id '{account_id}': use letters, digits and . _ @ - only")
    return account_id


def store_account(cfg_file: ConfigFile, account: Account) -> None:
    """Append the account atomically; a duplicate id leaves the file unchanged."""

    def edit(doc: Any) -> None:
        if config.find_account_table(doc, account.id) is not None:
            raise AccountError(
                f"an account with id '{account.id}' already exists; pick another with --id, "
                f"or remove it first with `tokn-router account remove {account.id}`"
            )
        config.add_account(doc, account)

    try:
        cfg_file.update(edit)
    except ConfigError as e:
        raise type(e)(
            redact.text(str(e), [account.refresh_token, account.access_token, account.api_key])
        ) from None


# ----------------------------------------------------------------------- onboarding


async def add_copilot_account(
    client: httpx.AsyncClient,
    cfg_file: ConfigFile,
    github_cfg: GithubConfig,
    token: str,
    source: str,
    *,
    account_id: str | None = None,
    base_url: str | None = None,
    fallback_user: str | None = None,
) -> Account:
    """Verify a GitHub token (one Copilot token exchange) and store the account.

    The id defaults to the token's GitHub login (``GET {api_url}/user``).
    """
    refresh_url = gh.token_url(github_cfg)
    cred = await verify_copilot(client, token, refresh_url, source)
    acc_id = account_id or await github_login(client, github_cfg, token) or fallback_user
    if not acc_id:
        raise UsageError(
            "could not read the GitHub login of this token; name the account with --id"
        )
    validate_id(acc_id)
    account = copilot_account(acc_id, token, cred, refresh_url, base_url)
    store_account(cfg_file, account)
    return account


async def add_api_key_account(
    client: httpx.AsyncClient,
    cfg_file: ConfigFile,
    provider: str,
    key: str,
    *,
    account_id: str | None = None,
    base_url: str | None = None,
) -> tuple[Account, int]:
    """Verify an API key against ``GET {base}/models`` and store the account."""
    acc_id = validate_id(account_id or provider)
    check_id_free(cfg_file.load(), acc_id)
    base = (base_url or PROVIDERS[provider].default_base_url).rstrip("/")
    count = await verify_zai(client, key, base)
    account = api_key_account(acc_id, provider, key, base_url)
    store_account(cfg_file, account)
    return account, count

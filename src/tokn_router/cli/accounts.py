"""``tokn-router account list|remove|show`` and ``tokn-router headers``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from cyclopts import App, Parameter

from tokn_router import redact
from tokn_router.accounts import config, resets
from tokn_router.accounts.config import Account, Config
from tokn_router.accounts.providers import PROVIDERS, Credential, RequestInfo
from tokn_router.accounts.providers import github as gh
from tokn_router.cli import _context, app
from tokn_router.errors import AccountError, ToknError
from tokn_router.wire.initiator import Initiator, normalize_initiator_mode

account_app = App(name="account", help="List, inspect and remove accounts.")
app.command(account_app)

Flag = Annotated[bool, Parameter(negative="")]


def _find(cfg: Config, account_id: str) -> Account:
    acc = cfg.account(account_id)
    if acc is None:
        known = ", ".join(a.id for a in cfg.accounts) or "none configured"
        raise AccountError(f"no account with id '{account_id}' (accounts: {known})")
    return acc


def format_expiry(ts: int | None, now: float | None = None) -> str:
    """``2026-11-30 21:45 UTC (in 24m)`` / ``… (expired 3h ago)``."""
    if not ts:
        return "-"
    now = time.time() if now is None else now
    delta = int(ts - now)
    span = abs(delta)
    if span < 120:
        rel = f"{span}s"
    elif span < 2 * 3600:
        rel = f"{span // 60}m"
    elif span < 2 * 86400:
        rel = f"{span // 3600}h"
    else:
        rel = f"{span // 86400}d"
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))
    return f"{when} (in {rel})" if delta >= 0 else f"{when} (expired {rel} ago)"


def _token_expiry(acc: Account) -> str:
    provider = PROVIDERS.get(acc.provider)
    if provider is not None and not provider.needs_refresh():
        return "static key"
    if not acc.access_token:
        return "not minted yet"
    return format_expiry(acc.access_token_expires_at)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@account_app.command(name="list")
def account_list() -> None:
    """List accounts: id, provider, enabled, token expiry."""
    cfg = _context.config_file().load()
    if not cfg.accounts:
        print("No accounts. Add one with `tokn-router login` or `tokn-router import`.")
        return
    rows = [["ID", "PROVIDER", "ENABLED", "TOKEN EXPIRY"]]
    for a in cfg.accounts:
        rows.append([a.id, a.provider, "yes" if a.enabled else "no", _token_expiry(a)])
    print(table(rows))


@account_app.command
def remove(account_id: str, /) -> None:
    """Remove an account from the config.

    Parameters
    ----------
    account_id
        The id shown by `tokn-router account list`.
    """
    cfg_file = _context.config_file()
    _find(cfg_file.load(), account_id)
    cfg_file.update(lambda doc: config.remove_account(doc, account_id))
    print(f"Removed account '{account_id}'.")


@account_app.command
def reset(account_id: str, /) -> None:
    """Clear an account's cooldown and last error in the running daemon(s).

    Cooldowns live in the daemon's memory. This stamps the account in
    account-resets.json next to the config; every daemon using this config
    (serve, proxy start) checks that file each second, like the config
    itself, and resets the account: no cooldown, no error, no token-exchange
    back-off, and a disabled account's credential is tried again at once.
    Editing the account in the config (e.g. `config set --account ID ...`)
    does the same. A daemon started later starts fresh anyway.

    Parameters
    ----------
    account_id
        The id shown by `tokn-router account list`.
    """
    cfg_file = _context.config_file()
    _find(cfg_file.load(), account_id)
    with config.locked(cfg_file.path):
        resets.request(cfg_file.path, account_id)
    print(
        f"Reset requested for account '{account_id}': a running daemon clears its "
        "cooldown and last error within a second."
    )


# ---------------------------------------------------------------------------- show


def _quota_lines(data: dict[str, Any]) -> list[str]:
    lines = []
    for label, key in (
        ("plan", "copilot_plan"),
        ("sku", "access_type_sku"),
        ("resets", "quota_reset_date"),
    ):
        if data.get(key):
            lines.append(f"  {label}: {data[key]}")
    snaps = data.get("quota_snapshots")
    if isinstance(snaps, dict):
        for name, snap in snaps.items():
            if not isinstance(snap, dict):
                continue
            if snap.get("unlimited"):
                lines.append(f"  {name}: unlimited")
                continue
            remaining = snap.get("remaining", snap.get("quota_remaining"))
            text = f"{remaining} of {snap.get('entitlement', '?')} left"
            pct = snap.get("percent_remaining")
            if isinstance(pct, (int, float)):
                text += f" ({pct:.1f}%)"
            if snap.get("overage_count"):
                text += f", {snap['overage_count']} over"
            if "overage_permitted" in snap:
                text += ", overage " + (
                    "permitted" if snap["overage_permitted"] else "not permitted"
                )
            lines.append(f"  {name}: {text}")
    return lines or ["  (no quota information in the answer)"]


async def _fetch_quota(cfg: Config, acc: Account, no_proxy: bool) -> dict[str, Any]:
    from tokn_router.accounts.providers import github_client
    from tokn_router.cli import _net
    from tokn_router.net import client as upstream

    if not acc.refresh_token:
        raise AccountError("the account has no GitHub token (refresh_token)")
    async with upstream.client_for(cfg, no_proxy=no_proxy) as client:
        with _net.network_errors(f"GitHub at {gh.api_url(cfg.github)}"):
            return await github_client.get_copilot_user(client, cfg.github, acc.refresh_token)


def show_lines(cfg: Config, acc: Account) -> list[str]:

    provider = PROVIDERS.get(acc.provider)
    name = f" ({provider.display_name})" if provider else ""
    lines = [
        f"id:            {acc.id}",
        f"provider:      {acc.provider}{name}",
        f"enabled:       {'yes' if acc.enabled else 'no'}",
        f"auth_type:     {acc.auth_type}",
    ]
    if provider is not None and provider.needs_refresh():
        cred = Credential(token=acc.access_token) if acc.access_token else None
        source = (
            " (account base_url)"
            if acc.base_url
            else (" (from the Copilot token)" if cred else " (default)")
        )
        lines += [
            f"refresh_token: {redact.secret(acc.refresh_token)}",
            f"access_token:  {redact.secret(acc.access_token)}",
            f"token expiry:  {_token_expiry(acc)}",
            f"refresh_url:   {acc.refresh_url or gh.token_url(cfg.github)}",
            f"api base:      {provider.base_url(acc, cred)}{source}",
        ]
    else:
        base = provider.base_url(acc, None) if provider else acc.base_url or "-"
        lines += [
            f"api_key:       {redact.secret(acc.api_key)}",
            f"api base:      {base}{'' if acc.base_url else ' (default)'}",
        ]
    settings = msgspec.to_builtins(acc.settings)  # only what the config sets
    if settings:
        lines.append("settings:")
        lines += [f"  {k}: {v}" for k, v in settings.items()]
    return lines


@account_app.command
def show(account_id: str, /, *, no_proxy: Flag = False) -> None:
    """Show one account (secrets redacted); for Copilot, also the quota snapshot.

    Parameters
    ----------
    account_id
        The id shown by `tokn-router account list`.
    no_proxy
        Ignore the [proxy] section for this run.
    """
    cfg = _context.config_file().load()
    acc = _find(cfg, account_id)
    for line in show_lines(cfg, acc):
        print(line)
    provider = PROVIDERS.get(acc.provider)
    if provider is None or not provider.needs_refresh():
        return
    import trio

    try:
        data = trio.run(_fetch_quota, cfg, acc, no_proxy)
    except ToknError as e:
        secrets = [acc.refresh_token, acc.access_token]
        print(f"quota:         unavailable ({redact.text(str(e), secrets)})", flush=True)
        return
    print("quota:")
    for line in _quota_lines(data):
        print(line)


# -------------------------------------------------------------------------- headers


def default_account(cfg: Config) -> Account:
    if not cfg.accounts:
        raise AccountError("no accounts configured; add one with `tokn-router login`")
    acc = next((a for a in cfg.accounts if a.enabled), None)
    if acc is None:
        raise AccountError("every account is disabled; name one with --account")
    return acc


def resolved_headers(acc: Account) -> tuple[str, dict[str, str]]:
    """(API base, headers) of an upstream request for ``acc``, secrets redacted."""
    provider = PROVIDERS[acc.provider]
    token = provider.token(acc)
    mode = normalize_initiator_mode(acc.settings.initiator_mode)
    initiator: Initiator = "agent" if mode == "agent" else "user"
    info = RequestInfo(request_id="<request-id>", initiator=initiator)
    cred = Credential(token=token) if token else None
    hdrs = provider.headers(acc, token or "<token>", info)
    if "X-Initiator" in hdrs and mode not in ("user", "agent"):
        hdrs["X-Initiator"] = "<user|agent: from the client's X-Initiator or the request>"
    if token is None and "Authorization" in hdrs:
        hdrs["Authorization"] = (
            "Bearer <Copilot token, minted at first use>"
            if provider.needs_refresh()
            else "Bearer <no api_key set>"
        )
        return provider.base_url(acc, cred), hdrs
    return provider.base_url(acc, cred), redact.headers(hdrs)


@app.command
def headers(*, account: Annotated[str | None, Parameter(name="--account")] = None) -> None:
    """Print the upstream identity headers of an account (token redacted).

    Parameters
    ----------
    account
        Account id (default: the first enabled account).
    """
    cfg = _context.config_file().load()
    acc = _find(cfg, account) if account else default_account(cfg)
    base, hdrs = resolved_headers(acc)
    note = "" if acc.enabled else " [disabled]"
    print(f"# account '{acc.id}' ({acc.provider}){note} -> {base}")
    for k, v in hdrs.items():
        print(f"{k}: {v}")

"""``tokn-router account list|remove|show`` and ``tokn-router headers``.

It is one module of over 400 lines because the account commands and ``headers`` share
their rendering and JSON helpers.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import msgspec
from cyclopts import App, Parameter

from tokn_router import redact
from tokn_router.accounts import config, config_ops, identity, resets, window_store
from tokn_router.accounts.config import Account, Config
from tokn_router.accounts.providers import PROVIDERS, Credential, RequestInfo, copilot
from tokn_router.accounts.providers import github as gh
from tokn_router.accounts.windows import Windows
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.cli._params import Flag, Json, Yes
from tokn_router.errors import AccountError, ToknError, UsageError
from tokn_router.wire.initiator import Initiator, normalize_initiator_mode

account_app = App(name="account", help="List, inspect and remove accounts.")
app.command(account_app)

JSON_FORMAT = 1  # bumped only when a --json field changes meaning or disappears


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


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


def token_state(acc: Account, now: float | None = None) -> str:
    """``static_key`` | ``not_minted`` | ``valid`` | ``expired``."""
    provider = PROVIDERS.get(acc.provider)
    if provider is not None and not provider.needs_refresh():
        return "static_key"
    if not acc.access_token:
        return "not_minted"
    exp = acc.access_token_expires_at
    now = time.time() if now is None else now
    return "expired" if exp and exp <= now else "valid"


def saved_windows() -> tuple[dict[str, Any], float | None]:
    """The windows the daemon last saved (account id -> saved form), and when."""
    return window_store.load(window_store.path_for(_context.config_path()))


def account_json(acc: Account, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """An account for --json; ``saved`` is :func:`saved_windows`' map (read if None)."""
    if saved is None:
        saved = saved_windows()[0]
    provider = PROVIDERS.get(acc.provider)
    refreshes = provider is not None and provider.needs_refresh()
    return {
        "id": acc.id,
        "provider": acc.provider,
        "enabled": acc.enabled,
        "token_state": token_state(acc),
        "token_expires_at": acc.access_token_expires_at if refreshes else None,
        "reserve_percent": acc.reserve_percent,
        "windows": Windows.load(saved.get(acc.id)).as_json(time.time()),
    }


@account_app.command(name="list")
def account_list(*, as_json: Json = False) -> None:
    """List accounts: id, provider, enabled, token expiry.

    --json prints {"format": 1, "accounts": [...]}; each account has id,
    provider, enabled, token_state (static_key, not_minted, valid or expired)
    and token_expires_at (unix seconds or null), reserve_percent and windows (each
    rate window as the daemon last saved it); windows_saved_at says when.

    Parameters
    ----------
    as_json
        Print JSON (format above) instead of a table.
    """
    cfg = _context.config_file().load()
    if as_json:
        saved, saved_at = saved_windows()
        print_json(
            {
                "format": JSON_FORMAT,
                "accounts": [account_json(a, saved) for a in cfg.accounts],
                "windows_saved_at": int(saved_at) if saved_at else None,
            }
        )
        return
    if not cfg.accounts:
        print("No accounts. Add one with `tokn-router login` or `tokn-router import`.")
        return
    rows = [["ID", "PROVIDER", "ENABLED", "TOKEN EXPIRY"]]
    for a in cfg.accounts:
        rows.append([a.id, a.provider, "yes" if a.enabled else "no", _token_expiry(a)])
    print(table(rows))


def confirm(question: str) -> bool:
    """Ask on stderr; only "y" / "yes" (any case) agrees."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline() if sys.stdin is not None and not sys.stdin.closed else ""
    return answer.strip().lower() in ("y", "yes")


@account_app.command
def remove(account_id: str, /, *, yes: Yes = False) -> int:
    """Remove an account from the config (asks first unless --yes).

    Parameters
    ----------
    account_id
        The id shown by `tokn-router account list`.
    yes
        Do not ask for confirmation (required when stdin is not a terminal).
    """
    cfg_file = _context.config_file()
    acc = _find(cfg_file.load(), account_id)
    if not yes:
        if sys.stdin is None or not sys.stdin.isatty():
            raise UsageError(
                f"refusing to remove account '{account_id}' without confirmation: "
                "stdin is not a terminal; pass --yes"
            )
        if not confirm(
            f"Remove account '{account_id}' ({acc.provider})? Its token is deleted from "
            f"{cfg_file.path}."
        ):
            print(f"tokn-router: account '{account_id}' was kept", file=sys.stderr)
            return 1
    cfg_file.update(lambda doc: config.remove_account(doc, account_id))
    print(f"Removed account '{account_id}'.")
    return 0


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


async def _fetch_quota(cfg: Config, acc: Account, no_proxy: bool, say: bool) -> dict[str, Any]:
    from tokn_router.accounts.providers import github_client
    from tokn_router.cli import _net

    if not acc.refresh_token:
        raise AccountError("the account has no GitHub token (refresh_token)")
    where = f"GitHub at {gh.api_url(cfg.github)}"
    if say:
        _net.contacting(f"{where} for the quota")
    async with _net.control_client(cfg, no_proxy=no_proxy) as client:
        with _net.network_errors(where, _net.control_timeout(cfg)):
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
    if acc.reserve_percent:
        lines.append(f"reserve:       {acc.reserve_percent:g}% of each window")
    settings = msgspec.to_builtins(acc.settings)  # only what the config sets
    if settings:
        lines.append("settings:")
        lines += [f"  {k}: {v}" for k, v in settings.items()]
    return lines


def window_lines(acc: Account, now: float | None = None) -> list[str]:
    """The account's windows as the daemon last saved them."""
    saved, saved_at = saved_windows()
    windows = Windows.load(saved.get(acc.id))
    if not windows:
        return ["windows:       none seen yet (the daemon records what upstream reports)"]
    now = time.time() if now is None else now
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(saved_at)) if saved_at else "?"
    lines = [f"windows:       (as of {when})"]
    for name, w in sorted(windows.by_name.items()):
        if w.unlimited:
            text = "unlimited"
        elif w.remaining_pct is not None:
            text = f"{w.remaining_pct:g}% left"
            if w.entitlement:
                text += f" of {w.entitlement:g}"
        else:
            text = "remaining unknown"
        if w.exhausted_until > now:
            text = f"USED UP until {format_expiry(int(w.exhausted_until), now)}"
            if w.premium_only:
                text += " (free models still served)"
            if w.reason:
                text += f": {w.reason}"
        elif w.reset_at:
            verb = "resets" if w.reset_at > now else "reset since"
            text += f", {verb} {format_expiry(int(w.reset_at), now).replace('(expired ', '(')}"
        lines.append(f"  {name}: {text}")
    return lines


def show_json(cfg: Config, acc: Account) -> dict[str, Any]:
    provider = PROVIDERS.get(acc.provider)
    return {
        **account_json(acc),
        "provider_display_name": provider.display_name if provider else None,
        "config": redact.data(config_ops.effective_account(acc, cfg.github)),
    }


def _quota(
    cfg: Config, acc: Account, no_proxy: bool, *, say: bool
) -> tuple[dict[str, Any] | None, str | None]:
    """(quota answer, None) or (None, why it is unavailable); never raises a ToknError."""
    import trio

    try:
        return trio.run(_fetch_quota, cfg, acc, no_proxy, say), None
    except ToknError as e:
        return None, redact.text(str(e), [acc.refresh_token, acc.access_token])


@account_app.command
def show(account_id: str, /, *, no_proxy: Flag = False, as_json: Json = False) -> None:
    """Show one account (secrets redacted); for Copilot, also the quota snapshot.

    --json prints {"format": 1, "account": {...}}: the fields of `account list
    --json` plus provider_display_name, config (the account's effective
    settings, secrets redacted), and for Copilot accounts quota (GitHub's
    answer, or null) and quota_error (why it is missing, or null).

    Parameters
    ----------
    account_id
        The id shown by `tokn-router account list`.
    no_proxy
        Ignore the [proxy] section for this run.
    as_json
        Print JSON (format above) instead of text.
    """
    cfg = _context.config_file().load()
    acc = _find(cfg, account_id)
    provider = PROVIDERS.get(acc.provider)
    wants_quota = provider is not None and provider.needs_refresh()
    if as_json:
        out = show_json(cfg, acc)
        if wants_quota:
            data, error = _quota(cfg, acc, no_proxy, say=False)
            out["quota"] = redact.data(data) if data is not None else None
            out["quota_error"] = error
        print_json({"format": JSON_FORMAT, "account": out})
        return
    for line in [*show_lines(cfg, acc), *window_lines(acc)]:
        print(line, flush=True)
    if not wants_quota:
        return
    data, error = _quota(cfg, acc, no_proxy, say=True)
    if data is None:
        print(f"quota:         unavailable ({error})", flush=True)
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


def resolved_headers(
    acc: Account, ident: identity.Identity | None = None
) -> tuple[str, dict[str, str]]:
    """(API base, headers) of an upstream request for ``acc``, secrets redacted."""
    provider = PROVIDERS[acc.provider]
    token = provider.token(acc)
    mode = normalize_initiator_mode(acc.settings.initiator_mode)
    initiator: Initiator = "agent" if mode == "agent" else "user"
    info = RequestInfo(request_id="<request-id>", initiator=initiator)
    cred = Credential(token=token) if token else None
    if isinstance(provider, copilot.CopilotProvider):
        hdrs = copilot.build_headers(
            acc.settings, token or "<token>", info, account_id=acc.id, ident=ident
        )
        hdrs["X-Interaction-Id"] = "<new per request>"
    else:
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


def header_sources(acc: Account, ident: identity.Identity) -> dict[str, str]:
    """Header -> where its value comes from, for the headers a user may want to change."""
    if acc.provider != "github-copilot":
        return {}
    out: dict[str, str] = dict(copilot.identity_sources(acc.settings, ident))
    if ident.device_ids:
        for h in copilot.DEVICE_HEADERS:
            out[h] = "derived (install id in the state dir + account id)"
    out["X-Request-Id"] = out["X-Interaction-Id"] = "per request"
    out["X-Interaction-Type"] = "the request's intent"
    return out


@app.command
def headers(
    *,
    account: Annotated[str | None, Parameter(name="--account", metavar="ID")] = None,
    as_json: Json = False,
) -> None:
    """Print the upstream identity headers of an account (token redacted), and their sources.

    Each Copilot identity value comes from the packaged set (default), the
    config's [identity] section, or the account's [accounts.settings] (later
    ones win); the comment lines after the headers say which, for each.

    --json prints {"format": 1, "account": ID, "provider": ..., "enabled":
    true|false, "base_url": ..., "headers": {name: value}}.

    Parameters
    ----------
    account
        Account id (default: the first enabled account).
    as_json
        Print {"format": 1, "account", "provider", "enabled", "base_url",
        "headers": {name: {"value", "source"}}} instead (source null for headers
        with none).
    """
    path = _context.config_path()
    cfg = config.ConfigFile(path).load()
    acc = _find(cfg, account) if account else default_account(cfg)
    state = config.state_dir(path)
    config.ensure_state_dir(state)
    # the daemon's own identity: the same install id, so the same device ids
    ident = identity.resolve(cfg.identity, identity.load_install_id(state))
    base, hdrs = resolved_headers(acc, ident)
    sources = header_sources(acc, ident)
    if as_json:
        doc = {
            "format": JSON_FORMAT,
            "account": acc.id,
            "provider": acc.provider,
            "enabled": acc.enabled,
            "base_url": base,
            "headers": {k: {"value": v, "source": sources.get(k)} for k, v in hdrs.items()},
        }
        print_json(doc)
        return
    note = "" if acc.enabled else " [disabled]"
    print(f"# account '{acc.id}' ({acc.provider}){note} -> {base}")
    for k, v in hdrs.items():
        print(f"{k}: {v}")
    if sources:
        print(
            "# sources: default = the packaged set, [identity] = the config's [identity], "
            "account = [accounts.settings]"
        )
        for k, src in sources.items():
            print(f"#   {k}: {src}")

"""``tokn-router keys create|list|revoke|rotate``: client keys of a team server.

A key is printed once, on stdout alone (so ``KEY=$(tokn-router keys create bob)``
works); everything else goes to stderr. Listings show a key's first characters,
never the key or its hash.
"""

from __future__ import annotations

import json as _json
import math
import sqlite3
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import App, Parameter

from tokn_router.accounts import config
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.errors import ToknError, UsageError

if TYPE_CHECKING:
    # The key store and limits are imported by the keys commands only: loading them
    # (msgspec structs, regexes) costs every other command ~15 ms of start-up.
    from tokn_router.clients.keys import KeyRecord, KeyStore
    from tokn_router.clients.limits import Limits

keys_app = App(
    name="keys",
    help=(
        "Client keys for a team server: each person gets a key with optional limits.\n\n"
        "The daemon picks up changes while it runs."
    ),
)
app.command(keys_app)

_FOREVER = ("never", "none", "0")


def _store() -> KeyStore:
    from tokn_router.clients.keys import store_for  # lazy: start-up cost, see above

    return store_for(_context.config_path())


def parse_expires(value: str, now: float) -> int | None:
    """``30d``/``12h``/``2w``/``1y`` from now, an ISO date or time, or ``never``."""
    from tokn_router.clients.limits import parse_duration  # lazy: start-up cost, see above

    text = value.strip()
    if text.lower() in _FOREVER:
        return None
    try:
        return int(now) + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"invalid --expires '{value}': use a duration such as 12h, 30d, 2w or 1y, "
            "an ISO date such as 2027-01-31, or never"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive = local time
    ts = math.floor(when.timestamp())
    if ts <= now:
        raise UsageError(f"invalid --expires '{value}': that is in the past")
    return ts


def _positive(flag: str, value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise UsageError(f"{flag} must be a positive number, not {value:g}")


def build_limits(
    *,
    models: str | None,
    budget_credits: float | None,
    budget_tokens: int | None,
    per: str | None,
    rpm: int | None,
    max_streams: int | None,
) -> Limits:
    from tokn_router.clients.limits import Limits  # lazy: start-up cost, see above

    _positive("--budget-credits", budget_credits)
    _positive("--budget-tokens", budget_tokens)
    _positive("--rpm", rpm)
    _positive("--max-streams", max_streams)
    has_budget = budget_credits is not None or budget_tokens is not None
    if has_budget and per is None:
        raise UsageError("a budget needs a window: add --per day, week or month")
    if per is not None and not has_budget:
        raise UsageError("--per needs --budget-credits N or --budget-tokens N")
    globs = [g.strip() for g in (models or "").split(",") if g.strip()]
    if models is not None and not globs:
        raise UsageError("--models needs at least one model or glob, such as gpt-*,claude-*")
    return Limits(
        models=globs,
        budget_credits=budget_credits,
        budget_tokens=budget_tokens,
        budget_per=per,  # type: ignore[arg-type]  # cyclopts checked the Literal
        rpm=rpm,
        max_streams=max_streams,
    )


def _show_key(key: str, rec: KeyRecord, verb: str) -> None:
    print(
        f"{verb} key '{rec.name}' ({rec.prefix}…). The key follows; it is shown only once:",
        file=sys.stderr,
    )
    print(key, flush=True)
    print(
        "Store it now: it cannot be shown again. Give it to its user as "
        "OPENAI_API_KEY / ANTHROPIC_API_KEY (or the proxy URL's password).",
        file=sys.stderr,
    )


@keys_app.command
def create(
    name: str,
    /,
    *,
    expires: Annotated[str | None, Parameter(metavar="WHEN")] = None,
    models: Annotated[str | None, Parameter(metavar="GLOB,…")] = None,
    budget_credits: Annotated[
        float | None, Parameter(metavar="N", allow_leading_hyphen=True)
    ] = None,
    budget_tokens: Annotated[int | None, Parameter(metavar="N", allow_leading_hyphen=True)] = None,
    per: Literal["day", "week", "month"] | None = None,
    rpm: Annotated[int | None, Parameter(metavar="N", allow_leading_hyphen=True)] = None,
    max_streams: Annotated[int | None, Parameter(metavar="N", allow_leading_hyphen=True)] = None,
) -> None:
    """Create a key and print it, once.

    Parameters
    ----------
    name
        Who or what the key is for (letters, digits, . _ @ -); usage is recorded under it.
    expires
        When it stops working: a duration from now (12h, 30d, 2w, 1y), an ISO date
        or time (2027-01-31), or never (the default).
    models
        Comma-separated model ids or globs it may use (``gpt-*,claude-sonnet-*``);
        default: every model.
    budget_credits
        Credits it may spend per --per window (counts requests whose credit cost is known).
    budget_tokens
        Tokens (input + output) it may use per --per window (counts every request).
    per
        The sliding window of the budget: day (24 h), week (7 days) or month (30 days).
    rpm
        Requests per minute.
    max_streams
        Streams open at the same time.
    """
    now = time.time()
    limits = build_limits(
        models=models,
        budget_credits=budget_credits,
        budget_tokens=budget_tokens,
        per=per,
        rpm=rpm,
        max_streams=max_streams,
    )
    expires_at = parse_expires(expires, now) if expires is not None else None
    key, rec = _store().create(name, limits=limits, expires=expires_at, now=now)
    _show_key(key, rec, "Created")


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Use:
    """What the usage ledger says about the keys: last use and spending per key."""

    def __init__(
        self,
        last_used: dict[str, int] | None = None,
        events: dict[str, list[Any]] | None = None,
        note: str | None = None,
    ) -> None:
        self.last_used = last_used or {}
        self.events = events or {}
        self.note = note  # why the ledger could not be read, if it could not

    def used(self, rec: KeyRecord, now: float) -> dict[str, Any] | None:
        """The spending of ``rec`` over its budget window, or None without a budget."""
        from tokn_router.clients.limits import used  # lazy: start-up cost, see above

        lim = rec.limits
        if not lim.has_budget() or lim.budget_per is None:
            return None
        credits, tokens = used(self.events.get(rec.name, []), now, lim.budget_per)
        return {
            "per": lim.budget_per,
            "credits": round(credits, 4),
            "tokens": tokens,
            "budget_credits": lim.budget_credits,
            "budget_tokens": lim.budget_tokens,
        }


def read_use(now: float) -> Use:
    """Last use and budget-window spending of every key, from the usage ledger."""
    # lazy: start-up cost, see above (usage pulls in trio)
    from tokn_router.clients.ledger import keyed_spend, last_used
    from tokn_router.clients.limits import PERIOD_SECS, UsageEvent
    from tokn_router.usage.schema import NoDatabaseError, open_readonly

    path = _context.config_path()
    try:
        cfg = config.load(path)
        conn = open_readonly(config.usage_db_path(cfg, path))
    except NoDatabaseError:
        return Use()
    except ToknError as e:
        return Use(note=f"use not shown: {e}")
    try:
        events: dict[str, list[Any]] = {}
        since = int(now) - max(PERIOD_SECS.values())
        for name, ts, credits, tokens in keyed_spend(conn, since):
            events.setdefault(name, []).append(UsageEvent(ts, credits, tokens))
        return Use(last_used(conn), events)
    except sqlite3.Error as e:
        return Use(note=f"use not shown: cannot read the usage ledger: {e}")
    finally:
        conn.close()


def _use_text(use: dict[str, Any] | None) -> str:
    if use is None:
        return "-"
    parts = []
    if use["budget_credits"] is not None:
        parts.append(f"{use['credits']:g}/{use['budget_credits']:g} credits")
    if use["budget_tokens"] is not None:
        parts.append(f"{use['tokens']:,}/{use['budget_tokens']:,} tokens")
    return ", ".join(parts) + f" per {use['per']}"


def record_json(rec: KeyRecord, now: float, use: Use | None = None) -> dict[str, Any]:
    """One key as ``keys list --json`` prints it (no key, no hash)."""
    lim = rec.limits
    use = use or Use()
    last = use.last_used.get(rec.name, rec.last_used)
    if last is not None and last < rec.created:
        last = None  # the rows of an earlier key of the same name
    return {
        "name": rec.name,
        "prefix": rec.prefix,
        "status": rec.status(now),
        "created": _iso(rec.created),
        "created_ts": rec.created,
        "rotated": _iso(rec.rotated),
        "last_used": _iso(last),
        "last_used_ts": last,
        "expires": _iso(rec.expires),
        "expires_ts": rec.expires,
        "revoked": _iso(rec.revoked),
        "limits": {
            "models": list(lim.models),
            "budget_credits": lim.budget_credits,
            "budget_tokens": lim.budget_tokens,
            "per": lim.budget_per,
            "rpm": lim.rpm,
            "max_streams": lim.max_streams,
        },
        "use": use.used(rec, now),
    }


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@keys_app.command(name="list")
def list_keys(*, as_json: Annotated[bool, Parameter(name="--json", negative=())] = False) -> None:
    """List keys: name, prefix, status, created, last used, expiry, limits and use of the budget.

    --json prints one object, stable while its "format" is 1: format and keys,
    each with name, prefix, status (active, expired or revoked), created,
    rotated, last_used, expires, revoked (ISO 8601 UTC or null), created_ts,
    last_used_ts, expires_ts (unix seconds or null), limits (models,
    budget_credits, budget_tokens, per, rpm, max_streams; null when unset) and
    use (null without a budget, else per, credits and tokens spent over the
    sliding window, budget_credits and budget_tokens). Last use and spending
    come from the usage ledger, as the daemon counts them.

    Parameters
    ----------
    as_json
        Print JSON (format above) instead of a table.
    """
    from tokn_router.clients.limits import summary  # lazy: start-up cost, see above

    now = time.time()
    store = _store().load(strict=False)
    recs = store.records()
    use = read_use(now) if recs else Use()
    if use.note:
        print(f"note: {use.note}", file=sys.stderr)
    if as_json:
        keys = [record_json(r, now, use) for r in recs]
        print(_json.dumps({"format": 1, "keys": keys}, indent=2))
        return
    if not recs:
        print("No client keys. Create one with `tokn-router keys create NAME`.")
        return
    rows = [["NAME", "PREFIX", "STATUS", "CREATED", "LAST USED", "EXPIRES", "LIMITS", "USE"]]
    for r in recs:
        j = record_json(r, now, use)
        rows.append(
            [
                r.name,
                r.prefix + "…",
                r.status(now),
                _when(r.created),
                _when(j["last_used_ts"]),
                _when(r.expires) if r.expires else "never",
                summary(r.limits),
                _use_text(j["use"]),
            ]
        )
    print(_table(rows))


@keys_app.command
def revoke(name: str, /) -> None:
    """Revoke a key: it stops working at once (it stays listed, as revoked).

    Parameters
    ----------
    name
        The name shown by `tokn-router keys list`.
    """
    rec, changed = _store().revoke(name)
    if changed:
        print(f"Revoked key '{rec.name}' ({rec.prefix}…).")
    else:
        print(f"Key '{rec.name}' ({rec.prefix}…) was already revoked.")


@keys_app.command
def rotate(name: str, /) -> None:
    """Give a key a new value (same name, limits and expiry); the old value stops working.

    Parameters
    ----------
    name
        The name shown by `tokn-router keys list`.
    """
    key, rec = _store().rotate(name)
    _show_key(key, rec, "Rotated")

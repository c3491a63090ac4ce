"""``tokn-router usage``: what the usage ledger recorded."""

from __future__ import annotations

import json as _json
import sys
from typing import Annotated, Literal

from cyclopts import Parameter

from tokn_router.accounts import config
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.errors import UsageError


def _no_such_account(cfg: config.Config, account: str | None) -> UsageError:
    known = ", ".join(a.id for a in cfg.accounts) or "none configured"
    return UsageError(
        f"no account '{account}' in the config or the usage ledger (accounts: {known})"
    )


@app.command(name="usage")
def usage(
    *,
    since: Annotated[str | None, Parameter(metavar="WHEN")] = None,
    account: Annotated[str | None, Parameter(metavar="ID")] = None,
    by: Literal["key", "account", "model"] | None = None,
    as_json: Annotated[bool, Parameter(name="--json", negative=())] = False,
) -> int:
    """Show the usage ledger: totals and a table per account and model.

    Per account and model: requests, errors (an error was recorded, or the
    status sent was 0 or >= 400), input and output tokens (input includes
    cached tokens), Copilot AI credits and the p50 latency; with more than one
    account or model, a table per account and per model too. CREDITS is what
    Copilot said it billed (1 credit = $0.01); EST. CREDITS (marked ~) is a
    list-price estimate for the requests Copilot did not say, from the packaged
    models.dev prices: a guide, not a bill. Reads the database while a daemon
    writes to it. With no database yet, says so on stderr and exits 0 (with
    --json, an empty report whose database_exists is false).

    --json prints one object, stable while its "format" is 1: format,
    database, database_exists, since (ISO 8601 UTC or null), since_ts (unix
    seconds or null), account (or null), totals, by_account_model (sorted by
    account_id then model; each entry has account_id, which is null when no
    account served the request, and model), by_account (sorted by account_id)
    and by_model (sorted by model). totals and every entry carry requests,
    errors, input_tokens, output_tokens, cached_tokens, reasoning_tokens
    (integers), p50_latency_ms (number or null), credits and
    credits_estimated (numbers), credits_measured_requests,
    credits_estimated_requests and credits_unpriced_requests (integers).
    With --by, also "by" and "groups": one entry per name (key, account or
    model; null for none) with name and the same numbers, sorted by name.

    Parameters
    ----------
    since
        Only requests since then: a duration back from now (30m, 24h, 7d, 2w)
        or an ISO date or time (2026-01-31, 2026-01-31T09:00, local time unless
        it has an offset such as Z or +02:00). Default: all time.
    account
        Only requests served by this account id.
    by
        One line per client key, account or model instead of per account and model.
    as_json
        Print the report as JSON (format above) instead of text.
    """
    # imported here: `tokn_router.usage` pulls in trio, which other commands need not load
    from tokn_router.usage import queries
    from tokn_router.usage.schema import NoDatabaseError, open_readonly

    since_ts = queries.parse_since(since) if since is not None else None
    cfg_path = _context.config_path()
    cfg = config.load(cfg_path)
    db_path = config.usage_db_path(cfg, cfg_path)
    if not cfg.usage.enabled:
        print(
            f"note: the usage ledger is disabled ([usage] enabled = false in {cfg_path}); "
            "nothing new is recorded",
            file=sys.stderr,
        )
    # an account removed from the config still has its rows: only an id that is
    # neither configured nor in the ledger is unknown
    unknown = account is not None and cfg.account(account) is None
    try:
        conn = open_readonly(db_path)
    except NoDatabaseError:
        if unknown:
            raise _no_such_account(cfg, account) from None
        print(
            f"no usage recorded yet: {db_path} does not exist or is empty "
            "(`tokn-router serve` creates it)",
            file=sys.stderr,
        )
        report = queries.empty_report(db_path, since_ts=since_ts, account=account, by=by)
    else:
        try:
            report = queries.query(conn, db_path, since_ts=since_ts, account=account, by=by)
            # not configured and never seen (at any time): a typo, not "no usage"
            if unknown and not report.totals.requests:
                ever = report if since_ts is None else queries.query(conn, db_path, account=account)
                if not ever.totals.requests:
                    raise _no_such_account(cfg, account)
        finally:
            conn.close()
    if as_json:
        print(_json.dumps(queries.report_json(report), indent=2))
    elif report.database_exists:
        label = queries.since_label(since) if since is not None else None
        print(queries.format_text(report, since_label=label))
    return 0

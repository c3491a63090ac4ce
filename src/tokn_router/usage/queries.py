"""Reading the ledger: the report behind ``tokn-router usage``.

A report is totals plus one line per (account, model), per account and per
model, over the requests whose ``ts`` is at or after ``since``. Counted per
line: requests, errors (an error text was recorded, or the status sent was 0 or
>= 400), input / output / cached / reasoning tokens (unknown counts add
nothing), Copilot AI credits and the p50 latency (nearest rank over the
requests that have one).

Credits come in two sums that are never mixed: ``credits`` is what upstream
said it billed (rows with ``usage_json.credits``), ``credits_estimated`` the
list-price estimate of the rows without a measurement (``credits_est``; see
:mod:`tokn_router.usage.credits`). ``credits_unpriced_requests`` counts the
Copilot rows with token counts but neither (a model without a packaged price,
or rows recorded before credits were).

:func:`report_json` is the stable ``--json`` format (``"format": 1``)::

    {
      "format": 1,
      "database": "/home/me/.config/tokn-router/usage.db",
      "database_exists": true,
      "since": "2026-05-01T10:00:00+00:00",   # UTC, or null for all time
      "since_ts": 1777629600,                 # unix seconds, or null
      "account": "personal",                  # the --account filter, or null
      "totals": {STATS},
      "by_account_model": [                   # sorted by account_id, then model
        {"account_id": "personal", "model": "gpt-4.1", STATS...}
      ],
      "by_account": [{"account_id": "personal", STATS...}],   # sorted by account_id
      "by_model": [{"model": "gpt-4.1", STATS...}]            # sorted by model
    }

With ``--by key|account|model`` the object also has ``"by"`` (that word) and
``"groups"``: one entry per key name, account id or model, sorted by it, each
``{"name": ..., STATS...}`` (``name`` is null for requests without a key or
account). The key is the client key's name recorded in ``params_json``.

where STATS is ``"requests", "errors", "input_tokens", "output_tokens",
"cached_tokens", "reasoning_tokens"`` (integers), ``"p50_latency_ms"``
(a number, or null when no request has a latency), ``"credits"`` and
``"credits_estimated"`` (numbers, AI credits: measured, and estimated where
not measured), ``"credits_measured_requests"``, ``"credits_estimated_requests"``
and ``"credits_unpriced_requests"`` (integers). ``account_id`` is null for
requests no account served (e.g. every account cooling down); null sorts
first. New keys may be added; existing ones keep their name and meaning while
``format`` is 1.

It is one module of over 400 lines because the SQL, JSON and text views all describe one
report and must change together.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokn_router.errors import UsageError
from tokn_router.usage.schema import read_transaction

JSON_FORMAT = 1

_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, *, now: float | None = None) -> int:
    """``30m``, ``24h``, ``7d``, ``2w`` (back from now) or an ISO date/time → unix seconds.

    An ISO value without an offset is local time (``2026-01-31`` is local
    midnight); ``Z`` or ``+02:00`` are honoured. Anything else is a
    :class:`UsageError` (exit code 2).
    """
    text = value.strip()
    m = _DURATION_RE.fullmatch(text.lower())
    if m:
        now = time.time() if now is None else now
        return math.floor(now - int(m.group(1)) * _UNIT_SECS[m.group(2)])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"invalid --since '{value}': use a duration such as 30m, 24h, 7d or 2w, "
            "or an ISO date such as 2026-01-31 or 2026-01-31T09:00"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive = local time
    return math.floor(when.timestamp())


def since_label(value: str) -> str | None:
    """``"last 24h"`` for a duration, None for a date (the start time says it all)."""
    text = value.strip().lower()
    return f"last {text}" if _DURATION_RE.fullmatch(text) else None


_CREDIT_DIGITS = 6


@dataclasses.dataclass
class Stats:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    p50_latency_ms: float | None = None
    credits: float = 0.0  # measured: what upstream said it billed
    credits_estimated: float = 0.0  # list-price estimate of the requests not measured
    credits_measured_requests: int = 0
    credits_estimated_requests: int = 0
    credits_unpriced_requests: int = 0  # Copilot rows with tokens but no cost known

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["credits"] = round(self.credits, _CREDIT_DIGITS)
        d["credits_estimated"] = round(self.credits_estimated, _CREDIT_DIGITS)
        return d

    def add(self, other: Stats) -> None:
        """Add ``other``'s sums (not its p50: medians do not add)."""
        for f in _SUMMED:
            setattr(self, f, getattr(self, f) + getattr(other, f))


_SUMMED = tuple(f.name for f in dataclasses.fields(Stats) if f.name != "p50_latency_ms")


@dataclasses.dataclass
class Group:
    account_id: str | None
    model: str
    stats: Stats


@dataclasses.dataclass
class Report:
    database: Path
    database_exists: bool
    since_ts: int | None
    account: str | None
    totals: Stats
    groups: list[Group]
    by: str | None = None  # --by: "key", "account" or "model"
    by_groups: list[tuple[str | None, Stats]] = dataclasses.field(default_factory=list)
    by_account: list[tuple[str | None, Stats]] = dataclasses.field(default_factory=list)
    by_model: list[tuple[str, Stats]] = dataclasses.field(default_factory=list)


# --by: the SQL that names each group
BY_SQL = {
    "key": "CASE WHEN json_valid(params_json) THEN json_extract(params_json, '$.key') END",
    "account": "account_id",
    "model": "model",
}


_ERROR_SQL = "(request_error IS NOT NULL OR status = 0 OR status >= 400)"


def _json(key: str) -> str:
    # json_valid() first: one hand-edited or foreign row must not break the report.
    return f"CASE WHEN json_valid(usage_json) THEN json_extract(usage_json, '$.{key}') END"


def _usage(key: str) -> str:
    return f"COALESCE(SUM({_json(key)}), 0)"


def _has(key: str) -> str:
    return f"SUM(CASE WHEN {_json(key)} IS NOT NULL THEN 1 ELSE 0 END)"


_UNPRICED_SQL = (
    f"SUM(CASE WHEN provider_id = 'github-copilot' AND {_json('credits')} IS NULL "
    f"AND {_json('credits_est')} IS NULL "
    f"AND ({_json('input')} IS NOT NULL OR {_json('output')} IS NOT NULL) THEN 1 ELSE 0 END)"
)


# The numbers of one group of rows, in the order _stats() reads them.
_STATS_SQL = (
    f"COUNT(*), SUM(CASE WHEN {_ERROR_SQL} THEN 1 ELSE 0 END), "
    f"{_usage('input')}, {_usage('output')}, {_usage('cache_read')}, "
    f"{_usage('reasoning')}, {_usage('credits')}, {_usage('credits_est')}, "
    f"{_has('credits')}, {_has('credits_est')}, {_UNPRICED_SQL}"
)


def _stats(row: Sequence[Any]) -> Stats:
    req, err, inp, out, cached, reasoning = (int(v) for v in row[:6])
    return Stats(
        requests=req,
        errors=err,
        input_tokens=inp,
        output_tokens=out,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        credits=float(row[6]),
        credits_estimated=float(row[7]),
        credits_measured_requests=int(row[8]),
        credits_estimated_requests=int(row[9]),
        credits_unpriced_requests=int(row[10]),
    )


def p50(sorted_values: list[float]) -> float | None:
    """Nearest-rank median: an observed value, the lower one of an even count."""
    if not sorted_values:
        return None
    return sorted_values[math.ceil(len(sorted_values) / 2) - 1]


def query(
    conn: sqlite3.Connection,
    database: Path,
    *,
    since_ts: int | None = None,
    account: str | None = None,
    by: str | None = None,
) -> Report:
    """Build the report from an open ledger (see :func:`schema.open_readonly`)."""
    where: list[str] = []
    params: list[Any] = []
    if since_ts is not None:
        where.append("ts >= ?")
        params.append(since_ts)
    if account is not None:
        where.append("account_id = ?")
        params.append(account)
    where_sql = f"WHERE {' AND '.join(where)}" if where else ""
    groups: dict[tuple[str | None, str], Stats] = {}
    latencies: dict[tuple[str | None, str], list[float]] = {}
    all_latencies: list[float] = []
    with read_transaction(conn):  # both SELECTs see the same rows
        for row in conn.execute(
            f"SELECT account_id, model, {_STATS_SQL} FROM requests {where_sql} "
            "GROUP BY account_id, model ORDER BY account_id, model",
            params,
        ):
            groups[(row[0], row[1])] = _stats(row[2:])
        # Sorted globally, so every group's list comes out sorted too.
        for account_id, model, latency in conn.execute(
            "SELECT account_id, model, lat FROM (SELECT account_id, model, "
            "CASE WHEN json_valid(ctx_json) THEN json_extract(ctx_json, '$.latency_ms') END "
            f"AS lat FROM requests {where_sql}) WHERE lat IS NOT NULL ORDER BY lat",
            params,
        ):
            latencies.setdefault((account_id, model), []).append(latency)
            all_latencies.append(latency)
        by_groups = _by_groups(conn, BY_SQL[by], where_sql, params) if by else []
    totals = Stats()
    by_account: dict[str | None, Stats] = {}
    by_model: dict[str, Stats] = {}
    for key, stats in groups.items():
        stats.p50_latency_ms = p50(latencies.get(key, []))
        totals.add(stats)
        by_account.setdefault(key[0], Stats()).add(stats)
        by_model.setdefault(key[1], Stats()).add(stats)
    totals.p50_latency_ms = p50(all_latencies)
    for acc, stats in by_account.items():
        lat = sorted(v for (a, _), vs in latencies.items() if a == acc for v in vs)
        stats.p50_latency_ms = p50(lat)
    for model, stats in by_model.items():
        lat = sorted(v for (_, m), vs in latencies.items() if m == model for v in vs)
        stats.p50_latency_ms = p50(lat)
    return Report(
        database=database,
        database_exists=True,
        since_ts=since_ts,
        account=account,
        totals=totals,
        groups=[Group(a, m, s) for (a, m), s in groups.items()],
        by=by,
        by_groups=by_groups,
        by_account=sorted(by_account.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")),
        by_model=sorted(by_model.items()),
    )


def _by_groups(
    conn: sqlite3.Connection, name_sql: str, where_sql: str, params: list[Any]
) -> list[tuple[str | None, Stats]]:
    """STATS per value of ``name_sql`` (inside the caller's read transaction)."""
    out: dict[str | None, Stats] = {}
    for row in conn.execute(
        f"SELECT g, {_STATS_SQL} "
        f"FROM (SELECT {name_sql} AS g, * FROM requests {where_sql}) GROUP BY g ORDER BY g",
        params,
    ):
        out[row[0]] = _stats(row[1:])
    lat: dict[str | None, list[float]] = {}
    for g, latency in conn.execute(
        f"SELECT g, lat FROM (SELECT {name_sql} AS g, CASE WHEN json_valid(ctx_json) "
        f"THEN json_extract(ctx_json, '$.latency_ms') END AS lat FROM requests {where_sql}) "
        "WHERE lat IS NOT NULL ORDER BY lat",
        params,
    ):
        lat.setdefault(g, []).append(latency)
    for g, stats in out.items():
        stats.p50_latency_ms = p50(lat.get(g, []))
    return list(out.items())


def empty_report(
    database: Path, *, since_ts: int | None, account: str | None, by: str | None = None
) -> Report:
    return Report(database, False, since_ts, account, Stats(), [], by=by)


def report_json(report: Report) -> dict[str, Any]:
    """The ``--json`` object (format documented in this module's docstring)."""
    since = (
        datetime.fromtimestamp(report.since_ts, UTC).isoformat()
        if report.since_ts is not None
        else None
    )
    out: dict[str, Any] = {
        "format": JSON_FORMAT,
        "database": str(report.database),
        "database_exists": report.database_exists,
        "since": since,
        "since_ts": report.since_ts,
        "account": report.account,
        "totals": report.totals.as_dict(),
        "by_account_model": [
            {"account_id": g.account_id, "model": g.model, **g.stats.as_dict()}
            for g in report.groups
        ],
        "by_account": [{"account_id": a, **s.as_dict()} for a, s in report.by_account],
        "by_model": [{"model": m, **s.as_dict()} for m, s in report.by_model],
    }
    if report.by is not None:
        out["by"] = report.by
        out["groups"] = [{"name": n, **s.as_dict()} for n, s in report.by_groups]
    return out


def _n(value: int) -> str:
    return f"{value:,}"


def _count(value: int, noun: str) -> str:
    return f"{value:,} {noun}" + ("" if value == 1 else "s")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _credits(value: float, *, estimated: bool = False) -> str:
    if value == 0:
        return "0"
    text = "<0.01" if value < 0.01 else f"{value:,.2f}"
    return "~" + text if estimated else text


def _credit_cells(s: Stats) -> tuple[str, str]:
    """(measured, estimated) table cells; ``-`` when no request had such a value."""
    return (
        _credits(s.credits) if s.credits_measured_requests else "-",
        _credits(s.credits_estimated, estimated=True) if s.credits_estimated_requests else "-",
    )


def _credit_line(t: Stats) -> str:
    line = (
        f"Credits: {_credits(t.credits)} measured ({_count(t.credits_measured_requests, 'request')})"
        f" + {_credits(t.credits_estimated, estimated=True)} estimated "
        f"({_count(t.credits_estimated_requests, 'request')})"
    )
    if t.credits_unpriced_requests:
        line += f"; {_count(t.credits_unpriced_requests, 'Copilot request')} not priced"
    return line


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], left: int) -> list[str]:
    """Aligned lines: the first ``left`` columns left-aligned, numbers right-aligned."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out = []
    for row in table:
        cells = [
            cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return out


_NUMBERS = ("REQUESTS", "ERRORS", "INPUT", "OUTPUT", "CREDITS", "EST. CREDITS")


def _numbers(s: Stats) -> tuple[str, ...]:
    return (
        _n(s.requests),
        _n(s.errors),
        _n(s.input_tokens),
        _n(s.output_tokens),
        *_credit_cells(s),
    )


def format_text(report: Report, *, since_label: str | None = None) -> str:
    """The human-readable report: a header, the totals, the per account/model table.

    ``since_label`` is shown after the start time, e.g. ``"last 24h"``. Credits
    are shown measured and estimated apart (``~`` marks an estimate); with more
    than one account or model, a table per account and per model follows.
    """
    if report.since_ts is None:
        since = "all time"
    else:
        local = datetime.fromtimestamp(report.since_ts).astimezone()
        since = local.strftime("%Y-%m-%d %H:%M:%S %z")
        if since_label:
            since += f" ({since_label})"
    lines = [f"Usage ledger: {report.database}", f"Since: {since}"]
    if report.account is not None:
        lines.append(f"Account: {report.account}")
    t = report.totals
    lines.append(
        f"Total: {_count(t.requests, 'request')}, {_count(t.errors, 'error')}, "
        f"{_n(t.input_tokens)} input tokens, {_n(t.output_tokens)} output tokens, "
        f"p50 latency {_ms(t.p50_latency_ms)}"
    )
    if not report.groups:
        lines.append("No requests recorded in this period.")
        return "\n".join(lines)
    lines.append(_credit_line(t))
    lines.append("")
    if report.by is not None:  # --by: one table, grouped as asked
        lines += _table(
            (report.by.upper(), *_NUMBERS, "P50 LATENCY"),
            [
                (n if n is not None else "-", *_numbers(s), _ms(s.p50_latency_ms))
                for n, s in report.by_groups
            ],
            1,
        )
        return "\n".join(lines)
    lines += _table(
        ("ACCOUNT", "MODEL", *_NUMBERS, "P50 LATENCY"),
        [
            (
                g.account_id if g.account_id is not None else "-",
                g.model,
                *_numbers(g.stats),
                _ms(g.stats.p50_latency_ms),
            )
            for g in report.groups
        ],
        2,
    )
    if len(report.by_account) > 1:
        lines += ["", "By account:"]
        lines += _table(
            ("ACCOUNT", *_NUMBERS),
            [(a if a is not None else "-", *_numbers(s)) for a, s in report.by_account],
            1,
        )
    if len(report.by_model) > 1:
        lines += ["", "By model:"]
        lines += _table(("MODEL", *_NUMBERS), [(m, *_numbers(s)) for m, s in report.by_model], 1)
    return "\n".join(lines)


__all__ = [
    "JSON_FORMAT",
    "Group",
    "Report",
    "Stats",
    "empty_report",
    "format_text",
    "p50",
    "parse_since",
    "query",
    "report_json",
    "since_label",
]

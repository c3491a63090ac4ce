"""What the usage ledger says about client keys: spending and last use.

A row made with a key carries its name in ``params_json`` (``"key": NAME``, see
:func:`tokn_router.usage.record.to_row`); the SQL schema has no column for it, so
these queries read the JSON (pre-filtered with ``LIKE``, which SQLite does without
parsing). Blocking sqlite3 calls: the daemon runs them in a worker thread, the CLI
directly, on a connection from :func:`tokn_router.usage.schema.open_readonly`.

What a request cost (:func:`spend_of`): its credits when the row has them
(``credits``, else the estimate ``credits_est``), and its input + output tokens.
Rows of the proxy's passthrough mode are left out of budgets: they were paid with
the client's own credentials, not the team's accounts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

KEY_SQL = "CASE WHEN json_valid(params_json) THEN json_extract(params_json, '$.key') END"
# cheap pre-filter: rows without a key never go through the JSON parser
_KEYED = "params_json LIKE '%\"key\":%'"

_decode = msgspec.json.Decoder(dict[str, Any]).decode


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def spend_of(usage: Mapping[str, Any]) -> tuple[float | None, int]:
    """``(credits, tokens)`` of one row's usage; credits None when the row has none."""
    credits = _number(usage.get("credits"))
    if credits is None:
        credits = _number(usage.get("credits_est"))
    tokens = sum(int(v) for k in ("input", "output") if (v := _number(usage.get(k))) is not None)
    return credits, tokens


def _usage(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return _decode(text)
    except msgspec.MsgspecError:  # a hand-edited row must not break the daemon
        return {}


def keyed_spend(
    conn: sqlite3.Connection, since_ts: int
) -> Iterator[tuple[str, float, float | None, int]]:
    """``(key, ts, credits, tokens)`` of the keyed rows since ``since_ts``, oldest first."""
    rows = conn.execute(
        f"SELECT k, ts, usage_json FROM (SELECT {KEY_SQL} AS k, ts, usage_json, "
        "CASE WHEN json_valid(params_json) THEN json_extract(params_json, '$.route_mode') END "
        f"AS mode FROM requests WHERE ts >= ? AND {_KEYED}) "
        "WHERE k IS NOT NULL AND COALESCE(mode, '') != 'passthrough' ORDER BY ts",
        (since_ts,),
    )
    for key, ts, usage in rows:
        if not isinstance(key, str):
            continue
        credits, tokens = spend_of(_usage(usage))
        yield key, float(ts), credits, tokens


def last_used(conn: sqlite3.Connection) -> dict[str, int]:
    """The start of the latest request of every key the ledger has seen (unix seconds)."""
    rows = conn.execute(
        f"SELECT k, MAX(ts) FROM (SELECT {KEY_SQL} AS k, ts FROM requests WHERE {_KEYED}) "
        "WHERE k IS NOT NULL GROUP BY k"
    )
    return {k: int(ts) for k, ts in rows if isinstance(k, str)}


__all__ = ["KEY_SQL", "keyed_spend", "last_used", "spend_of"]

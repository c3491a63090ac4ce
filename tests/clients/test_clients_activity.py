"""Client-key bookkeeping without a daemon: spending windows, the ledger queries, metrics."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokn_router.accounts.pool import Pool
from tokn_router.accounts.schema import Config
from tokn_router.clients.activity import Activity
from tokn_router.clients.ledger import keyed_spend, last_used, spend_of
from tokn_router.clients.limits import Allow, Denial, Limits
from tokn_router.serve.metrics import Metrics, status_class
from tokn_router.usage.record import RequestRecord, to_row
from tokn_router.usage.schema import open_db

NOW = 1_800_000_000.0
DAY = 86_400


def test_spending_slides_out_of_each_window() -> None:
    a = Activity()
    a.spent("k", NOW - 8 * DAY, 5.0, 100)  # inside the month only
    a.spent("k", NOW - 2 * DAY, 2.0, 10)  # inside the week and the month
    a.spent("k", NOW - 60, None, 1)  # no credits known; inside every window
    assert a.used("k", "day", NOW) == (0.0, 1)
    assert a.used("k", "week", NOW) == (2.0, 11)
    assert a.used("k", "month", NOW) == (7.0, 111)
    # a day later the two-day-old request is three days old: still in the week
    assert a.used("k", "week", NOW + DAY) == (2.0, 11)
    assert a.used("k", "week", NOW + 6 * DAY) == (0.0, 1)
    assert a.used("nobody", "day", NOW) == (0.0, 0)


def test_requests_of_one_minute_share_a_bucket_and_old_ones_are_trimmed() -> None:
    a = Activity()
    for i in range(5000):  # one request per minute for 5000 minutes
        a.spent("k", NOW + i * 60, 1.0, 1)
    a.spent("k", NOW + 4999 * 60 + 10, 1.0, 1)  # same minute as the last one
    end = NOW + 4999 * 60 + 30
    assert a.used("k", "day", end) == (1441.0, 1441)
    spend = a._spend["k"]
    assert len(spend.ids) == 5000
    # a month on, everything has left every window and the lists were trimmed
    assert a.used("k", "month", end + 31 * DAY) == (0.0, 0)
    assert len(spend.ids) < 5000


def test_check_denies_a_spent_budget_until_its_oldest_spending_leaves() -> None:
    a = Activity()
    lim = Limits(budget_credits=10, budget_per="day")
    a.spent("k", NOW - 3600, 6.0, 0)
    assert isinstance(a.check("k", lim, NOW, stream=False), Allow)
    a.spent("k", NOW - 60, 6.0, 0)
    d = a.check("k", lim, NOW, stream=False)
    assert isinstance(d, Denial) and d.limit == "budget_credits"
    # the first 6 credits leave the window a day after they were spent
    assert d.retry_after_secs == DAY - 3600
    assert "over its budget of 10 credits per day (12 used" in d.message
    assert isinstance(a.check("k", lim, NOW + DAY - 3600 + 1, stream=False), Allow)


def test_check_counts_starts_per_minute_and_streams_in_flight() -> None:
    a = Activity()
    lim = Limits(rpm=2, max_streams=1)
    a.started("k", NOW - 61)  # outside the minute
    a.started("k", NOW - 30)
    assert isinstance(a.check("k", lim, NOW, stream=True), Allow)
    a.started("k", NOW - 1)
    d = a.check("k", lim, NOW, stream=False)
    assert isinstance(d, Denial) and d.limit == "rpm" and d.retry_after_secs == 30
    a.stream_opened("k")
    d = a.check("k", Limits(max_streams=1), NOW, stream=True)
    assert isinstance(d, Denial) and d.limit == "max_streams" and d.retry_after_secs is None
    assert isinstance(a.check("k", Limits(max_streams=1), NOW, stream=False), Allow)
    a.stream_closed("k")
    a.stream_closed("k")  # never below zero
    assert a.streams == {}


@pytest.mark.parametrize(
    ("usage", "spend"),
    [
        ({"input": 10, "output": 5}, (None, 15)),
        ({"input": 10, "output": None, "credits": 1.5}, (1.5, 10)),
        ({"credits_est": 0.25, "input": 1}, (0.25, 1)),
        ({"credits": 2, "credits_est": 0.25}, (2.0, 0)),
        ({"credits": True, "input": "x"}, (None, 0)),  # not numbers
        ({}, (None, 0)),
    ],
)
def test_spend_of_a_row(usage: dict, spend: tuple) -> None:
    assert spend_of(usage) == spend


def _insert(conn: sqlite3.Connection, i: int, ts: int, params: dict, usage: dict | str) -> None:
    conn.execute(
        "INSERT INTO requests (ts, request_id, model, params_json, usage_json, status) "
        "VALUES (?, ?, 'm', ?, ?, 200)",
        (ts, f"r{i}", json.dumps(params), usage if isinstance(usage, str) else json.dumps(usage)),
    )


def test_ledger_queries_read_the_key_from_params_json(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "usage.db")
    t = int(NOW)
    _insert(conn, 1, t - 10 * DAY, {"key": "ann"}, {"input": 1, "output": 1})  # too old
    _insert(conn, 2, t - 100, {"key": "ann", "route_mode": "route"}, {"input": 3, "credits": 2})
    _insert(conn, 3, t - 50, {"key": "bob", "route_mode": "passthrough"}, {"input": 99})
    _insert(conn, 4, t - 40, {"route_mode": "route"}, {"input": 7})  # anonymous
    _insert(conn, 5, t - 30, {"key": "ann"}, "not json")  # a hand-edited row
    _insert(conn, 6, t - 20, {"key": "carol"}, {"output": 4})
    assert list(keyed_spend(conn, t - DAY)) == [
        ("ann", t - 100.0, 2.0, 3),
        ("ann", t - 30.0, None, 0),
        ("carol", t - 20.0, None, 4),
    ]
    assert last_used(conn) == {"ann": t - 30, "bob": t - 50, "carol": t - 20}
    conn.close()


def test_a_record_stores_its_key_only_when_it_has_one() -> None:
    base = {"ts": 1, "started_at_ms": 1000, "request_id": "r", "endpoint": "/v1/x", "model": "m"}
    assert json.loads(to_row(RequestRecord(**base, key="ann"))[10])["key"] == "ann"
    assert "key" not in json.loads(to_row(RequestRecord(**base))[10])


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_render_parses_and_keeps_labels_bounded() -> None:
    pool = Pool(Config())
    m = Metrics(
        pool=lambda: pool,
        endpoints=["/v1/chat/completions"],
        ledger_health=lambda: {"ok": True, "rows_written": 3, "rows_dropped": 1, "rows_failed": 0},
        ledger_depth=lambda: 7,
    )
    rec = RequestRecord(
        ts=1,
        started_at_ms=1000,
        request_id="r1",
        endpoint="/v1/chat/completions",
        model="gpt-4.1",
        upstream_model="gpt-4.1",
        account_id="a1",
        key="ann",
        status=200,
        input_tokens=10,
        output_tokens=2,
        latency_ms=1500,
        ttft_ms=200,
    )
    m.observe(rec, 0.5)
    # a passthrough row: client-chosen path and model, no account: bounded labels
    odd = RequestRecord(
        ts=1,
        started_at_ms=1000,
        request_id="r2",
        endpoint="/made/up/path",
        model="x" * 80,
        upstream_model="x" * 80,
        status=502,
    )
    m.observe(odd, None)
    m.refusal("api", "rpm", "ann", "/v1/chat/completions", 429)
    fam = _families(m.render().decode())
    requests = {tuple(sorted(s.labels.items())): s.value for s in fam["tokn_router_requests"]}
    assert requests == {
        (("endpoint", "/v1/chat/completions"), ("key", "ann"), ("status_class", "2xx")): 1,
        (("endpoint", "/v1/chat/completions"), ("key", "ann"), ("status_class", "4xx")): 1,
        (("endpoint", "other"), ("key", "-"), ("status_class", "5xx")): 1,
    }
    errors = {tuple(sorted(s.labels.items())): s.value for s in fam["tokn_router_request_errors"]}
    assert sum(errors.values()) == 2
    tokens = {(s.labels["kind"], s.labels["model"]): s.value for s in fam["tokn_router_tokens"]}
    assert tokens == {("input", "gpt-4.1"): 10, ("output", "gpt-4.1"): 2}
    assert [s.value for s in fam["tokn_router_credits"] if s.name.endswith("_total")] == [0.5]
    hist = {s.name: s.value for s in fam["tokn_router_upstream_latency_seconds"]}
    assert hist["tokn_router_upstream_latency_seconds_count"] == 1
    assert hist["tokn_router_upstream_latency_seconds_sum"] == 1.5
    depth = fam["tokn_router_ledger_queue_depth"]
    assert [s.value for s in depth] == [7]
    assert [s.value for s in fam["tokn_router_ledger_rows_dropped"]] == [1]
    assert "x" * 80 not in m.render().decode()


def test_status_class() -> None:
    assert [status_class(s) for s in (0, 200, 429, 503, 999)] == [
        "none",
        "2xx",
        "4xx",
        "5xx",
        "none",
    ]

"""``tokn-router usage``: --since parsing, the report, and the real console script."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tokn_router.errors import UsageError
from tokn_router.usage import RequestRecord, open_db
from tokn_router.usage.queries import format_text, p50, parse_since, query, report_json
from tokn_router.usage.writer import insert_records

SNAPSHOTS = Path(__file__).resolve().parents[2] / "schemas" / "usage"
NOW = int(time.time())


def _script() -> list[str]:
    script = Path(sys.executable).parent / "tokn-router"
    if script.exists():
        return [str(script)]
    found = shutil.which("tokn-router")
    assert found, "the tokn-router console script is not installed"
    return [found]


def run_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKN_ROUTER_CONFIG": str(config_path)}
    return subprocess.run(
        [*_script(), "usage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def rec(i: int, age_s: int, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "ts": NOW - age_s,
        "started_at_ms": (NOW - age_s) * 1000,
        "request_id": f"r{i}",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4.1",
        "account_id": "personal",
        "provider_id": "github-copilot",
        "status": 200,
        "input_tokens": 100,
        "output_tokens": 10,
        "latency_ms": 100.0,
    }
    fields.update(kw)
    return RequestRecord(**fields)


# A day of traffic: recent rows (last hour) and older ones (two days ago).
RECORDS = [
    rec(1, 60, latency_ms=100.0, cached_tokens=40, reasoning_tokens=3),
    rec(2, 120, latency_ms=300.0),
    rec(3, 180, latency_ms=200.0, status=502, error="upstream 502"),
    rec(4, 240, model="claude-sonnet-4.5", input_tokens=1000, output_tokens=50, latency_ms=900.0),
    rec(5, 300, account_id="work", input_tokens=7, output_tokens=None, latency_ms=None),
    rec(6, 360, account_id=None, provider_id=None, status=503, input_tokens=None),
    rec(7, 2 * 86400, input_tokens=5000, output_tokens=500, latency_ms=50.0),
    rec(8, 2 * 86400 + 60, account_id="work", status=0, error="client went away"),
]


def populate(path: Path) -> None:
    conn = open_db(path)
    try:
        insert_records(conn, RECORDS)
    finally:
        conn.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state dir with a config (defaults) and a populated usage.db."""
    (tmp_path / "config.toml").write_text("[server]\nport = 4141\n")
    populate(tmp_path / "usage.db")
    return tmp_path


# ------------------------------------------------------------------ --since


def test_parse_since_durations_and_dates() -> None:
    now = 1_800_000_000.5
    assert parse_since("30m", now=now) == 1_800_000_000 - 1800
    assert parse_since("24h", now=now) == 1_800_000_000 - 86400
    assert parse_since("7d", now=now) == 1_800_000_000 - 7 * 86400
    assert parse_since("2w", now=now) == 1_800_000_000 - 14 * 86400
    assert parse_since(" 45s ", now=now) == 1_800_000_000 - 45
    assert parse_since("2026-01-31T09:00:00Z") == int(
        datetime(2026, 1, 31, 9, tzinfo=UTC).timestamp()
    )
    assert parse_since("2026-01-31T10:00+01:00") == parse_since("2026-01-31T09:00Z")
    local_midnight = datetime(2026, 1, 31).astimezone()  # a naive date is local time
    assert parse_since("2026-01-31") == int(local_midnight.timestamp())


@pytest.mark.parametrize("bad", ["", "yesterday", "24", "h", "-1h", "3x", "2026-13-01", "7 days"])
def test_parse_since_rejects_garbage(bad: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_since(bad)
    assert exc.value.exit_code == 2
    assert "\n" not in str(exc.value) and "--since" in str(exc.value)


# ------------------------------------------------------------------ report


def test_p50_is_nearest_rank() -> None:
    assert p50([]) is None
    assert p50([5.0]) == 5.0
    assert p50([1.0, 2.0]) == 1.0
    assert p50([1.0, 2.0, 3.0]) == 2.0
    assert p50([1.0, 2.0, 3.0, 4.0]) == 2.0


def test_query_totals_groups_filters(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    populate(path)
    conn = open_db(path)
    try:
        everything = report_json(query(conn, path))
        recent = report_json(query(conn, path, since_ts=NOW - 3600))
        work = report_json(query(conn, path, account="work"))
    finally:
        conn.close()
    assert everything["totals"] == {
        "requests": 8,
        "errors": 3,  # 502, 503 and status 0 (nothing sent)
        "input_tokens": 100 * 3 + 1000 + 7 + 5000 + 100,
        "output_tokens": 10 * 4 + 50 + 500 + 10,
        "cached_tokens": 40,
        "reasoning_tokens": 3,
        "p50_latency_ms": 100.0,  # [50, 100, 100, 100, 200, 300, 900]
        # no row carries a measured cost: every Copilot row with tokens is estimated
        # at list price (gpt-4.1: 2 / 0.5 cached / 8, claude-sonnet-4.5: 3 / 15 USD
        # per 1M), 1 credit = $0.01; row 6 has no provider, so no estimate
        "credits": 0.0,
        "credits_estimated": round(0.022 + 0.028 * 3 + 0.375 + 0.0014 + 1.4, 6),
        "credits_measured_requests": 0,
        "credits_estimated_requests": 7,
        "credits_unpriced_requests": 0,
    }
    keys = [(g["account_id"], g["model"]) for g in everything["by_account_model"]]
    assert keys == [
        (None, "gpt-4.1"),
        ("personal", "claude-sonnet-4.5"),
        ("personal", "gpt-4.1"),
        ("work", "gpt-4.1"),
    ]
    personal = everything["by_account_model"][2]
    assert personal["requests"] == 4 and personal["errors"] == 1
    assert personal["p50_latency_ms"] == 100.0  # [50, 100, 200, 300]
    assert recent["totals"]["requests"] == 6 and recent["since_ts"] == NOW - 3600
    assert work["totals"]["requests"] == 2 and work["totals"]["errors"] == 1
    assert work["account"] == "work"
    assert {g["account_id"] for g in work["by_account_model"]} == {"work"}
    # the same sums per account and per model
    assert [(a["account_id"], a["requests"]) for a in everything["by_account"]] == [
        (None, 1),
        ("personal", 5),
        ("work", 2),
    ]
    assert everything["by_account"][1]["credits_estimated"] == round(
        0.022 + 0.028 * 2 + 0.375 + 1.4, 6
    )
    assert everything["by_account"][1]["p50_latency_ms"] == 200.0  # [50, 100, 200, 300, 900]
    assert [(m["model"], m["requests"]) for m in everything["by_model"]] == [
        ("claude-sonnet-4.5", 1),
        ("gpt-4.1", 7),
    ]
    assert everything["by_model"][0]["credits_estimated"] == 0.375


def test_report_reads_migrated_v000_rows(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = sqlite3.connect(path)
    conn.executescript((SNAPSHOTS / "v0.0.0.sql").read_text())
    conn.execute(
        "INSERT INTO requests VALUES (1, ?, 'old', 'github-copilot', 'gpt-4o', 'user', "
        "11, 22, 333, 200, 1)",
        (NOW,),
    )
    conn.commit()
    conn.close()
    db = open_db(path)
    try:
        totals = report_json(query(db, path))["totals"]
    finally:
        db.close()
    assert totals["requests"] == 1 and totals["input_tokens"] == 11
    assert totals["output_tokens"] == 22 and totals["p50_latency_ms"] == 333


def test_text_report_layout(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    populate(path)
    conn = open_db(path)
    try:
        text = format_text(query(conn, path, account="personal"), since_label=None)
    finally:
        conn.close()
    lines = text.splitlines()
    assert lines[0] == f"Usage ledger: {path}"
    assert lines[1] == "Since: all time"
    assert lines[2] == "Account: personal"
    assert lines[3] == (
        "Total: 5 requests, 1 error, 6,300 input tokens, 580 output tokens, p50 latency 200 ms"
    )
    assert lines[4] == "Credits: 0 measured (0 requests) + ~1.85 estimated (5 requests)"
    assert lines[6].split() == [
        "ACCOUNT",
        "MODEL",
        "REQUESTS",
        "ERRORS",
        "INPUT",
        "OUTPUT",
        "CREDITS",
        "EST.",
        "CREDITS",
        "P50",
        "LATENCY",
    ]
    assert lines[7].split() == [
        "personal",
        "claude-sonnet-4.5",
        "1",
        "0",
        "1,000",
        "50",
        "-",  # nothing measured
        "~0.38",
        "900",
        "ms",
    ]
    assert lines[8].split() == [
        "personal",
        "gpt-4.1",
        "4",
        "1",
        "5,300",
        "530",
        "-",
        "~1.48",
        "100",
        "ms",
    ]
    # one account: no per-account table; two models: a per-model one
    assert "By account:" not in text
    assert lines[10] == "By model:"
    assert lines[12].split()[:2] == ["claude-sonnet-4.5", "1"]


# ------------------------------------------------------------ console script


def test_cli_text_and_json(state: Path) -> None:
    cfg = state / "config.toml"
    text = run_cli(cfg)
    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    assert f"Usage ledger: {state / 'usage.db'}" in text.stdout
    assert "Total: 8 requests, 3 errors, 6,407 input tokens, 600 output tokens" in text.stdout
    assert "claude-sonnet-4.5" in text.stdout

    before = time.time()
    out = run_cli(cfg, "--json", "--since", "1h", "--account", "personal")
    after = time.time()
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert list(data) == [
        "format",
        "database",
        "database_exists",
        "since",
        "since_ts",
        "account",
        "totals",
        "by_account_model",
        "by_account",
        "by_model",
    ]
    assert data["format"] == 1 and data["database_exists"] is True
    assert data["account"] == "personal"
    assert before - 3600 - 1 <= data["since_ts"] <= after - 3600 + 1
    assert data["since"] == datetime.fromtimestamp(data["since_ts"], UTC).isoformat()
    assert data["totals"]["requests"] == 4  # rows 1-4: last hour, account personal
    assert [g["model"] for g in data["by_account_model"]] == ["claude-sonnet-4.5", "gpt-4.1"]
    assert set(data["by_account_model"][0]) == {
        "account_id",
        "model",
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "p50_latency_ms",
        "credits",
        "credits_estimated",
        "credits_measured_requests",
        "credits_estimated_requests",
        "credits_unpriced_requests",
    }


def test_cli_no_database_yet(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"  # no config file either: defaults
    res = run_cli(cfg)
    assert res.returncode == 0
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "no usage recorded yet" in res.stderr
    res = run_cli(cfg, "--json")
    assert res.returncode == 0
    data = json.loads(res.stdout)
    assert data["database_exists"] is False and data["totals"]["requests"] == 0
    assert not (tmp_path / "usage.db").exists()  # reading never creates it


def test_cli_bad_since_is_a_one_line_usage_error(state: Path) -> None:
    res = run_cli(state / "config.toml", "--since", "last tuesday")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.startswith("tokn-router: error: invalid --since 'last tuesday'")
    assert res.stderr.count("\n") == 1


def test_cli_newer_database_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "custom" / "ledger.db"
    db.parent.mkdir()
    (tmp_path / "config.toml").write_text(f'[usage]\npath = "{db}"\n')
    conn = sqlite3.connect(db)
    conn.executescript((SNAPSHOTS / "v0.2.0.sql").read_text())
    conn.execute("PRAGMA user_version = 300")
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    res = run_cli(tmp_path / "config.toml")
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1
    assert "v0.3.0" in res.stderr and "newer" in res.stderr and str(db) in res.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_cli_reads_while_a_writer_holds_the_database(state: Path) -> None:
    """WAL: a read-only reader sees committed rows while a write transaction is open."""
    writer = sqlite3.connect(state / "usage.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute(
        "INSERT INTO requests (ts, model, request_id) VALUES (?, 'x', 'pending')", (NOW,)
    )
    try:
        res = run_cli(state / "config.toml", "--json")
    finally:
        writer.execute("COMMIT")
        writer.close()
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["totals"]["requests"] == 8  # the uncommitted row is not seen

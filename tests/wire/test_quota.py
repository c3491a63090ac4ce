"""Copilot's quota and rate-limit signals, parsed (wire/quota.py; no servers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tokn_router.wire.quota import (
    Limit,
    LimitKind,
    Reading,
    classify_limit,
    parse_fields,
    parse_reading,
    parse_reset,
    read_windows,
    retry_after_secs,
)

NOW = 1_800_000_000.0
RESET = datetime(2026, 4, 22, 14, 30, 56, tzinfo=UTC).timestamp()


def test_fields_are_url_decoded_and_split_on_both_separators() -> None:
    raw = "ent=0&ov=0.0;ovPerm=false&rem=99.6&rst=2026-04-22T14%3A30%3A56Z&junk"
    assert parse_fields(raw) == {
        "ent": "0",
        "ov": "0.0",
        "ovPerm": "false",
        "rem": "99.6",
        "rst": "2026-04-22T14:30:56Z",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-04-22T14:30:56Z", RESET),
        ("2026-04-22T16:30:56+02:00", RESET),
        (str(int(RESET)), RESET),
        (str(int(RESET * 1000)), RESET),  # milliseconds
        ("2026-04-22T14:30:56", None),  # no zone: unknown rather than wrong
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
)
def test_reset_times(value: str | None, expected: float | None) -> None:
    assert parse_reset(value) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "ent=0&ov=0.0&ovPerm=false&rem=35.3&rst=2026-04-22T14%3A30%3A56Z",
            Reading("weekly", 35.3, 0.0, RESET, False, False),
        ),
        ("rem=5.7&rst=" + str(int(RESET)), Reading("weekly", 5.7, None, RESET)),
        ("ent=300&rem=120", Reading("weekly", 100.0, 300.0)),  # clamped to 100 %
        ("ent=-1&rem=100&ovPerm=true", Reading("weekly", None, None, None, True, True)),
        ("ent=300", None),  # no remaining share: nothing to remember
        ("rem=lots", None),
    ],
)
def test_reading(raw: str, expected: Reading | None) -> None:
    assert parse_reading("weekly", raw) == expected


def test_read_windows_takes_rate_and_snapshot_headers_only() -> None:
    headers = [
        ("Content-Type", "application/json"),
        ("X-Usage-Ratelimit-Session", "ent=0&rem=40&rst=2026-04-22T14%3A30%3A56Z"),
        ("x-usage-ratelimit-weekly", "ent=0&rem=61.5"),
        ("x-quota-snapshot-premium_interactions", "ent=300&ov=0.0&ovPerm=false&rem=80"),
        ("x-quota-snapshot-chat", "ent=-1&rem=100"),
        ("x-quota-snapshot-", "rem=1"),  # no name
        ("x-usage-ratelimit-other", "garbage"),
    ]
    got = {r.name: r for r in read_windows(headers)}
    assert set(got) == {"session", "weekly", "premium_interactions", "chat"}
    assert got["session"].remaining_pct == 40.0 and got["session"].reset_at == RESET
    assert got["premium_interactions"].entitlement == 300.0
    assert got["chat"].unlimited


def test_retry_after_from_either_header() -> None:
    assert retry_after_secs({"retry-after": "120"}) == 120.0
    assert retry_after_secs({"x-ratelimit-user-retry-after": "3600"}) == 3600.0
    assert retry_after_secs({"retry-after": "soon", "x-ratelimit-user-retry-after": "7"}) == 7.0
    assert retry_after_secs({}) is None


def _err(code: str, message: str = "") -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


WEEK = 4 * 86400
# (status, headers, body) -> Limit (None: not a limit answer)
LIMITS: list[tuple[int, dict[str, str], bytes, Limit | None]] = [
    # a plain burst: short back-off, its Retry-After honoured
    (429, {"retry-after": "20"}, _err("rate_limited"), Limit(LimitKind.BURST, 20.0, "429")),
    (429, {}, b"", Limit(LimitKind.BURST, None, "429")),
    (429, {}, b"<html>too many</html>", Limit(LimitKind.BURST, None, "429")),
    # the window named by x-ratelimit-exceeded
    (
        429,
        {"retry-after": str(WEEK), "x-ratelimit-exceeded": "global-usage-weekly-key"},
        b"",
        Limit(LimitKind.WEEKLY, float(WEEK), "x-ratelimit-exceeded: global-usage-weekly-key"),
    ),
    (
        429,
        {
            "x-ratelimit-user-retry-after": "9000",
            "x-ratelimit-exceeded": "user:global-usage-5-hour-key:abc",
        },
        b"",
        Limit(LimitKind.SESSION, 9000.0, "x-ratelimit-exceeded: user:global-usage-5-hour-key:abc"),
    ),
    (
        429,
        {"x-ratelimit-exceeded": "quota_exceeded"},
        b"",
        Limit(LimitKind.QUOTA, None, "x-ratelimit-exceeded: quota_exceeded"),
    ),
    # the window named by the error code
    (
        429,
        {},
        _err("user_weekly_rate_limited", "weekly limit"),
        Limit(LimitKind.WEEKLY, None, "429 user_weekly_rate_limited"),
    ),
    (
        429,
        {},
        _err("", "Quota exceeded for this month"),
        Limit(LimitKind.QUOTA, None, "429 quota exceeded"),
    ),
    # unnamed, but a Retry-After of hours is a window, not a burst
    (
        429,
        {"retry-after": "7200"},
        b"",
        Limit(LimitKind.SESSION, 7200.0, "429 with Retry-After 7200s"),
    ),
    (
        429,
        {"retry-after": "90000"},
        b"",
        Limit(LimitKind.WEEKLY, 90000.0, "429 with Retry-After 90000s"),
    ),
    (
        429,
        {"retry-after": "1799"},
        b"",
        Limit(LimitKind.BURST, 1799.0, "429"),
    ),
    # a 402 is the quota, with or without a body
    (
        402,
        {},
        json.dumps({"code": "quota_exceeded", "message": "You have no quota"}).encode(),
        Limit(LimitKind.QUOTA, None, "402 quota_exceeded"),
    ),
    (402, {}, b"", Limit(LimitKind.QUOTA, None, "402 payment required")),
    # other statuses carry no limit
    (500, {"retry-after": "5"}, b"", None),
    (503, {"x-ratelimit-exceeded": "global-usage-weekly-key"}, b"", None),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), LIMITS)
def test_classify_limit(
    status: int, headers: dict[str, str], body: bytes, expected: Limit | None
) -> None:
    assert classify_limit(status, headers, body, now=NOW) == expected

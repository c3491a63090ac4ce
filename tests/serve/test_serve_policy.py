"""The failover status policy as a table: upstream answer -> decision (no servers)."""

from __future__ import annotations

import pytest

from tokn_router.serve.policy import (
    ANSWER,
    COOL_DOWN,
    COOL_DOWN_QUOTA,
    COOL_DOWN_RETRY_AFTER,
    COOL_DOWN_SESSION,
    COOL_DOWN_WEEKLY,
    REFRESH,
    RELAY,
    Decision,
    decide,
)
from tokn_router.wire.quota import classify_limit

# (upstream status or None for no answer, credential refreshable now) -> decision
TABLE: list[tuple[int | None, bool, Decision]] = [
    (200, False, ANSWER),
    (201, True, ANSWER),
    (304, False, ANSWER),
    # the request's own fault: relayed untouched, the account stays healthy
    (400, False, RELAY),
    (400, True, RELAY),
    (404, False, RELAY),
    (405, False, RELAY),
    (409, False, RELAY),
    (413, False, RELAY),
    (415, False, RELAY),
    (422, False, RELAY),
    (451, False, RELAY),
    # a refused credential: refresh once, then cool down without Retry-After
    (401, True, REFRESH),
    (403, True, REFRESH),
    (401, False, COOL_DOWN),
    (403, False, COOL_DOWN),
    # quota and rate limits: upstream says when to come back
    (402, False, COOL_DOWN_QUOTA),
    (402, True, COOL_DOWN_QUOTA),
    (429, False, COOL_DOWN_RETRY_AFTER),
    (429, True, COOL_DOWN_RETRY_AFTER),
    (503, False, COOL_DOWN_RETRY_AFTER),
    # the account's (or its upstream's) trouble: back off, try the next account
    (408, False, COOL_DOWN),
    (500, False, COOL_DOWN),
    (500, True, COOL_DOWN),
    (502, False, COOL_DOWN),
    (504, False, COOL_DOWN),
    (529, False, COOL_DOWN),
    (None, False, COOL_DOWN),
    (None, True, COOL_DOWN),
]


@pytest.mark.parametrize(("status", "can_refresh", "expected"), TABLE)
def test_decision(status: int | None, can_refresh: bool, expected: Decision) -> None:
    assert decide(status, can_refresh=can_refresh) == expected


WEEK = str(4 * 86400)
# What Copilot sends on a refusal -> the decision (classified by wire/quota.py first).
LIMITS: list[tuple[str, int, dict[str, str], bytes, Decision]] = [
    ("burst with Retry-After", 429, {"retry-after": "30"}, b"", COOL_DOWN_RETRY_AFTER),
    ("burst, nothing said", 429, {}, b'{"error":{"code":"rate_limited"}}', COOL_DOWN_RETRY_AFTER),
    (
        "5-hour key",
        429,
        {"retry-after": "9000", "x-ratelimit-exceeded": "global-usage-5-hour-key"},
        b"",
        COOL_DOWN_SESSION,
    ),
    (
        "weekly key",
        429,
        {"retry-after": WEEK, "x-ratelimit-exceeded": "global-usage-weekly-key"},
        b"",
        COOL_DOWN_WEEKLY,
    ),
    (
        "weekly code, no headers",
        429,
        {},
        b'{"error":{"code":"user_weekly_rate_limited"}}',
        COOL_DOWN_WEEKLY,
    ),
    ("unnamed Retry-After of hours", 429, {"retry-after": "3600"}, b"", COOL_DOWN_SESSION),
    ("unnamed Retry-After of days", 429, {"retry-after": WEEK}, b"", COOL_DOWN_WEEKLY),
    (
        "429 quota_exceeded",
        429,
        {"x-ratelimit-exceeded": "quota_exceeded"},
        b"",
        COOL_DOWN_QUOTA,
    ),
    (
        "402 quota_exceeded, no headers",
        402,
        {},
        b'{"code":"quota_exceeded","message":"You have no quota"}',
        COOL_DOWN_QUOTA,
    ),
    ("402 without a body", 402, {}, b"", COOL_DOWN_QUOTA),
    ("503 is never a window", 503, {"retry-after": WEEK}, b"", COOL_DOWN_RETRY_AFTER),
]


@pytest.mark.parametrize(
    ("name", "status", "headers", "body", "expected"), LIMITS, ids=[r[0] for r in LIMITS]
)
def test_limit_decision(
    name: str, status: int, headers: dict[str, str], body: bytes, expected: Decision
) -> None:
    limit = classify_limit(status, headers, body)
    assert decide(status, limit=limit.kind if limit else None) == expected


def test_windows_are_only_shut_for_a_window() -> None:
    assert COOL_DOWN_RETRY_AFTER.window is None and COOL_DOWN.window is None
    windows = [d.window for d in (COOL_DOWN_SESSION, COOL_DOWN_WEEKLY, COOL_DOWN_QUOTA)]
    assert None not in windows and len(set(windows)) == 3


def test_only_quota_rate_and_unavailable_honour_retry_after() -> None:
    honoured = {s for s in range(100, 600) if decide(s, can_refresh=False).honour_retry_after}
    assert honoured == {402, 429, 503}

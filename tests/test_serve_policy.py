"""The failover status policy as a table: upstream answer -> decision (no servers)."""

from __future__ import annotations

import pytest

from tokn_router.serve.policy import (
    ANSWER,
    COOL_DOWN,
    COOL_DOWN_RETRY_AFTER,
    REFRESH,
    RELAY,
    Decision,
    decide,
)

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
    (402, False, COOL_DOWN_RETRY_AFTER),
    (402, True, COOL_DOWN_RETRY_AFTER),
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


def test_only_quota_rate_and_unavailable_honour_retry_after() -> None:
    honoured = {s for s in range(100, 600) if decide(s, can_refresh=False).honour_retry_after}
    assert honoured == {402, 429, 503}

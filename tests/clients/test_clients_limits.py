"""Limit arithmetic of client keys (pure): budgets over sliding windows, rpm, streams, models."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from tokn_router.clients.limits import (
    Activity,
    Allow,
    Denial,
    Limits,
    UsageEvent,
    check_model,
    decide,
    human_secs,
    model_allowed,
    parse_duration,
    summary,
    used,
)

NOW = 1_800_000_000.0
DAY = 86_400


def ev(age: float, credits: float | None = None, tokens: int = 0) -> UsageEvent:
    return UsageEvent(ts=NOW - age, credits=credits, tokens=tokens)


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


# (limits, activity, stream, expected limit or None, expected reset timestamp or None)
CASES = [
    pytest.param(Limits(), Activity(events=[ev(1, 1e9, 10**9)]), True, None, None, id="no-limits"),
    pytest.param(
        Limits(budget_credits=10, budget_per="day"),
        Activity(events=[ev(3600, 4), ev(60, 5.5)]),
        True,
        None,
        None,
        id="credits-under-budget",
    ),
    pytest.param(
        Limits(budget_credits=10, budget_per="day"),
        Activity(events=[ev(3600, 4), ev(600, 3), ev(60, 3)]),
        True,
        "budget_credits",
        # 10 used; once the oldest 4 leave the 24 h window, 6 < 10
        NOW - 3600 + DAY,
        id="credits-at-budget",
    ),
    pytest.param(
        Limits(budget_credits=10, budget_per="day"),
        Activity(events=[ev(5000, 1), ev(3600, 8), ev(60, 6)]),
        True,
        "budget_credits",
        # 15 used: dropping 1 leaves 14, dropping 8 more leaves 6 < 10
        NOW - 3600 + DAY,
        id="credits-reset-needs-two-rows",
    ),
    pytest.param(
        Limits(budget_credits=10, budget_per="day"),
        Activity(events=[ev(DAY + 1, 100), ev(60, 5)]),
        True,
        None,
        None,
        id="credits-older-than-window-ignored",
    ),
    pytest.param(
        Limits(budget_credits=10, budget_per="week"),
        Activity(events=[ev(3 * DAY, 6), ev(2 * DAY, 6)]),
        True,
        "budget_credits",
        NOW - 3 * DAY + 7 * DAY,
        id="credits-sliding-week",
    ),
    pytest.param(
        Limits(budget_credits=10, budget_per="day"),
        Activity(events=[ev(60, None, 10**6)]),
        True,
        None,
        None,
        id="credits-budget-ignores-uncredited-rows",
    ),
    pytest.param(
        Limits(budget_tokens=1000, budget_per="month"),
        Activity(events=[ev(20 * DAY, None, 600), ev(DAY, 2.0, 500)]),
        True,
        "budget_tokens",
        NOW - 20 * DAY + 30 * DAY,
        id="tokens-count-every-row",
    ),
    pytest.param(
        Limits(rpm=3),
        Activity(request_starts=[NOW - 50, NOW - 30, NOW - 1]),
        True,
        "rpm",
        NOW - 50 + 60,
        id="rpm-full",
    ),
    pytest.param(
        Limits(rpm=3),
        Activity(request_starts=[NOW - 70, NOW - 30, NOW - 1]),
        True,
        None,
        None,
        id="rpm-old-start-left-the-minute",
    ),
    pytest.param(
        Limits(rpm=2),
        Activity(request_starts=[NOW - 5, NOW - 55, NOW - 40, NOW - 20]),
        True,
        "rpm",
        # 4 in the minute, limit 2: the 3 oldest must leave; the third oldest is at -20
        NOW - 20 + 60,
        id="rpm-over-by-several-unsorted",
    ),
    pytest.param(
        Limits(max_streams=2),
        Activity(streams_in_flight=2),
        True,
        "max_streams",
        None,
        id="streams",
    ),
    pytest.param(
        Limits(max_streams=2),
        Activity(streams_in_flight=2),
        False,
        None,
        None,
        id="streams-cap-ignores-non-stream",
    ),
    pytest.param(
        Limits(max_streams=2), Activity(streams_in_flight=1), True, None, None, id="streams-under"
    ),
    pytest.param(
        Limits(rpm=1, budget_credits=1, budget_per="day", max_streams=1),
        Activity(events=[ev(600, 5)], request_starts=[NOW - 10], streams_in_flight=1),
        True,
        "budget_credits",
        NOW - 600 + DAY,
        id="several-bind-latest-reset-wins",
    ),
    pytest.param(
        Limits(rpm=1, max_streams=1),
        Activity(request_starts=[NOW - 10], streams_in_flight=1),
        True,
        "rpm",
        NOW - 10 + 60,
        id="timed-limit-before-stream-cap",
    ),
]


@pytest.mark.parametrize(("limits", "activity", "stream", "limit", "reset"), CASES)
def test_decide(
    limits: Limits, activity: Activity, stream: bool, limit: str | None, reset: float | None
) -> None:
    d = decide("alice", limits, activity, NOW, stream=stream)
    if limit is None:
        assert d == Allow()
        return
    assert isinstance(d, Denial)
    assert d.limit == limit and d.status == 429
    assert d.resets_at == (at(reset) if reset is not None else None)
    if reset is not None:
        assert d.retry_after_secs == int(reset - NOW)
        assert d.resets_at is not None
        assert d.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ") in d.message
    else:
        assert d.retry_after_secs is None
    assert "alice" in d.message and "\n" not in d.message


def test_denial_messages_say_which_limit_and_when() -> None:
    budget = decide(
        "alice",
        Limits(budget_credits=300, budget_per="day"),
        Activity(events=[ev(3 * 3600, 250.5), ev(60, 62)]),
        NOW,
    )
    assert isinstance(budget, Denial) and budget.code == "budget_exceeded"
    assert budget.message == (
        "client key 'alice' is over its budget of 300 credits per day (312.5 used in the "
        "last 24 h); it resets at 2027-01-16T05:00:00Z (in 21h)"
    )
    rpm = decide("bob", Limits(rpm=1), Activity(request_starts=[NOW - 15]), NOW)
    assert isinstance(rpm, Denial) and rpm.code == "rate_limit_exceeded"
    assert rpm.message == (
        "client key 'bob' is over its limit of 1 requests per minute; "
        "it resets at 2027-01-15T08:00:45Z (in 45s)"
    )
    streams = decide("cy", Limits(max_streams=4), Activity(streams_in_flight=4), NOW)
    assert isinstance(streams, Denial)
    assert streams.message == (
        "client key 'cy' already has 4 streams in flight, its limit of 4 concurrent "
        "streams; it resets when one of them ends"
    )


def test_retry_after_rounds_up_to_a_whole_second() -> None:
    d = decide("a", Limits(rpm=1), Activity(request_starts=[NOW - 59.5]), NOW)
    assert isinstance(d, Denial) and d.retry_after_secs == 1


def test_used_sums_the_window() -> None:
    events = [ev(2 * DAY, 100, 100), ev(3600, 1.5, 10), ev(60, None, 20), ev(-5, 9, 9)]
    assert used(events, NOW, "day") == (1.5, 30)  # too old and future rows left out
    assert used(events, NOW, "week") == (101.5, 130)


@pytest.mark.parametrize(
    ("globs", "model", "ok"),
    [
        ([], "anything", True),
        (["gpt-*"], "gpt-4.1", True),
        (["gpt-*"], "github-copilot/gpt-4.1", True),
        (["gpt-*"], "claude-sonnet-4.5", False),
        (["claude-sonnet-*", "gpt-4.1"], "gpt-4.1", True),
        (["gpt-4.1"], "gpt-4.1-mini", False),
        (["zai-coding-plan/*"], "zai-coding-plan/glm-4.7", True),
        (["zai-coding-plan/*"], "glm-4.7", False),
        (["GPT-*"], "gpt-4.1", False),
    ],
)
def test_model_allowed(globs: list[str], model: str, ok: bool) -> None:
    assert model_allowed(globs, model) is ok


def test_check_model_is_a_403_naming_the_globs() -> None:
    lim = Limits(models=["gpt-*", "claude-*"])
    assert check_model("a", lim, "gpt-4.1") is None
    d = check_model("a", lim, "glm-4.7")
    assert d is not None and d.status == 403 and d.code == "model_not_allowed"
    assert d.message == "client key 'a' may not use model 'glm-4.7' (allowed: gpt-*, claude-*)"


@pytest.mark.parametrize(
    ("text", "secs"),
    [("30m", 1800), ("12h", 43200), ("30d", 30 * DAY), ("2w", 14 * DAY), (" 1Y ", 365 * DAY)],
)
def test_parse_duration(text: str, secs: int) -> None:
    assert parse_duration(text) == secs


@pytest.mark.parametrize("bad", ["", "0d", "-1d", "30", "d", "3x", "1.5d", "30 days"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("secs", "text"),
    [
        (0.2, "1s"),
        (45, "45s"),
        (60, "1m"),
        (725, "12m 5s"),
        (3600 * 3 + 1200, "3h 20m"),
        (7200, "2h"),
        (DAY * 2 + 3600 * 4, "2d 4h"),
        (DAY, "1d"),
    ],
)
def test_human_secs(secs: float, text: str) -> None:
    assert human_secs(secs) == text


def test_summary_and_schema() -> None:
    assert summary(Limits()) == "-"
    lim = Limits(
        models=["gpt-*"],
        budget_credits=2.5,
        budget_tokens=100000,
        budget_per="week",
        rpm=60,
        max_streams=4,
    )
    assert summary(lim) == "gpt-*; 2.5 credits/week; 100,000 tokens/week; 60 rpm; 4 streams"
    # the schema refuses what the CLI refuses, should the file be edited by hand
    for bad in ({"rpm": 0}, {"budget_credits": -1}, {"budget_per": "year"}, {"nope": 1}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, Limits)

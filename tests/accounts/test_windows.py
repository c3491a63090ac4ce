"""Per-account windows and the quota-aware candidate order (accounts/windows.py; no servers)."""

from __future__ import annotations

from typing import Any

import pytest

from tokn_router.accounts.windows import (
    BELOW_RESERVE,
    EXHAUSTED,
    IN_ROTATION,
    Choice,
    Windows,
    is_premium,
    order,
    premium_of_entry,
    tier,
)
from tokn_router.wire.quota import Limit, LimitKind, Reading

NOW = 1_800_000_000.0
HOUR = 3600.0


# ------------------------------------------------------------------ premium


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"billing": {"is_premium": False, "multiplier": 0.0}}, False),
        ({"billing": {"is_premium": True, "multiplier": 1.0}}, True),
        ({"billing": {"multiplier": 0.33}}, True),
        ({"billing": {"multiplier": 0}}, False),
        ({"billing": {"is_premium": False}}, False),
        ({"billing": {"is_premium": True}}, True),
        ({"billing": {"multiplier": True}}, None),  # not a number
        ({"billing": {"token_prices": {}}}, None),
        ({"billing": "free"}, None),
        ({"id": "gpt-4.1"}, None),
        (None, None),
    ],
)
def test_premium_of_entry(entry: dict[str, Any] | None, expected: bool | None) -> None:
    assert premium_of_entry(entry) == expected


def test_unknown_models_count_as_premium() -> None:
    assert is_premium([]) is True
    assert is_premium([None, {"id": "x"}]) is True
    assert is_premium([None, {"billing": {"multiplier": 0}}]) is False


# ---------------------------------------------------------------- windows


def weekly_429(retry: float | None = 4 * 86400) -> Limit:
    return Limit(LimitKind.WEEKLY, retry, "x-ratelimit-exceeded: global-usage-weekly-key")


def test_readings_give_headroom_of_the_windows_a_request_spends() -> None:
    w = Windows()
    w.observe(
        [
            Reading("session", 70.0, reset_at=NOW + HOUR),
            Reading("weekly", 45.0, reset_at=NOW + 3 * 86400),
            Reading("premium_interactions", 12.0, 300.0, NOW + 20 * 86400),
            Reading("completions", 1.0),  # spent by neither
        ],
        NOW,
        premium=True,
    )
    assert w.headroom(NOW, premium=True) == 12.0
    assert w.headroom(NOW, premium=False) == 45.0  # free models spend no premium quota
    # once a window's reset has passed, its old reading says nothing
    assert w.headroom(NOW + 4 * 86400, premium=False) is None


def test_weekly_429_shuts_every_request_until_its_retry_after() -> None:
    w = Windows()
    name, until = w.exhaust(weekly_429(), NOW, premium=False, fallback_secs=HOUR)
    assert (name, until) == ("weekly", NOW + 4 * 86400)
    for premium in (True, False):
        assert w.exhausted_until(NOW + 86400, premium=premium) == until
    assert w.exhausted_until(until + 1, premium=True) == 0.0  # open again after the reset
    blocking = w.blocking(NOW, premium=False)
    assert blocking is not None and blocking[0] == "weekly"
    shown = w.as_json(NOW)["weekly"]
    assert shown["remaining_pct"] == 0.0 and shown["retry_after_secs"] == 4 * 86400
    assert shown["reset_at"] == int(until)


def test_window_without_retry_after_waits_for_its_known_reset_else_the_fallback() -> None:
    w = Windows()
    w.observe([Reading("session", 3.0, reset_at=NOW + 2 * HOUR)], NOW, premium=True)
    limit = Limit(LimitKind.SESSION, None, "x-ratelimit-exceeded: global-usage-5-hour-key")
    assert w.exhaust(limit, NOW, premium=True, fallback_secs=HOUR) == ("session", NOW + 2 * HOUR)
    other = Windows()
    assert other.exhaust(weekly_429(None), NOW, premium=True, fallback_secs=HOUR) == (
        "weekly",
        NOW + HOUR,
    )


def test_quota_on_a_premium_request_leaves_free_models_alone() -> None:
    w = Windows()
    w.observe([Reading("premium_models", 0.5)], NOW, premium=True)
    name, until = w.exhaust(
        Limit(LimitKind.QUOTA, None, "402 quota_exceeded"), NOW, premium=True, fallback_secs=HOUR
    )
    assert name == "premium_models"  # the snapshot this account reports
    assert w.exhausted_until(NOW, premium=True) == until
    assert w.exhausted_until(NOW, premium=False) == 0.0
    # a free request succeeding does not reopen the premium quota
    w.observe([], NOW + 1, premium=False)
    assert w.exhausted_until(NOW + 1, premium=True) == until
    # a premium request succeeding does (upstream added credits)
    assert w.observe([], NOW + 2, premium=True)
    assert w.exhausted_until(NOW + 2, premium=True) == 0.0


def test_quota_on_a_free_request_stops_everything_until_a_free_one_succeeds() -> None:
    w = Windows()
    until = w.exhaust(Limit(LimitKind.QUOTA, None, "402"), NOW, premium=False, fallback_secs=HOUR)[
        1
    ]
    assert w.exhausted_until(NOW, premium=False) == until
    w.observe([], NOW + 1, premium=False)
    assert w.exhausted_until(NOW + 1, premium=False) == 0.0
    assert w.exhausted_until(NOW + 1, premium=True) == until


def test_observe_reports_changes_only() -> None:
    w = Windows()
    r = [Reading("weekly", 40.0, reset_at=NOW + HOUR)]
    assert w.observe(r, NOW, premium=True)
    assert not w.observe(r, NOW + 5, premium=True)  # same values: nothing to save
    assert w.observe([Reading("weekly", 39.0, reset_at=NOW + HOUR)], NOW + 6, premium=True)


def test_dump_and_load_round_trip_and_survive_garbage() -> None:
    w = Windows()
    w.observe([Reading("premium_interactions", 80.0, 300.0, NOW + 86400)], NOW, premium=True)
    w.exhaust(weekly_429(), NOW, premium=False, fallback_secs=HOUR)
    back = Windows.load(w.dump())
    assert back.as_json(NOW) == w.as_json(NOW)
    junk = {
        "weekly": {"remaining_pct": "lots", "exhausted_until": float("nan"), "reason": 5},
        "session": "x",
        7: {},
    }
    assert Windows.load(junk).as_json(NOW) == {"weekly": {"remaining_pct": None}}
    assert not Windows.load(None)


# ---------------------------------------------------------------- ordering

# candidates in round-robin order -> the order to try them (indices)
ORDER: list[tuple[str, list[Choice], list[int]]] = [
    ("nothing known: round robin", [Choice(None), Choice(None), Choice(None)], [0, 1, 2]),
    ("most headroom first", [Choice(20.0), Choice(90.0), Choice(55.0)], [1, 2, 0]),
    ("about as full: round robin", [Choice(81.0), Choice(88.0)], [0, 1]),
    # unknown means Copilot has not reported the window: not half used yet
    ("unknown before a known low", [Choice(30.0), Choice(None)], [1, 0]),
    ("below reserve: last resort", [Choice(15.0, reserve=20.0), Choice(16.0)], [1, 0]),
    ("at the reserve: in rotation", [Choice(20.0, reserve=20.0), Choice(10.0)], [0, 1]),
    ("reserve with nothing known", [Choice(None, reserve=50.0), Choice(None)], [0, 1]),
    (
        "exhausted after the reserved",
        [Choice(None, exhausted=True), Choice(5.0, reserve=10.0), Choice(1.0)],
        [2, 1, 0],
    ),
    ("only exhausted ones", [Choice(None, exhausted=True), Choice(9.0, exhausted=True)], [0, 1]),
]


@pytest.mark.parametrize(("name", "choices", "expected"), ORDER, ids=[o[0] for o in ORDER])
def test_order(name: str, choices: list[Choice], expected: list[int]) -> None:
    assert order(choices) == expected


def test_tiers() -> None:
    assert tier(Choice(None)) == IN_ROTATION
    assert tier(Choice(5.0, reserve=10.0)) == BELOW_RESERVE
    assert tier(Choice(50.0, exhausted=True)) == EXHAUSTED

"""Limit arithmetic of client keys: pure functions, no I/O, no clock of their own.

A key may carry a budget (credits and/or tokens over a sliding day, week or
month), a requests-per-minute cap, a cap on concurrent streams and a list of
model globs. :func:`decide` takes what the ledger and the request path know about
the key's recent activity and answers :class:`Allow` or a :class:`Denial` that
names the limit, when it resets and the text of the 429 message.

Budgets count what each request cost: its credits when the upstream reported
them, and its tokens. A credit budget therefore only sees requests whose cost in
credits is known; a token budget sees every request. A key that may use
providers which report no credits (Z.ai) is capped with a token budget, alone or
next to a credit budget. Because the inputs come from the ledger, limits survive
a restart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Annotated, Literal

import msgspec

Period = Literal["day", "week", "month"]
LimitName = Literal["budget_credits", "budget_tokens", "rpm", "max_streams", "models"]

# Sliding windows, not calendar ones: a month is 30 days back from now.
PERIOD_SECS: dict[str, int] = {"day": 86_400, "week": 7 * 86_400, "month": 30 * 86_400}
_PERIOD_LABEL = {"day": "24 h", "week": "7 days", "month": "30 days"}
RPM_WINDOW_SECS = 60


class Limits(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """What one key may do; every field unset means "no limit"."""

    models: list[str] = msgspec.field(default_factory=list)  # globs; empty = every model
    budget_credits: Annotated[float, msgspec.Meta(gt=0)] | None = None
    budget_tokens: Annotated[int, msgspec.Meta(gt=0)] | None = None
    budget_per: Period | None = None  # the window of both budgets
    rpm: Annotated[int, msgspec.Meta(gt=0)] | None = None
    max_streams: Annotated[int, msgspec.Meta(gt=0)] | None = None

    def has_budget(self) -> bool:
        return self.budget_credits is not None or self.budget_tokens is not None


class UsageEvent(msgspec.Struct, frozen=True, array_like=True):
    """One request of the key, as the ledger saw it."""

    ts: float  # unix seconds when it started
    credits: float | None = None  # None: the upstream did not report a cost in credits
    tokens: int = 0  # input + output tokens (0 when unknown)


@dataclass(frozen=True, slots=True)
class Activity:
    """What is known about a key right now.

    ``events`` are its requests over (at least) the budget window, in any order;
    older ones are ignored. ``request_starts`` are the start times of its requests
    over (at least) the last minute, the current one excluded. ``streams_in_flight``
    counts its streams still open.
    """

    events: Sequence[UsageEvent] = ()
    request_starts: Sequence[float] = ()
    streams_in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Allow:
    allowed: Literal[True] = True


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request is refused: the limit, when it frees up, and the message sent."""

    limit: LimitName
    message: str
    resets_at: datetime | None  # UTC; None when it frees up on an event (a stream ends)
    retry_after_secs: int | None  # whole seconds for Retry-After, rounded up
    status: int = 429
    code: str = "rate_limit_exceeded"
    allowed: Literal[False] = False


Decision = Allow | Denial


# ---------------------------------------------------------------------- windows


def _spending(
    events: Iterable[UsageEvent], now: float, window: int, amount: str
) -> list[tuple[float, float]]:
    """``(ts, amount)`` of the events inside ``(now - window, now]``, oldest first."""
    start = now - window
    out: list[tuple[float, float]] = []
    for ev in events:
        if not start < ev.ts <= now:
            continue
        value = ev.credits if amount == "credits" else ev.tokens
        if value:
            out.append((ev.ts, float(value)))
    out.sort()
    return out


def _budget_reset(spent: list[tuple[float, float]], budget: float, window: int) -> float | None:
    """When enough spending has left the window that the total is under ``budget``."""
    total = sum(v for _, v in spent)
    for ts, value in spent:
        total -= value
        if total < budget:
            return ts + window
    return None  # only reached with a non-positive budget, which Limits forbids


def used(events: Iterable[UsageEvent], now: float, per: Period) -> tuple[float, int]:
    """``(credits, tokens)`` spent over the sliding window ``per`` ending at ``now``."""
    window = PERIOD_SECS[per]
    evs = list(events)
    credits = sum(v for _, v in _spending(evs, now, window, "credits"))
    tokens = int(sum(v for _, v in _spending(evs, now, window, "tokens")))
    return credits, tokens


# --------------------------------------------------------------------- decision


def _when(ts: float, now: float) -> tuple[datetime, int, str]:
    resets = datetime.fromtimestamp(ts, UTC)
    secs = max(1, math.ceil(ts - now))
    return resets, secs, f"{resets.strftime('%Y-%m-%dT%H:%M:%SZ')} (in {human_secs(secs)})"


def human_secs(secs: float) -> str:
    """``45s``, ``12m 5s``, ``3h 20m``, ``2d 4h``: a wait, to the precision that matters."""
    s = max(0, math.ceil(secs))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86_400:
        return f"{s // 3600}h {s % 3600 // 60}m" if s % 3600 // 60 else f"{s // 3600}h"
    return f"{s // 86_400}d {s % 86_400 // 3600}h" if s % 86_400 // 3600 else f"{s // 86_400}d"


def _num(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"


def _budget_denial(
    name: str, limits: Limits, events: Sequence[UsageEvent], now: float, unit: str
) -> Denial | None:
    budget = limits.budget_credits if unit == "credits" else limits.budget_tokens
    if budget is None or limits.budget_per is None:
        return None
    window = PERIOD_SECS[limits.budget_per]
    spent = _spending(events, now, window, unit)
    total = sum(v for _, v in spent)
    if total < budget:
        return None
    reset = _budget_reset(spent, budget, window)
    resets_at, secs, when = _when(reset, now) if reset is not None else (None, None, "never")
    return Denial(
        limit="budget_credits" if unit == "credits" else "budget_tokens",
        code="budget_exceeded",
        resets_at=resets_at,
        retry_after_secs=secs,
        message=(
            f"client key '{name}' is over its budget of {_num(budget)} {unit} per "
            f"{limits.budget_per} ({_num(total)} used in the last "
            f"{_PERIOD_LABEL[limits.budget_per]}); it resets at {when}"
        ),
    )


def _rpm_denial(name: str, limits: Limits, starts: Sequence[float], now: float) -> Denial | None:
    if limits.rpm is None:
        return None
    recent = sorted(t for t in starts if now - RPM_WINDOW_SECS < t <= now)
    if len(recent) < limits.rpm:
        return None
    # Once this many of the oldest starts leave the minute, one more request fits.
    reset = recent[len(recent) - limits.rpm] + RPM_WINDOW_SECS
    resets_at, secs, when = _when(reset, now)
    return Denial(
        limit="rpm",
        resets_at=resets_at,
        retry_after_secs=secs,
        message=(
            f"client key '{name}' is over its limit of {limits.rpm} requests per minute; "
            f"it resets at {when}"
        ),
    )


def _streams_denial(name: str, limits: Limits, in_flight: int) -> Denial | None:
    if limits.max_streams is None or in_flight < limits.max_streams:
        return None
    return Denial(
        limit="max_streams",
        resets_at=None,
        retry_after_secs=None,
        message=(
            f"client key '{name}' already has {in_flight} streams in flight, its limit of "
            f"{limits.max_streams} concurrent streams; it resets when one of them ends"
        ),
    )


def decide(
    name: str, limits: Limits, activity: Activity, now: float, *, stream: bool = True
) -> Decision:
    """Allow the next request of key ``name``, or deny it with the limit that binds.

    A request is allowed while the spending in the window is under the budget
    (so the last one allowed may go over it: its cost is known only afterwards).
    ``stream`` says whether this request is a stream; only streams count against
    ``max_streams``. When several limits bind, the one that frees up last is
    reported, since retrying before then is pointless; a full stream cap
    (no known reset time) is reported only when nothing else binds.
    """
    denials = [
        d
        for d in (
            _budget_denial(name, limits, activity.events, now, "credits"),
            _budget_denial(name, limits, activity.events, now, "tokens"),
            _rpm_denial(name, limits, activity.request_starts, now),
        )
        if d is not None
    ]
    if denials:
        return max(denials, key=lambda d: d.resets_at or datetime.max.replace(tzinfo=UTC))
    if stream:
        d = _streams_denial(name, limits, activity.streams_in_flight)
        if d is not None:
            return d
    return Allow()


# ---------------------------------------------------------------------- models


def model_allowed(globs: Sequence[str], model: str) -> bool:
    """Whether ``model`` matches one of ``globs`` (no globs: every model).

    ``provider/model`` ids also match on the part after the slash, so ``gpt-*``
    admits ``github-copilot/gpt-4.1`` too. Matching is case-sensitive, like model ids.
    """
    if not globs:
        return True
    bare = model.split("/", 1)[1] if "/" in model else model
    return any(fnmatchcase(model, g) or fnmatchcase(bare, g) for g in globs)


def check_model(name: str, limits: Limits, model: str) -> Denial | None:
    """A 403 when the key may not use ``model``; None when it may."""
    if model_allowed(limits.models, model):
        return None
    return Denial(
        limit="models",
        status=403,
        code="model_not_allowed",
        resets_at=None,
        retry_after_secs=None,
        message=(
            f"client key '{name}' may not use model '{model}' (allowed: {', '.join(limits.models)})"
        ),
    )


# ------------------------------------------------------------------ durations

_DURATION_RE = re.compile(r"(\d+)\s*(m|min|h|d|w|y)")
_UNIT_SECS = {"m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}


def parse_duration(text: str) -> int:
    """``30m``, ``12h``, ``30d``, ``2w``, ``1y`` -> seconds (> 0). Raises ValueError."""
    m = _DURATION_RE.fullmatch(text.strip().lower())
    if m is None or int(m.group(1)) <= 0:
        raise ValueError(text)
    return int(m.group(1)) * _UNIT_SECS[m.group(2)]


def summary(limits: Limits) -> str:
    """``gpt-*,claude-*; 300 credits/day; 60 rpm; 4 streams``, or ``-`` for none."""
    parts: list[str] = []
    if limits.models:
        parts.append(",".join(limits.models))
    per = limits.budget_per or "?"
    if limits.budget_credits is not None:
        parts.append(f"{_num(limits.budget_credits)} credits/{per}")
    if limits.budget_tokens is not None:
        parts.append(f"{_num(limits.budget_tokens)} tokens/{per}")
    if limits.rpm is not None:
        parts.append(f"{limits.rpm} rpm")
    if limits.max_streams is not None:
        parts.append(f"{limits.max_streams} streams")
    return "; ".join(parts) or "-"

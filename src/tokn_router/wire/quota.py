"""Copilot's quota and rate-limit signals, parsed (sans-I/O).

What an upstream says about an account's limits, read from one answer:

* on a success, ``x-usage-ratelimit-session`` and ``x-usage-ratelimit-weekly``
  (the short and the 7-day token windows) and ``x-quota-snapshot-<name>`` (the
  monthly quotas: ``premium_interactions``, ``premium_models``, ``chat``, ...).
  All are ``ent=…&rem=…&rst=…`` query strings: entitlement, *percent* remaining,
  reset (ISO 8601, URL-encoded, or unix seconds); snapshots add ``ov`` /
  ``ovPerm`` (overage used / permitted). Copilot sends the window headers only
  once a window is about half used, and only when the request carries
  ``X-GitHub-Api-Version``: no header means "nothing known", not "full";
* on a 429, ``Retry-After`` or ``x-ratelimit-user-retry-after`` (seconds) and
  ``x-ratelimit-exceeded`` naming the exhausted window
  (``global-usage-5-hour-key``, ``global-usage-weekly-key``) or
  ``quota_exceeded``; bodies may carry a code like ``user_weekly_rate_limited``;
* a 402 ``{"code": "quota_exceeded", "message": "You have no quota"}``, with no
  headers at all.

:func:`classify_limit` turns a refusal into a :class:`Limit` (a short burst, a
window, or the quota) so the pool can cool the account down per window rather
than treat a week-long lock-out as a 60 s blip.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

RATE_HEADER_PREFIX = "x-usage-ratelimit-"
SNAPSHOT_HEADER_PREFIX = "x-quota-snapshot-"

# An unnamed 429 asking to wait this long is a window running dry, not a burst.
WINDOW_RETRY_SECS = 30 * 60
# ... and past this (the short window is five hours), the weekly one.
SESSION_MAX_SECS = 5 * 3600 + 15 * 60


class LimitKind(enum.Enum):
    BURST = "burst"  # too many requests right now: the short back-off
    SESSION = "session"  # the short (5-hour) token window is used up
    WEEKLY = "weekly"  # the 7-day token window is used up
    QUOTA = "quota"  # the monthly quota (premium requests / credits) is used up


@dataclass(frozen=True, slots=True)
class Limit:
    """Why an upstream refused: which window, and how long it asked us to wait."""

    kind: LimitKind
    retry_after: float | None  # seconds, from Retry-After / x-ratelimit-user-retry-after
    detail: str  # the signal that decided it, for logs and /healthz


@dataclass(frozen=True, slots=True)
class Reading:
    """One window or quota as a success answer reported it."""

    name: str  # "session", "weekly", or a snapshot name ("premium_interactions", ...)
    remaining_pct: float | None  # percent left (0-100)
    entitlement: float | None = None
    reset_at: float | None = None  # unix seconds
    unlimited: bool = False
    overage_permitted: bool | None = None


# ------------------------------------------------------------------- values


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
        return max(0.0, secs) if math.isfinite(secs) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def retry_after_secs(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``Retry-After``, else ``x-ratelimit-user-retry-after`` (Copilot sends either)."""
    for name in ("retry-after", "x-ratelimit-user-retry-after"):
        secs = parse_retry_after(headers.get(name), now)
        if secs is not None:
            return secs
    return None


def parse_fields(raw: str) -> dict[str, str]:
    """``ent=0&rem=35.3&rst=2026-…%3A…Z`` -> fields, values URL-decoded (``;`` also splits)."""
    out: dict[str, str] = {}
    for part in raw.replace(";", "&").split("&"):
        key, eq, value = part.partition("=")
        key = key.strip()
        if eq and key:
            out[key] = urllib.parse.unquote(value.strip())
    return out


def parse_reset(value: str | None) -> float | None:
    """A reset time as unix seconds: ISO 8601 (``Z`` or an offset) or a unix number."""
    if not value:
        return None
    value = value.strip()
    try:
        num = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(num) or num <= 0:
            return None
        return num / 1000 if num > 1e11 else num  # milliseconds, as JavaScript writes them
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # a local time of an unknown zone: better unknown than wrong
    return when.timestamp()


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        num = float(value)
    except ValueError:
        return None
    return num if math.isfinite(num) else None


def parse_reading(name: str, raw: str) -> Reading | None:
    """One ``ent=…&rem=…&rst=…`` header value; None when it carries no remaining share."""
    fields = parse_fields(raw)
    ent = _number(fields.get("ent"))
    unlimited = ent is not None and ent < 0  # Copilot writes -1 for "unlimited"
    rem = _number(fields.get("rem"))
    if rem is None and not unlimited:
        return None
    ov = fields.get("ovPerm")
    return Reading(
        name=name,
        remaining_pct=None if unlimited or rem is None else min(100.0, max(0.0, rem)),
        entitlement=None if unlimited else ent,
        reset_at=parse_reset(fields.get("rst")),
        unlimited=unlimited,
        overage_permitted=None if ov is None else ov.strip().lower() == "true",
    )


def read_windows(headers: Iterable[tuple[str, str]]) -> list[Reading]:
    """Every window and quota reading of a success answer's headers."""
    out: list[Reading] = []
    for key, value in headers:
        low = key.lower()
        if low.startswith(RATE_HEADER_PREFIX):
            name = low.removeprefix(RATE_HEADER_PREFIX)
        elif low.startswith(SNAPSHOT_HEADER_PREFIX):
            name = low.removeprefix(SNAPSHOT_HEADER_PREFIX)
        else:
            continue
        if not name or len(name) > 64:
            continue
        reading = parse_reading(name, value)
        if reading is not None:
            out.append(reading)
    return out


# ------------------------------------------------------------------ refusals


def _error_code_and_message(body: bytes) -> tuple[str, str]:
    """``code`` and ``message`` of a JSON error body (top level or under ``error``)."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return "", body[:300].decode("utf-8", "replace").lower()
    if not isinstance(data, dict):
        return "", ""
    err = data.get("error")
    if isinstance(err, dict):
        data = err
    code = data.get("code") or data.get("type") or ""
    message = data.get("message") or ""
    return (
        code.lower() if isinstance(code, str) else "",
        message.lower() if isinstance(message, str) else "",
    )


def _kind_from_name(text: str) -> LimitKind | None:
    """The window a key or code names (``global-usage-weekly-key``, ``user_weekly_…``)."""
    if "quota" in text:
        return LimitKind.QUOTA
    if "weekly" in text or "week" in text:
        return LimitKind.WEEKLY
    if "5-hour" in text or "5_hour" in text or "session" in text or "hourly" in text:
        return LimitKind.SESSION
    return None


def classify_limit(
    status: int, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> Limit | None:
    """What a 402/429 says about the account's limits (None for other statuses).

    A 402 is the quota, whatever its body. A 429 is the window that
    ``x-ratelimit-exceeded`` or the error code names; unnamed, a Retry-After of
    half an hour or more is a window too (hours: the weekly one), anything
    shorter a burst.
    """
    if status not in (402, 429):
        return None
    retry = retry_after_secs(headers, now)
    code, message = _error_code_and_message(body)
    if status == 402:
        return Limit(LimitKind.QUOTA, retry, f"402 {code or 'payment required'}")
    exceeded = (headers.get("x-ratelimit-exceeded") or "").strip()
    if exceeded:
        kind = _kind_from_name(exceeded.lower())
        if kind is not None:
            return Limit(kind, retry, f"x-ratelimit-exceeded: {exceeded[:100]}")
    if code:
        kind = _kind_from_name(code)
        if kind is not None:
            return Limit(kind, retry, f"429 {code[:100]}")
    if "quota exceeded" in message or "no quota" in message:
        return Limit(LimitKind.QUOTA, retry, "429 quota exceeded")
    if retry is not None and retry >= WINDOW_RETRY_SECS:
        kind = LimitKind.SESSION if retry <= SESSION_MAX_SECS else LimitKind.WEEKLY
        return Limit(kind, retry, f"429 with Retry-After {int(retry)}s")
    return Limit(LimitKind.BURST, retry, "429")


__all__ = [
    "Limit",
    "LimitKind",
    "Reading",
    "classify_limit",
    "parse_fields",
    "parse_reading",
    "parse_reset",
    "parse_retry_after",
    "read_windows",
    "retry_after_secs",
]

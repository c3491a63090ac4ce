"""Per-account rate windows and quotas, and the quota-aware candidate order (pure, no I/O).

An account's :class:`Windows` holds what upstream last said about each window
(``session``, ``weekly``, the monthly quota snapshots) and which are exhausted
until when. Which windows a request spends depends on its model:

* the token windows (``session``, ``weekly``) and a free plan's ``chat`` quota:
  every request;
* the premium quotas (``premium_interactions``, ``premium_models``): premium
  requests only. A model whose ``/models`` entry says ``billing.multiplier: 0``
  is free and neither spends nor needs premium headroom; a model we know
  nothing about counts as premium, the safe side for the user's bill.

:func:`order` is the pool's choice among the accounts that serve a request:
the most headroom first (in 10-point steps, so accounts about as full share
the round robin), accounts below their ``reserve_percent`` only as a last
resort, exhausted ones last. With nothing known it keeps the round-robin order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokn_router.wire.quota import Limit, LimitKind, Reading

RATE_WINDOWS = frozenset({"session", "weekly"})
ALL_REQUEST_QUOTAS = frozenset({"chat"})  # a free plan's chat quota: every chat request
PREMIUM_QUOTAS = frozenset({"premium_interactions", "premium_models"})
# Accounts whose headroom falls in the same step are "about as full": round robin.
HEADROOM_STEP = 10.0
UNKNOWN_HEADROOM = 100.0  # Copilot reports a window only once it is about half used

# ordering tiers
IN_ROTATION = 0
BELOW_RESERVE = 1
EXHAUSTED = 2


def spends(name: str, premium: bool) -> bool:
    """Does a (premium or free) request spend the window or quota ``name``?"""
    if name in RATE_WINDOWS or name in ALL_REQUEST_QUOTAS:
        return True
    return premium and name in PREMIUM_QUOTAS


def premium_of_entry(entry: Mapping[str, Any] | None) -> bool | None:
    """What a ``/models`` entry says about premium-ness: ``billing.multiplier`` > 0
    (or, without one, ``billing.is_premium``); None when it says nothing."""
    billing = entry.get("billing") if entry else None
    if not isinstance(billing, Mapping):
        return None
    mult = billing.get("multiplier")
    if isinstance(mult, (int, float)) and not isinstance(mult, bool) and math.isfinite(mult):
        return mult > 0
    flag = billing.get("is_premium")
    return flag if isinstance(flag, bool) else None


def is_premium(entries: Iterable[Mapping[str, Any] | None]) -> bool:
    """A request for a model is premium unless a ``/models`` entry says it is free."""
    for entry in entries:
        known = premium_of_entry(entry)
        if known is not None:
            return known
    return True


@dataclass(slots=True)
class Window:
    """One window or quota of one account."""

    remaining_pct: float | None = None
    entitlement: float | None = None
    reset_at: float | None = None  # unix seconds, as upstream last said
    observed_at: float = 0.0
    unlimited: bool = False
    exhausted_until: float = 0.0  # refused until then (a limit answer)
    reason: str | None = None  # what said it was exhausted
    premium_only: bool = False  # the exhaustion stops premium requests only (a quota)

    def exhausted(self, now: float, premium: bool) -> bool:
        return self.exhausted_until > now and (premium or not self.premium_only)

    def fresh_remaining(self, now: float) -> float | None:
        """The remaining share, unless the window has reset since it was read."""
        if self.unlimited or self.remaining_pct is None:
            return None
        if self.reset_at is not None and self.reset_at <= now:
            return None
        return self.remaining_pct

    def as_json(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"remaining_pct": self.remaining_pct}
        if self.unlimited:
            out["unlimited"] = True
        if self.entitlement is not None:
            out["entitlement"] = self.entitlement
        if self.reset_at is not None:
            out["reset_at"] = int(self.reset_at)
            if self.reset_at <= now:
                out["stale"] = True  # reset since it was read
        if self.observed_at:
            out["observed_at"] = int(self.observed_at)
        if self.exhausted_until > now:
            out["exhausted_until"] = int(self.exhausted_until)
            out["retry_after_secs"] = math.ceil(self.exhausted_until - now)
            if self.premium_only:
                out["premium_only"] = True
        if self.reason and self.exhausted_until > now:
            out["reason"] = self.reason
        return out


_DUMP_FIELDS = (
    "remaining_pct",
    "entitlement",
    "reset_at",
    "observed_at",
    "unlimited",
    "exhausted_until",
    "reason",
    "premium_only",
)


class Windows:
    """The windows of one account: readings from success answers, exhaustion from refusals."""

    __slots__ = ("by_name",)

    def __init__(self) -> None:
        self.by_name: dict[str, Window] = {}

    def __bool__(self) -> bool:
        return bool(self.by_name)

    # ------------------------------------------------------------- updates

    def observe(self, readings: Iterable[Reading], now: float, *, premium: bool) -> bool:
        """Take a success answer's readings; True if anything worth saving changed.

        A success also proves that the windows the request spends are not
        exhausted (upstream lifted a limit early, or its reset came sooner).
        """
        changed = False
        for r in readings:
            w = self.by_name.get(r.name)
            if w is None:
                w = self.by_name[r.name] = Window()
                changed = True
            before = (w.remaining_pct, w.entitlement, w.reset_at, w.unlimited)
            w.remaining_pct = r.remaining_pct
            w.entitlement = r.entitlement
            w.reset_at = r.reset_at
            w.unlimited = r.unlimited
            w.observed_at = now
            changed |= before != (w.remaining_pct, w.entitlement, w.reset_at, w.unlimited)
        for name, w in self.by_name.items():
            if not w.exhausted(now, premium):
                continue
            if not premium and name in PREMIUM_QUOTAS:
                w.premium_only = True  # free models pass after all; premium ones may not
            else:
                w.exhausted_until = 0.0
                w.reason = None
            changed = True
        return changed

    def exhaust(
        self, limit: Limit, now: float, *, premium: bool, fallback_secs: float
    ) -> tuple[str, float]:
        """Mark the window ``limit`` names as used up; returns (window name, until).

        Until: upstream's Retry-After when it sent one, else the window's reset
        as last read, else ``fallback_secs`` (then one request finds out).
        """
        name = self._name_for(limit.kind)
        w = self.by_name.get(name)
        if w is None:
            w = self.by_name[name] = Window()
        if limit.retry_after is not None:
            until = now + limit.retry_after
        elif w.reset_at is not None and w.reset_at > now:
            until = w.reset_at
        else:
            until = now + fallback_secs
        w.exhausted_until = max(w.exhausted_until if w.exhausted_until > now else 0.0, until)
        w.remaining_pct = 0.0
        w.observed_at = now
        if limit.retry_after is not None and (w.reset_at is None or w.reset_at <= now):
            w.reset_at = until
        w.reason = limit.detail
        # a quota refused on a premium request still lets free models through;
        # refused on a free one, it stops everything
        w.premium_only = limit.kind is LimitKind.QUOTA and premium
        return name, w.exhausted_until

    def _name_for(self, kind: LimitKind) -> str:
        if kind is LimitKind.QUOTA:
            # the premium snapshot this account reports, else the usual one
            return next(
                (n for n in ("premium_models", "premium_interactions") if n in self.by_name),
                "premium_interactions",
            )
        return str(kind.value)

    # -------------------------------------------------------------- reading

    def exhausted_until(self, now: float, *, premium: bool) -> float:
        """When every window a request spends is open again (<= now: it is)."""
        return max(
            (w.exhausted_until for w in self.by_name.values() if w.exhausted(now, premium)),
            default=0.0,
        )

    def blocking(self, now: float, *, premium: bool) -> tuple[str, Window] | None:
        """The exhausted window that stays shut longest for such a request."""
        shut = [(n, w) for n, w in self.by_name.items() if w.exhausted(now, premium)]
        return max(shut, key=lambda nw: nw[1].exhausted_until) if shut else None

    def headroom(self, now: float, *, premium: bool) -> float | None:
        """The smallest known remaining share among the windows the request spends."""
        known = [
            rem
            for n, w in self.by_name.items()
            if spends(n, premium) and (rem := w.fresh_remaining(now)) is not None
        ]
        return min(known) if known else None

    def as_json(self, now: float) -> dict[str, Any]:
        return {name: w.as_json(now) for name, w in sorted(self.by_name.items())}

    # ---------------------------------------------------------- persistence

    def dump(self) -> dict[str, Any]:
        def keep(f: str, value: Any) -> bool:
            if value is None or value is False:
                return False
            return not (f in ("exhausted_until", "observed_at") and value == 0.0)

        return {
            name: {f: v for f in _DUMP_FIELDS if keep(f, v := getattr(w, f))}
            for name, w in self.by_name.items()
        }

    @classmethod
    def load(cls, data: Any) -> Windows:
        """From :meth:`dump` output; anything malformed is skipped, never an error."""
        out = cls()
        if not isinstance(data, dict):
            return out
        for name, fields in data.items():
            if not isinstance(name, str) or not isinstance(fields, dict):
                continue
            w = Window()
            for f in _DUMP_FIELDS:
                value = fields.get(f)
                default = getattr(w, f)
                if value is None:
                    continue
                if isinstance(default, bool):
                    if isinstance(value, bool):
                        setattr(w, f, value)
                elif f == "reason":
                    if isinstance(value, str):
                        w.reason = value[:300]
                elif (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                ):
                    setattr(w, f, float(value))
            out.by_name[name] = w
        return out


# ---------------------------------------------------------------- ordering


@dataclass(frozen=True, slots=True)
class Choice:
    """One candidate as :func:`order` sees it."""

    headroom: float | None  # the smallest remaining share of the windows the request spends
    reserve: float = 0.0  # percent to keep for the account's other uses
    exhausted: bool = False  # a window the request spends is used up


def tier(c: Choice) -> int:
    if c.exhausted:
        return EXHAUSTED
    if c.reserve > 0 and c.headroom is not None and c.headroom < c.reserve:
        return BELOW_RESERVE
    return IN_ROTATION


def order(choices: Sequence[Choice]) -> list[int]:
    """Indices of ``choices`` (given in round-robin order) in the order to try them."""

    def key(i: int) -> tuple[int, float]:
        c = choices[i]
        head = UNKNOWN_HEADROOM if c.headroom is None else c.headroom
        return tier(c), -math.floor(head / HEADROOM_STEP)

    return sorted(range(len(choices)), key=key)  # stable: ties keep the rotation


__all__ = [
    "ALL_REQUEST_QUOTAS",
    "BELOW_RESERVE",
    "EXHAUSTED",
    "IN_ROTATION",
    "PREMIUM_QUOTAS",
    "RATE_WINDOWS",
    "Choice",
    "Window",
    "Windows",
    "is_premium",
    "order",
    "premium_of_entry",
    "spends",
    "tier",
]

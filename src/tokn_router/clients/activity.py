"""What each client key is doing right now: spending, request starts, open streams.

The daemon keeps one :class:`Activity` in memory. Spending is seeded from the usage
ledger at start-up (:mod:`tokn_router.clients.ledger`) and then grows with every
request that ends, so budgets survive a restart; request starts (for ``rpm``) and
open streams (for ``max_streams``) are only ever in memory. :meth:`Activity.check`
hands what it knows to :func:`tokn_router.clients.limits.decide`.

Pure bookkeeping: no I/O, no clock of its own (every method takes ``now``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from tokn_router.clients import limits
from tokn_router.clients.limits import PERIOD_SECS, RPM_WINDOW_SECS, Decision, Limits, UsageEvent

BUCKET_SECS = 60  # spending is merged per minute: at most 43,200 entries per key and month
_LONGEST = max(PERIOD_SECS.values())
_TRIM_AT = 4096  # drop buckets older than the longest window once this many piled up


class _Spend:
    """One key's spending in per-minute buckets, with running totals per budget window.

    Events arrive in time order (the ledger sorted by ``ts``, then requests as they
    end), so a new one joins the newest bucket or opens the next; a clock that went
    back merges into the newest. Each window keeps the index of its first bucket and
    its totals; moving ``now`` forward only drops buckets from the front.
    """

    __slots__ = ("_start", "_sum_c", "_sum_t", "credits", "has_credits", "ids", "last", "tokens")

    def __init__(self) -> None:
        self.ids: list[int] = []  # minute numbers, ascending
        self.last: list[float] = []  # the latest event in each bucket (unix seconds)
        self.credits: list[float] = []  # known credits only
        self.has_credits: list[bool] = []  # whether any event of the bucket reported credits
        self.tokens: list[int] = []
        self._start = dict.fromkeys(PERIOD_SECS, 0)
        self._sum_c = dict.fromkeys(PERIOD_SECS, 0.0)
        self._sum_t = dict.fromkeys(PERIOD_SECS, 0)

    def add(self, ts: float, credits: float | None, tokens: int) -> None:
        bucket = int(ts // BUCKET_SECS)
        if self.ids and bucket <= self.ids[-1]:
            self.last[-1] = max(self.last[-1], ts)
            self.tokens[-1] += tokens
            if credits is not None:
                self.credits[-1] += credits
                self.has_credits[-1] = True
        else:
            self.ids.append(bucket)
            self.last.append(ts)
            self.tokens.append(tokens)
            self.credits.append(credits or 0.0)
            self.has_credits.append(credits is not None)
        for p in PERIOD_SECS:  # the newest bucket is inside every window
            self._sum_t[p] += tokens
            self._sum_c[p] += credits or 0.0

    def _advance(self, now: float) -> None:
        for p, window in PERIOD_SECS.items():
            i = self._start[p]
            edge = now - window
            while i < len(self.last) and self.last[i] <= edge:
                self._sum_c[p] -= self.credits[i]
                self._sum_t[p] -= self.tokens[i]
                i += 1
            if i == len(self.last):  # nothing left inside: no float residue either
                self._sum_c[p], self._sum_t[p] = 0.0, 0
            self._start[p] = i
        cut = self._start["month"]
        if cut >= _TRIM_AT:
            for seq in (self.ids, self.last, self.credits, self.has_credits, self.tokens):
                del seq[:cut]
            for p in PERIOD_SECS:
                self._start[p] -= cut
            self._resum()

    def _resum(self) -> None:
        # after a trim: recompute from scratch so subtraction never accumulates drift
        for p in PERIOD_SECS:
            s = self._start[p]
            self._sum_c[p] = math.fsum(self.credits[s:])
            self._sum_t[p] = sum(self.tokens[s:])

    def totals(self, per: str, now: float) -> tuple[float, int]:
        """``(credits, tokens)`` spent over the sliding window ``per`` ending at ``now``."""
        self._advance(now)
        return max(0.0, self._sum_c[per]), self._sum_t[per]

    def events(self, per: str, now: float) -> list[UsageEvent]:
        self._advance(now)
        return [
            UsageEvent(
                self.last[i], self.credits[i] if self.has_credits[i] else None, self.tokens[i]
            )
            for i in range(self._start[per], len(self.last))
        ]

    @property
    def empty(self) -> bool:
        return not self.ids


class Activity:
    """Every key's recent activity, keyed by key name."""

    def __init__(self) -> None:
        self._spend: dict[str, _Spend] = {}
        self._starts: dict[str, deque[float]] = {}
        self.streams: dict[str, int] = {}

    # ------------------------------------------------------------------ feeding

    def spent(self, name: str, ts: float, credits: float | None, tokens: int) -> None:
        """A request of ``name`` that cost ``credits`` (None: unknown) and ``tokens``."""
        self._spend.setdefault(name, _Spend()).add(ts, credits, tokens)

    def seed(self, events: Iterable[tuple[str, float, float | None, int]]) -> int:
        """Spending read from the ledger, oldest first; returns how many events."""
        n = 0
        for name, ts, credits, tokens in events:
            self.spent(name, ts, credits, tokens)
            n += 1
        return n

    def started(self, name: str, now: float) -> None:
        """A request of ``name`` was admitted at ``now`` (what ``rpm`` counts)."""
        starts = self._starts.setdefault(name, deque())
        starts.append(now)
        while starts and starts[0] <= now - RPM_WINDOW_SECS:
            starts.popleft()

    def stream_opened(self, name: str) -> None:
        self.streams[name] = self.streams.get(name, 0) + 1

    def stream_closed(self, name: str) -> None:
        left = self.streams.get(name, 0) - 1
        if left > 0:
            self.streams[name] = left
        else:
            self.streams.pop(name, None)

    # ----------------------------------------------------------------- reading

    def used(self, name: str, per: str, now: float) -> tuple[float, int]:
        """``(credits, tokens)`` of ``name`` over the window ``per``."""
        spend = self._spend.get(name)
        return spend.totals(per, now) if spend is not None else (0.0, 0)

    def _budget_events(self, name: str, lim: Limits, now: float) -> list[UsageEvent]:
        spend = self._spend.get(name)
        if spend is None or lim.budget_per is None or not lim.has_budget():
            return []
        credits, tokens = spend.totals(lim.budget_per, now)
        over = (lim.budget_credits is not None and credits >= lim.budget_credits) or (
            lim.budget_tokens is not None and tokens >= lim.budget_tokens
        )
        # Under budget (nearly always) the totals settle it; the events are only
        # needed to say when an exhausted budget frees up again.
        return spend.events(lim.budget_per, now) if over else []

    def check(self, name: str, lim: Limits, now: float, *, stream: bool) -> Decision:
        """Whether the next request of ``name`` is within ``lim`` (nothing is recorded)."""
        starts = self._starts.get(name, ())
        recent = [t for t in starts if t > now - RPM_WINDOW_SECS] if lim.rpm is not None else []
        return limits.decide(
            name,
            lim,
            limits.Activity(
                events=self._budget_events(name, lim, now),
                request_starts=recent,
                streams_in_flight=self.streams.get(name, 0),
            ),
            now,
            stream=stream,
        )


__all__ = ["BUCKET_SECS", "Activity"]

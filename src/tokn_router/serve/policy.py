"""The failover status policy: what an upstream answer means for the account.

A pure function of the upstream status and, for 402/429, of the limit it names
(:func:`tokn_router.wire.quota.classify_limit`); no I/O, no state. Used by
:meth:`tokn_router.serve.relay.Relay.open` before the first byte reaches the
client:

==========================================  =========================================
upstream                                    decision
==========================================  =========================================
< 400                                       ``ANSWER``: relay it, the account is fine
400, 404, 413, 422 and any other 4xx        ``RELAY``: the request's fault, relay it
except 401/402/403/408/429                  untouched and leave the account alone
401 / 403 on a refreshable credential,      ``REFRESH``: refresh the token once and
not refreshed yet for this request          retry the same account
401 / 403 otherwise                         ``COOL_DOWN`` (back-off), next account
429 burst (no window named, Retry-After     ``COOL_DOWN`` for ``Retry-After`` when
under 30 min or none), 503                  upstream sent one, else the back-off
429 naming the 5-hour / session window,     ``COOL_DOWN`` of the ``session`` window
or unnamed with Retry-After 30 min - 5 h    until its reset, next account
429 naming the weekly window (key or        ``COOL_DOWN`` of the ``weekly`` window
code), or unnamed with Retry-After > 5 h    until its reset: never a 60 s blip
402 (any body), 429 ``quota_exceeded``      ``COOL_DOWN`` of the ``quota`` until its
                                            reset; free (0x) models still go there
other 5xx, 408                              ``COOL_DOWN`` (back-off), next account
no answer (connect error, timeout)          ``COOL_DOWN`` (back-off), next account
==========================================  =========================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tokn_router.wire.quota import LimitKind


class Action(enum.Enum):
    ANSWER = "answer"  # success: relay, mark the account healthy
    RELAY = "relay"  # the request's own fault: relay untouched
    REFRESH = "refresh"  # refresh the credential once, then retry the account
    COOL_DOWN = "cool_down"  # the account's fault: cool it down, try the next one


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    honour_retry_after: bool = False  # cool down for upstream's Retry-After if it sent one
    # a used-up window: shut it until its reset instead of the account's back-off
    window: LimitKind | None = None


ANSWER = Decision(Action.ANSWER)
RELAY = Decision(Action.RELAY)
REFRESH = Decision(Action.REFRESH)
COOL_DOWN = Decision(Action.COOL_DOWN)
COOL_DOWN_RETRY_AFTER = Decision(Action.COOL_DOWN, honour_retry_after=True)
COOL_DOWN_SESSION = Decision(Action.COOL_DOWN, honour_retry_after=True, window=LimitKind.SESSION)
COOL_DOWN_WEEKLY = Decision(Action.COOL_DOWN, honour_retry_after=True, window=LimitKind.WEEKLY)
COOL_DOWN_QUOTA = Decision(Action.COOL_DOWN, honour_retry_after=True, window=LimitKind.QUOTA)
_WINDOW_DECISIONS = {
    LimitKind.SESSION: COOL_DOWN_SESSION,
    LimitKind.WEEKLY: COOL_DOWN_WEEKLY,
    LimitKind.QUOTA: COOL_DOWN_QUOTA,
}

# 4xx that say something about the account (credential, quota, rate, a slow
# upstream), not about the request
_ACCOUNT_4XX = frozenset({401, 402, 403, 408, 429})
_RETRY_AFTER = frozenset({402, 429, 503})


def decide(
    status: int | None, *, can_refresh: bool = False, limit: LimitKind | None = None
) -> Decision:
    """The decision for one upstream answer (``status`` None: none came).

    ``can_refresh``: the account's credential can be refreshed and was not
    refreshed yet for this request. ``limit``: what a 402/429 named (see
    :func:`tokn_router.wire.quota.classify_limit`); a 402 is the quota even
    when nothing was classified.
    """
    if status is None:
        return COOL_DOWN
    if status < 400:
        return ANSWER
    if status < 500 and status not in _ACCOUNT_4XX:
        return RELAY
    if status in (401, 403) and can_refresh:
        return REFRESH
    if status == 402:
        return COOL_DOWN_QUOTA
    if status == 429 and limit is not None and limit in _WINDOW_DECISIONS:
        return _WINDOW_DECISIONS[limit]
    if status in _RETRY_AFTER:
        return COOL_DOWN_RETRY_AFTER
    return COOL_DOWN


__all__ = [
    "ANSWER",
    "COOL_DOWN",
    "COOL_DOWN_QUOTA",
    "COOL_DOWN_RETRY_AFTER",
    "COOL_DOWN_SESSION",
    "COOL_DOWN_WEEKLY",
    "REFRESH",
    "RELAY",
    "Action",
    "Decision",
    "decide",
]

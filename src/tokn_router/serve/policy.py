"""The failover status policy: what an upstream answer means for the account.

A pure function of the upstream status (no I/O, no state), used by
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
402 / 429 / 503                             ``COOL_DOWN`` for ``Retry-After`` when
                                            upstream sent one, else the back-off
other 5xx, 408                              ``COOL_DOWN`` (back-off), next account
no answer (connect error, timeout)          ``COOL_DOWN`` (back-off), next account
==========================================  =========================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    ANSWER = "answer"  # success: relay, mark the account healthy
    RELAY = "relay"  # the request's own fault: relay untouched
    REFRESH = "refresh"  # refresh the credential once, then retry the account
    COOL_DOWN = "cool_down"  # the account's fault: cool it down, try the next one


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    honour_retry_after: bool = False  # cool down for upstream's Retry-After if it sent one


ANSWER = Decision(Action.ANSWER)
RELAY = Decision(Action.RELAY)
REFRESH = Decision(Action.REFRESH)
COOL_DOWN = Decision(Action.COOL_DOWN)
COOL_DOWN_RETRY_AFTER = Decision(Action.COOL_DOWN, honour_retry_after=True)

# 4xx that say something about the account (credential, quota, rate, a slow
# upstream), not about the request
_ACCOUNT_4XX = frozenset({401, 402, 403, 408, 429})
_RETRY_AFTER = frozenset({402, 429, 503})


def decide(status: int | None, *, can_refresh: bool = False) -> Decision:
    """The decision for one upstream answer (``status`` None: none came).

    ``can_refresh``: the account's credential can be refreshed and was not
    refreshed yet for this request.
    """
    if status is None:
        return COOL_DOWN
    if status < 400:
        return ANSWER
    if status < 500 and status not in _ACCOUNT_4XX:
        return RELAY
    if status in (401, 403) and can_refresh:
        return REFRESH
    if status in _RETRY_AFTER:
        return COOL_DOWN_RETRY_AFTER
    return COOL_DOWN


__all__ = [
    "ANSWER",
    "COOL_DOWN",
    "COOL_DOWN_RETRY_AFTER",
    "REFRESH",
    "RELAY",
    "Action",
    "Decision",
    "decide",
]

"""Client keys of a team server: who may use the router, and how much.

* :mod:`~tokn_router.clients.keys` — the key store (keyed hashes in the state dir).
* :mod:`~tokn_router.clients.extract` — where a key travels in a request.
* :mod:`~tokn_router.clients.policy` — whether a listener requires keys.
* :mod:`~tokn_router.clients.limits` — budgets, requests per minute, streams, models.

Only the store does I/O (small blocking file reads and writes, run by the CLI or
in a thread by the daemon); the rest is pure, for the request path to call.
"""

__all__ = [
    "extract",
    "keys",
    "limits",
    "policy",
]

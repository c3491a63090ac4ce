"""Client keys of a team server: who may use the router, and how much.

* :mod:`~tokn_router.clients.keys` — the key store (keyed hashes in the state dir).
* :mod:`~tokn_router.clients.extract` — where a key travels in a request.
* :mod:`~tokn_router.clients.policy` — whether a listener requires keys.
* :mod:`~tokn_router.clients.limits` — budgets, requests per minute, streams, models.
* :mod:`~tokn_router.clients.activity` — what each key is doing (spending, starts, streams).
* :mod:`~tokn_router.clients.ledger` — what the usage ledger says about each key.

Only the store and the ledger queries do I/O (small blocking file reads and
writes, SQLite reads, run by the CLI or in a thread by the daemon); the rest is
pure, for the request path to call. The gate that applies all this to requests
is :mod:`tokn_router.serve.gate`.
"""

__all__ = [
    "activity",
    "extract",
    "keys",
    "ledger",
    "limits",
    "policy",
]

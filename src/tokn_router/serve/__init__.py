"""The request path both front ends share: a :class:`~tokn_router.serve.call.Call`
in, route, account, upstream, transform, an :class:`~tokn_router.serve.call.Answer`
out, and the ledger row on the side.
"""

__all__ = [
    "agents",
    "call",
    "chat",
    "common",
    "forward",
    "policy",
    "pump",
    "relay",
    "routes",
    "sticky",
]

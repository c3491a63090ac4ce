"""The request path both front ends share: a :class:`~tokn_router.serve.call.Call`
in, route, account, upstream, transform, an :class:`~tokn_router.serve.call.Answer`
out, and the ledger row on the side. The client-key gate (``gate``) and the
Prometheus numbers (``metrics``) sit on the same path.
"""

__all__ = [
    "agents",
    "call",
    "chat",
    "common",
    "forward",
    "gate",
    "metrics",
    "policy",
    "pump",
    "relay",
    "routes",
    "sticky",
]

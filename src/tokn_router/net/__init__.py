"""Outbound I/O: the upstream HTTP transport, the httpx client built on it, TLS,
and tunnels through outbound HTTP/SOCKS proxies.
"""

__all__ = [
    "client",
    "h1client",
    "streams",
    "transport",
    "tunnels",
]

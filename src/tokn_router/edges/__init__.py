"""Front ends: they turn what arrives on a socket into calls of :mod:`tokn_router.serve`
(the API listener's Quart app, the LAN bootstrap, the MITM proxy).
"""

__all__ = [
    "api",
    "lan",
    "lan_scripts",
    "proxy",
]

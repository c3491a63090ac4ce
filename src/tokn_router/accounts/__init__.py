"""Upstream accounts: the config that names them, the providers that speak for
them, the pool that picks one and the refresher that keeps their tokens fresh.
"""

__all__ = [
    "config",
    "config_ops",
    "identity",
    "importers",
    "models_meta",
    "pool",
    "providers",
    "refresher",
    "resets",
    "schema",
    "token_sources",
    "window_store",
    "windows",
]

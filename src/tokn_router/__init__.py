"""tokn-router: a local OpenAI-compatible API over a pool of Copilot and Z.ai accounts."""

from tokn_router._version import __version__

__all__ = ["__version__"]

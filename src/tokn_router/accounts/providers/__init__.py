"""Provider registry: ``PROVIDERS[id]`` is the provider object for a config id."""

from __future__ import annotations

from tokn_router.accounts.providers.base import Credential, Provider, RequestInfo
from tokn_router.accounts.providers.copilot import CopilotProvider
from tokn_router.accounts.providers.zai import ZAI_PROVIDERS

PROVIDERS: dict[str, Provider] = {p.id: p for p in (CopilotProvider(), *ZAI_PROVIDERS)}


def get(provider_id: str) -> Provider:
    return PROVIDERS[provider_id]


__all__ = ["PROVIDERS", "Credential", "Provider", "RequestInfo", "get"]

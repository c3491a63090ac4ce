"""Z.ai / Zhipu: static API key, OpenAI-compatible upstream, GLM thinking injection.

Four provider ids are registered independently and share this implementation.
"""

from __future__ import annotations

from typing import Any

from tokn_router.accounts.providers.base import Provider

CODING_BASE_INTL = "https://api.z.ai/api/coding/paas/v4"

# Every GLM model is a reasoning model (models.dev marks them all reasoning=true).
_THINKING = {"type": "enabled", "clear_thinking": False}


def is_reasoning_model(model: str) -> bool:
    return model.lower().split("/")[-1].startswith("glm-")


def inject_thinking(body: dict[str, Any]) -> dict[str, Any]:
    """Add ``thinking`` for reasoning models unless the client chose one."""
    model = body.get("model")
    if isinstance(model, str) and is_reasoning_model(model) and "thinking" not in body:
        return {**body, "thinking": dict(_THINKING)}
    return body


class ZaiProvider(Provider):
    auth_kind = "api-key"
    default_base_url = CODING_BASE_INTL

    def __init__(
        self,
        provider_id: str,
        display_name: str,
        base_url: str,
        hosts: tuple[str, ...],
        models: tuple[str, ...],
    ) -> None:
        self.id = provider_id
        self.default_base_url = base_url
        self.display_name = display_name
        self._hosts = hosts
        self.static_models = models

    def transform_request(self, body: dict[str, Any]) -> dict[str, Any]:
        return inject_thinking(body)

    def matches_host(self, host: str) -> bool:
        return host in self._hosts


_ZAI_MODELS = ("glm-4.5-air", "glm-4.7", "glm-5-turbo", "glm-5.1", "glm-5.2", "glm-5v-turbo")

_ZHIPU_MODELS = (*_ZAI_MODELS, "glm-4.6v")

# Each id defaults to its own endpoint (models.dev provider.toml); a Zhipu key
# does not work on api.z.ai, so one shared default would fail for half of them.
ZAI_PROVIDERS: tuple[ZaiProvider, ...] = (
    ZaiProvider(
        "zai-coding-plan", "Z.AI Coding Plan", CODING_BASE_INTL, ("api.z.ai",), _ZAI_MODELS
    ),
    ZaiProvider("zai", "Z.AI", "https://api.z.ai/api/paas/v4", ("api.z.ai",), _ZAI_MODELS),
    ZaiProvider(
        "zhipuai-coding-plan",
        "Zhipu AI Coding Plan",
        "https://open.bigmodel.cn/api/coding/paas/v4",
        ("open.bigmodel.cn",),
        _ZHIPU_MODELS,
    ),
    ZaiProvider(
        "zhipuai",
        "Zhipu AI",
        "https://open.bigmodel.cn/api/paas/v4",
        ("open.bigmodel.cn",),
        _ZHIPU_MODELS,
    ),
)

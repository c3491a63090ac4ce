"""GitHub Copilot: GitHub OAuth token → short-lived Copilot token → endpoints.api."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokn_router.accounts import identity
from tokn_router.accounts.providers import github as gh
from tokn_router.accounts.providers.base import Credential, Provider, RefreshRequest, RequestInfo
from tokn_router.errors import AuthError

if TYPE_CHECKING:
    from tokn_router.accounts.schema import Account, AccountSettings, GithubConfig

DEFAULT_API_BASE = "https://api.githubcopilot.com"


def api_base_from_token(token: str) -> str | None:
    """Derive the API base from the token's ``proxy-ep=`` field, when present.

    A persisted token carries ``proxy-ep=proxy.business.githubcopilot.com``; the
    API host is the same with ``api.`` in front (``api.business.githubcopilot.com``),
    which is what the token exchange's ``endpoints.api`` names when it is present.
    """
    fields = token.split(":", 1)[0]
    for kv in fields.split(";"):
        k, _, v = kv.partition("=")
        if k == "proxy-ep" and v.startswith("proxy."):
            return "https://api." + v.removeprefix("proxy.")
    return None


def identity_headers(settings: AccountSettings) -> dict[str, str]:
    """The editor identity headers of an account, defaults filled in."""
    return {
        "Editor-Version": settings.editor_version or identity.EDITOR_VERSION,
        "Editor-Plugin-Version": settings.editor_plugin_version or identity.EDITOR_PLUGIN_VERSION,
        "User-Agent": settings.user_agent or identity.USER_AGENT,
        "Copilot-Integration-Id": settings.copilot_integration_id
        or identity.COPILOT_INTEGRATION_ID,
        "OpenAI-Intent": settings.openai_intent or identity.OPENAI_INTENT,
        "X-GitHub-Api-Version": settings.github_api_version or identity.GITHUB_API_VERSION,
    }


def build_headers(settings: AccountSettings, token: str, info: RequestInfo) -> dict[str, str]:
    """All headers of one Copilot API request (pure; table-tested)."""
    h = {"Authorization": f"Bearer {token}", **identity_headers(settings)}
    if info.intent:
        h["OpenAI-Intent"] = info.intent
    h["X-Request-Id"] = info.request_id
    h["X-Initiator"] = info.initiator
    if info.vision:
        h["Copilot-Vision-Request"] = "true"
    h.update(info.extra)
    return h


class CopilotProvider(Provider):
    id = "github-copilot"
    display_name = "GitHub Copilot"
    auth_kind = "github-oauth"
    default_base_url = DEFAULT_API_BASE
    static_models = (
        "gpt-4.1",
        "gpt-4o",
        "gpt-5-mini",
        "claude-sonnet-4.5",
    )

    def needs_refresh(self) -> bool:
        return True

    def base_url(self, account: Account, credential: Credential | None) -> str:
        if account.base_url:
            return account.base_url.rstrip("/")
        if credential and credential.api_base:
            return credential.api_base.rstrip("/")
        if credential:
            derived = api_base_from_token(credential.token)
            if derived:
                return derived
        return DEFAULT_API_BASE

    def token(self, account: Account) -> str | None:
        return account.access_token

    def headers(self, account: Account, token: str, info: RequestInfo) -> dict[str, str]:
        return build_headers(account.settings, token, info)

    def model_headers(self, account: Account, token: str) -> dict[str, str]:
        h = {"Authorization": f"Bearer {token}", **identity_headers(account.settings)}
        h["OpenAI-Intent"] = "model-access"
        return h

    def refresh_request(self, account: Account, github: GithubConfig) -> RefreshRequest:
        if not account.refresh_token:
            raise AuthError(f"account '{account.id}' has no refresh_token (GitHub token)")
        return RefreshRequest(
            url=account.refresh_url or gh.token_url(github),
            headers=gh.exchange_headers(account.refresh_token),
        )

    def parse_refresh(self, status: int, body: bytes) -> Credential:
        return gh.credential_from_exchange(status, body)

    def matches_host(self, host: str) -> bool:
        return host == "githubcopilot.com" or host.endswith(".githubcopilot.com")

"""GitHub Copilot: GitHub OAuth token → short-lived Copilot token → endpoints.api."""

from __future__ import annotations

import hashlib
import re
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


# identity set field -> the header carrying it (token_api_version: the token exchange's)
IDENTITY_HEADERS: dict[str, str] = {
    "editor_version": "Editor-Version",
    "editor_plugin_version": "Editor-Plugin-Version",
    "user_agent": "User-Agent",
    "copilot_integration_id": "Copilot-Integration-Id",
    "openai_intent": "OpenAI-Intent",
    "github_api_version": "X-GitHub-Api-Version",
    "user_agent_library": "X-VSCode-User-Agent-Library-Version",
}
DEVICE_HEADERS = ("VScode-SessionId", "VScode-MachineId", "Editor-Device-Id")


def identity_headers(
    settings: AccountSettings, ident: identity.Identity | None = None
) -> dict[str, str]:
    """The editor identity headers of an account: its settings over the identity in force."""
    values, _ = (ident or identity.current()).for_account(settings)
    return {header: getattr(values, f) for f, header in IDENTITY_HEADERS.items()}


def identity_sources(
    settings: AccountSettings, ident: identity.Identity | None = None
) -> dict[str, identity.Source]:
    """Header -> where its value comes from (``default`` / ``[identity]`` / ``account``)."""
    _, sources = (ident or identity.current()).for_account(settings)
    return {header: sources[f] for f, header in IDENTITY_HEADERS.items()}


def device_headers(account_id: str, ident: identity.Identity | None = None) -> dict[str, str]:
    """The account's stable device ids (none when ``[identity] device_ids = false``)."""
    ident = ident or identity.current()
    if not ident.device_ids:
        return {}
    ids = identity.device_ids(ident.install, account_id)
    return dict(zip(DEVICE_HEADERS, (ids.session_id, ids.machine_id, ids.device_id), strict=True))


def _as_uuid(request_id: str) -> str:
    """Our 32-hex request ids in the UUID form the editor sends (others unchanged)."""
    if _HEX32.fullmatch(request_id):
        return identity.uuid_form(request_id)
    return request_id


_HEX32 = re.compile(r"[0-9a-f]{32}")


def _interaction_id(request_id: str) -> str:
    # one interaction per request unless the caller names one (info.extra); derived,
    # so the builder stays a pure function of its input
    digest = hashlib.blake2b(request_id.encode(), digest_size=16, person=b"interaction")
    return identity.uuid_v4_of(digest.hexdigest())


def _account_headers(
    settings: AccountSettings, account_id: str | None, ident: identity.Identity
) -> dict[str, str]:
    """Identity plus device headers of an account, built once per identity and settings."""
    key = ("copilot", account_id, *(getattr(settings, f) for f in identity.ACCOUNT_FIELDS))
    h: dict[str, str] | None = ident.memo.get(key)
    if h is None:
        h = identity_headers(settings, ident)
        if account_id is not None:
            h.update(device_headers(account_id, ident))
        if len(ident.memo) < 1024:  # bounded: settings come from the config
            ident.memo[key] = h
    return h


def build_headers(
    settings: AccountSettings,
    token: str,
    info: RequestInfo,
    *,
    account_id: str | None = None,
    ident: identity.Identity | None = None,
) -> dict[str, str]:
    """All headers of one Copilot API request (pure given ``ident``; table-tested).

    ``account_id`` adds the account's device ids. ``X-Interaction-Type``
    follows the intent unless ``info.extra`` names one; ``info.extra`` wins
    over everything.
    """
    ident = ident or identity.current()
    h = {"Authorization": f"Bearer {token}", **_account_headers(settings, account_id, ident)}
    if info.intent:
        h["OpenAI-Intent"] = info.intent
    h["X-Interaction-Type"] = h["OpenAI-Intent"]
    h["X-Interaction-Id"] = _interaction_id(info.request_id)
    h["X-Request-Id"] = _as_uuid(info.request_id)
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
        return build_headers(account.settings, token, info, account_id=account.id)

    def model_headers(self, account: Account, token: str) -> dict[str, str]:
        h = {"Authorization": f"Bearer {token}", **identity_headers(account.settings)}
        h.update(device_headers(account.id))
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

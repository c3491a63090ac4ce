"""The provider interface: one small object per upstream kind.

A provider knows how to authenticate an account, which headers to send, where
its API lives and how to adjust a request body. The server and the pool only
talk to this interface, so adding a provider touches neither.

Providers do no I/O: a short-lived credential is minted by the
:class:`~tokn_router.accounts.refresher.Refresher`, which sends the provider's
:meth:`Provider.refresh_request` and hands the answer to
:meth:`Provider.parse_refresh`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tokn_router.accounts.schema import Account, GithubConfig

AuthKind = Literal["github-oauth", "api-key"]


@dataclass(frozen=True, slots=True)
class Credential:
    """A usable upstream credential, as returned by a refresher."""

    token: str
    expires_at: int | None = None  # unix seconds
    refresh_in: int | None = None  # seconds, as the upstream suggests
    api_base: str | None = None  # e.g. Copilot's endpoints.api


@dataclass(frozen=True, slots=True)
class RefreshRequest:
    """The ``GET`` that mints a credential."""

    url: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a header builder needs to know about one upstream request."""

    request_id: str
    initiator: Literal["user", "agent"] = "user"
    vision: bool = False
    intent: str | None = None  # overrides the account's openai_intent
    extra: dict[str, str] = field(default_factory=dict)


class Provider:
    id: str = ""
    display_name: str = ""
    auth_kind: AuthKind = "api-key"
    default_base_url: str = ""
    # Upstream model ids served when the upstream /models cannot be read.
    static_models: tuple[str, ...] = ()

    def needs_refresh(self) -> bool:
        """True when the account's credential is short-lived and must be minted."""
        return False

    def base_url(self, account: Account, credential: Credential | None) -> str:
        if account.base_url:
            return account.base_url.rstrip("/")
        return self.default_base_url

    def token(self, account: Account) -> str | None:
        """The bearer token stored in the config for this account, if any."""
        return account.api_key

    def headers(self, account: Account, token: str, info: RequestInfo) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **info.extra}

    def model_headers(self, account: Account, token: str) -> dict[str, str]:
        """Headers for ``GET /models``."""
        return {"Authorization": f"Bearer {token}"}

    def refresh_request(self, account: Account, github: GithubConfig) -> RefreshRequest:
        """The request that mints a fresh credential (short-lived providers only)."""
        raise NotImplementedError

    def parse_refresh(self, status: int, body: bytes) -> Credential:
        """The credential in the answer to :meth:`refresh_request`, or AuthError/UpstreamError."""
        raise NotImplementedError

    def transform_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Adjust a chat-completions body before it goes upstream."""
        return body

    def matches_host(self, host: str) -> bool:
        """Whether this provider's API lives at ``host`` (used by proxy switch mode)."""
        return False

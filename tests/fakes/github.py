"""Fake GitHub: the web device flow and the API calls tokn-router makes for Copilot.

Paths (``github_url`` = ``github_api_url`` = the server's URL):

* web: ``POST /login/device/code``, ``POST /login/oauth/access_token`` (device flow; JSON,
  form or query params; form-encoded answers unless ``Accept: application/json``)
* API: ``GET /user``, ``GET /copilot_internal/v2/token`` (the Copilot token exchange),
  ``GET /copilot_internal/user`` (plan and premium quota); ``token <gh>`` or ``Bearer <gh>``

Credentials: any token starting ``gho_``/``ghu_``/``ghp_``/``github_pat_`` is valid and
names its login (``gho_alice`` -> ``alice``), unless listed in ``bad_github_tokens``.

Knobs:

* ``script_device_flow(*outcomes)``: queued answers of the token poll (``DeviceOutcome`` or
  its kind); then ``device_flow.default_outcome``. ``device_flow.interval`` / ``.login`` /
  ``.polls``.
* ``github_account(token)`` -> ``GithubAccount``: ``exchange_failure``,
  ``notification_id``, ``expires_in``/``refresh_in`` of minted tokens, ``api_url``
  (``endpoints.api``), ``models`` (allowed ids), ``premium_remaining``/
  ``premium_entitlement``, ``premium_reset``, ``rate_windows`` (see ``copilot.py``),
  ``sku``. ``exchange_count(token)`` counts exchanges.
* Copilot tokens minted here are what the Copilot API (``copilot.py``) accepts:
  ``issue_copilot_token``, ``add_copilot_token``, ``revoke_copilot_tokens``.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import (
    Handler,
    HttpError,
    RecordedRequest,
    Reply,
    Script,
    ScriptedServer,
    json_reply,
    text_reply,
)

GITHUB_TOKEN_PREFIXES = ("gho_", "ghu_", "ghp_", "github_pat_")
DEFAULT_LOGIN = "octocat"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_DOCS = "https://docs.github.com/rest"
_DEVICE_ERRORS_URI = (
    "https://docs.github.com/developers/apps/authorizing-oauth-apps#error-codes-for-the-device-flow"
)


@dataclass
class DeviceOutcome:
    """One answer of ``POST /login/oauth/access_token``.

    ``kind``: ``authorization_pending`` | ``slow_down`` | ``expired_token`` |
    ``access_denied`` | ``incorrect_device_code`` | ``success``.
    ``interval``: the ``interval`` field sent with ``slow_down`` (default: interval + 5).
    ``login``: for ``success``, the user; the issued token is ``gho_<login>``.
    """

    kind: str
    interval: int | None = None
    login: str | None = None


@dataclass
class DeviceFlow:
    interval: int = 0
    expires_in: int = 900
    login: str = DEFAULT_LOGIN
    default_outcome: str = "success"
    outcomes: list[DeviceOutcome] = field(default_factory=list)
    issued_codes: dict[str, str] = field(default_factory=dict)  # device_code -> user_code
    polls: int = 0


@dataclass
class GithubAccount:
    """Per-GitHub-token behaviour. Created on first use for any ``gho_/ghu_/ghp_/github_pat_`` token."""

    token: str
    login: str
    exchange_failure: int | None = None  # 401 | 403 | 404 | other status
    notification_id: str = "no_copilot_access"
    expires_in: int = 1800
    refresh_in: int = 1500
    api_url: str | None = None  # endpoints.api (default: this fake's URL)
    sku: str = "monthly_subscriber_quota"
    models: list[str] | None = None  # restrict the models this account may use
    premium_remaining: float = 240.0
    premium_entitlement: float = 300.0
    premium_reset: str = "2026-12-01T00:00:00Z"  # rst of the quota snapshot header
    # window -> "ent=…&rem=…&rst=…", sent as x-usage-ratelimit-<window> on answers
    rate_windows: dict[str, str] = field(default_factory=dict)
    exchanges: int = 0


@dataclass
class CopilotToken:
    token: str
    github_token: str
    login: str
    expires_at: int
    revoked: bool = False


def login_from_token(token: str) -> str:
    for prefix in GITHUB_TOKEN_PREFIXES:
        if token.startswith(prefix):
            return token[len(prefix) :] or DEFAULT_LOGIN
    return DEFAULT_LOGIN


class GithubFake(ScriptedServer):
    """GitHub web + API, and the Copilot tokens its exchange mints."""

    @property
    def github_url(self) -> str:
        return self.url

    @property
    def github_api_url(self) -> str:
        return self.url

    # -- hooks -------------------------------------------------------------------------
    def _reset_state(self) -> None:
        super()._reset_state()
        self.github_accounts: dict[str, GithubAccount] = {}
        self.bad_github_tokens: set[str] = set()
        self.copilot_tokens: dict[str, CopilotToken] = {}
        self.device_flow = DeviceFlow()

    def _add_routes(self, routes: dict[tuple[str, str], Handler]) -> None:
        super()._add_routes(routes)
        routes[("POST", "/login/device/code")] = self._device_code
        routes[("POST", "/login/oauth/access_token")] = self._access_token
        routes[("GET", "/user")] = self._user
        routes[("GET", "/copilot_internal/v2/token")] = self._copilot_token
        routes[("GET", "/copilot_internal/user")] = self._copilot_user

    def _service_for(self, path: str) -> str:
        if path.startswith("/login/"):
            return "github-web"
        if path == "/user" or path.startswith("/copilot_internal/"):
            return "github-api"
        return super()._service_for(path)

    def _identify(self, rec: RecordedRequest) -> None:
        super()._identify(rec)
        if not rec.token:
            return
        ct = self.copilot_tokens.get(rec.token)
        if ct is not None:
            rec.github_token, rec.login = ct.github_token, ct.login
        elif rec.token.startswith(GITHUB_TOKEN_PREFIXES):
            rec.github_token = rec.token
            acc = self.github_accounts.get(rec.token)
            rec.login = acc.login if acc else login_from_token(rec.token)

    # -- knobs -------------------------------------------------------------------------
    def script_device_flow(self, *outcomes: str | DeviceOutcome) -> None:
        """Queue answers for ``/login/oauth/access_token`` polls (then ``default_outcome``)."""
        with self._cond:
            for o in outcomes:
                self.device_flow.outcomes.append(
                    o if isinstance(o, DeviceOutcome) else DeviceOutcome(o)
                )

    def github_account(self, token: str, login: str | None = None) -> GithubAccount:
        """Get or create the per-token settings of a GitHub token (login defaults from token)."""
        with self._cond:
            acc = self.github_accounts.get(token)
            if acc is None:
                acc = GithubAccount(token=token, login=login or login_from_token(token))
                self.github_accounts[token] = acc
            elif login is not None:
                acc.login = login
            return acc

    def exchange_count(self, github_token: str) -> int:
        with self._cond:
            acc = self.github_accounts.get(github_token)
            return acc.exchanges if acc else 0

    def issue_copilot_token(
        self, github_token: str, *, expires_in: int | None = None
    ) -> tuple[str, int]:
        """Mint a valid Copilot token for ``github_token`` without an HTTP exchange."""
        acc = self.github_account(github_token)
        with self._cond:
            return self._mint(acc, expires_in if expires_in is not None else acc.expires_in)

    def add_copilot_token(
        self, token: str, github_token: str = "gho_octocat", expires_at: int | None = None
    ) -> None:
        """Accept a hand-written Copilot token (e.g. one a test writes into config)."""
        acc = self.github_account(github_token)
        with self._cond:
            self.copilot_tokens[token] = CopilotToken(
                token, github_token, acc.login, expires_at or int(time.time()) + 3600
            )

    def revoke_copilot_tokens(self, github_token: str | None = None) -> int:
        """Make issued Copilot tokens (of one GitHub token, or all) answer 401 from now on."""
        n = 0
        with self._cond:
            for ct in self.copilot_tokens.values():
                if github_token is None or ct.github_token == github_token:
                    ct.revoked = True
                    n += 1
        return n

    # -- web: device flow --------------------------------------------------------------
    @staticmethod
    def _params(rec: RecordedRequest) -> dict[str, str]:
        params = dict(rec.query)
        if rec.form:
            params.update(rec.form)
        if isinstance(rec.json, dict):
            params.update({k: str(v) for k, v in rec.json.items()})
        return params

    @staticmethod
    def _oauth_reply(rec: RecordedRequest, obj: dict[str, Any]) -> Reply:
        if "application/json" in rec.headers.get("accept", ""):
            return json_reply(200, obj)
        return text_reply(
            200,
            urllib.parse.urlencode({k: str(v) for k, v in obj.items()}),
            "application/x-www-form-urlencoded; charset=utf-8",
        )

    def _device_code(self, rec: RecordedRequest, script: Script | None) -> Reply:
        params = self._params(rec)
        if not params.get("client_id"):
            return self._oauth_reply(
                rec, {"error": "unauthorized_client", "error_description": "no client_id"}
            )
        with self._cond:
            n = len(self.device_flow.issued_codes) + 1
            device_code = hashlib.sha1(f"device-{n}".encode()).hexdigest()
            user_code = f"FAKE-{n:04d}"
            self.device_flow.issued_codes[device_code] = user_code
            flow = self.device_flow
            obj = {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": self.url + "/login/device",
                "expires_in": flow.expires_in,
                "interval": flow.interval,
            }
        return self._oauth_reply(rec, obj)

    def _access_token(self, rec: RecordedRequest, script: Script | None) -> Reply:
        params = self._params(rec)
        if params.get("grant_type") != DEVICE_GRANT:
            return self._oauth_reply(
                rec,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "bad grant_type",
                    "error_uri": _DEVICE_ERRORS_URI,
                },
            )
        with self._cond:
            flow = self.device_flow
            flow.polls += 1
            if params.get("device_code") not in flow.issued_codes:
                outcome = DeviceOutcome("incorrect_device_code")
            elif flow.outcomes:
                outcome = flow.outcomes.pop(0)
            else:
                outcome = DeviceOutcome(flow.default_outcome)
            if outcome.kind == "success":
                login = outcome.login or flow.login
                token = f"gho_{login}"
                acc = self.github_accounts.get(token)
                if acc is None:
                    self.github_accounts[token] = GithubAccount(token=token, login=login)
                return self._oauth_reply(
                    rec,
                    {
                        "access_token": token,
                        "token_type": "bearer",
                        "scope": params.get("scope", "read:user"),
                    },
                )
            descriptions = {
                "authorization_pending": "The authorization request is still pending.",
                "slow_down": "Too many requests have been made in the same timeframe.",
                "expired_token": "The device code has expired.",
                "access_denied": "The authorization request was denied.",
                "incorrect_device_code": "The device_code provided is not valid.",
            }
            obj: dict[str, Any] = {
                "error": outcome.kind,
                "error_description": descriptions.get(outcome.kind, outcome.kind),
                "error_uri": _DEVICE_ERRORS_URI,
            }
            if outcome.kind == "slow_down":
                new = outcome.interval if outcome.interval is not None else flow.interval + 5
                flow.interval = new
                obj["interval"] = new
        return self._oauth_reply(rec, obj)

    # -- API ---------------------------------------------------------------------------
    def _github_auth(self, rec: RecordedRequest) -> GithubAccount:
        tok = rec.token
        if not tok or not tok.startswith(GITHUB_TOKEN_PREFIXES) or tok in self.bad_github_tokens:
            raise HttpError(
                json_reply(
                    401,
                    {"message": "Bad credentials", "documentation_url": _DOCS, "status": "401"},
                )
            )
        return self.github_account(tok)

    def _user(self, rec: RecordedRequest, script: Script | None) -> Reply:
        acc = self._github_auth(rec)
        uid = int(hashlib.sha1(acc.login.encode()).hexdigest()[:6], 16)
        return json_reply(
            200,
            {
                "login": acc.login,
                "id": uid,
                "node_id": f"U_fake{uid}",
                "type": "User",
                "name": acc.login.title(),
                "email": None,
                "html_url": f"https://github.com/{acc.login}",
            },
        )

    def _mint(self, acc: GithubAccount, expires_in: int) -> tuple[str, int]:
        n = next(self._ids)
        exp = int(time.time()) + expires_in
        fields = (
            f"tid=fake{n}-{acc.login};exp={exp};sku={acc.sku};"
            "proxy-ep=proxy.individual.githubcopilot.com;st=dotcom;chat=1;8kp=1"
        )
        token = f"{fields}:{hashlib.sha256(fields.encode()).hexdigest()[:32]}"
        self.copilot_tokens[token] = CopilotToken(token, acc.token, acc.login, exp)
        return token, exp

    def _copilot_token(self, rec: RecordedRequest, script: Script | None) -> Reply:
        acc = self._github_auth(rec)
        with self._cond:
            acc.exchanges += 1
            failure = acc.exchange_failure
            if failure is None:
                token, exp = self._mint(acc, acc.expires_in)
        if failure == 401:
            return json_reply(401, {"message": "Bad credentials", "documentation_url": _DOCS})
        if failure == 403:
            return json_reply(
                403,
                {
                    "message": "You do not have access to GitHub Copilot.",
                    "error_details": {
                        "message": "You do not have access to GitHub Copilot.",
                        "notification_id": acc.notification_id,
                        "title": "No Copilot access",
                        "url": "https://github.com/features/copilot",
                    },
                    "can_signup_for_limited": False,
                },
            )
        if failure == 404:
            return json_reply(404, {"message": "Not Found", "documentation_url": _DOCS})
        if failure is not None:
            return json_reply(failure, {"message": f"fake failure {failure}"})
        api = acc.api_url or self.url
        return json_reply(
            200,
            {
                "token": token,
                "expires_at": exp,
                "refresh_in": acc.refresh_in,
                "sku": acc.sku,
                "individual": True,
                "chat_enabled": True,
                "code_quote_enabled": True,
                "public_suggestions": "disabled",
                "telemetry": "disabled",
                "tracking_id": hashlib.md5(acc.login.encode()).hexdigest(),
                "limited_user_quotas": None,
                "endpoints": {
                    "api": api,
                    "origin-tracker": api,
                    "proxy": api,
                    "telemetry": api,
                },
            },
        )

    def _copilot_user(self, rec: RecordedRequest, script: Script | None) -> Reply:
        acc = self._github_auth(rec)

        def snap(qid: str, ent: float, rem: float, unlimited: bool) -> dict[str, Any]:
            pct = 100.0 if unlimited or not ent else round(rem / ent * 100, 1)
            return {
                "entitlement": ent,
                "overage_count": 0,
                "overage_permitted": False,
                "percent_remaining": pct,
                "quota_id": qid,
                "quota_remaining": rem,
                "remaining": int(rem),
                "unlimited": unlimited,
            }

        return json_reply(
            200,
            {
                "access_type_sku": acc.sku,
                "analytics_tracking_id": hashlib.md5(acc.login.encode()).hexdigest(),
                "assigned_date": "2025-01-01T00:00:00Z",
                "can_signup_for_limited": False,
                "chat_enabled": True,
                "copilot_plan": "individual",
                "organization_login_list": [],
                "organization_list": [],
                "quota_reset_date": "2026-12-01",
                "quota_reset_date_utc": "2026-12-01T00:00:00.000Z",
                "quota_snapshots": {
                    "chat": snap("chat", 0, 0, True),
                    "completions": snap("completions", 0, 0, True),
                    "premium_interactions": snap(
                        "premium_interactions",
                        acc.premium_entitlement,
                        acc.premium_remaining,
                        False,
                    ),
                },
            },
        )

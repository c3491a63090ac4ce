"""One fake upstream speaking GitHub (web + API), the Copilot API and Z.ai.

Everything lives on one server (one base URL); paths decide the service:

* GitHub web: ``POST /login/device/code``, ``POST /login/oauth/access_token``
* GitHub API: ``GET /user``, ``GET /copilot_internal/v2/token``, ``GET /copilot_internal/user``
* Copilot API (``endpoints.api`` = this server's URL): ``GET /models``,
  ``POST /chat/completions``, ``POST /embeddings``, ``POST /responses``, ``POST /v1/messages``
* Z.ai: ``GET /models`` and ``POST /chat/completions`` under ``/api/coding/paas/v4`` and
  ``/api/paas/v4``.

See ``tests/fakes/README.md`` for the deterministic reply rules and the scripting API.
The app is a raw ASGI callable driven by hypercorn on trio in a background thread;
all state shared with the test thread is guarded by one ``threading.Condition``.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import fnmatch
import hashlib
import itertools
import json as jsonlib
import re
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from tests.fakes.server import BackgroundServer

_MISSING: Any = object()

ZAI_PREFIXES = ("/api/coding/paas/v4", "/api/paas/v4")
GITHUB_TOKEN_PREFIXES = ("gho_", "ghu_", "ghp_", "github_pat_")
ZAI_KEY_PREFIX = "zai-"
DEFAULT_LOGIN = "octocat"

# --------------------------------------------------------------------------------------
# static data
# --------------------------------------------------------------------------------------


def _chat_model(
    mid: str,
    name: str,
    vendor: str,
    family: str,
    endpoints: list[str],
    *,
    version: str | None = None,
    limits: tuple[int, int, int] = (128000, 16384, 128000),
    vision: bool = True,
    thinking: bool = False,
    premium: bool = False,
    multiplier: float = 0.0,
    chat_default: bool = False,
) -> dict[str, Any]:
    supports: dict[str, Any] = {
        "streaming": True,
        "tool_calls": True,
        "parallel_tool_calls": True,
        "vision": vision,
        "structured_outputs": True,
    }
    if thinking:
        supports["reasoning_effort"] = ["low", "medium", "high"]
    return {
        "id": mid,
        "name": name,
        "vendor": vendor,
        "version": version or mid,
        "object": "model",
        "preview": False,
        "model_picker_enabled": True,
        "model_picker_category": "versatile",
        "is_chat_default": chat_default,
        "is_chat_fallback": chat_default,
        "policy": {"state": "enabled", "terms": "Enable access to the latest models."},
        "billing": {
            "is_premium": premium,
            "multiplier": multiplier,
            "restricted_to": ["free", "pro", "pro_plus", "business", "enterprise"],
        },
        "supported_endpoints": endpoints,
        "capabilities": {
            "type": "chat",
            "family": family,
            "tokenizer": "o200k_base",
            "object": "model_capabilities",
            "limits": {
                "max_prompt_tokens": limits[0],
                "max_output_tokens": limits[1],
                "max_context_window_tokens": limits[2],
                "vision": {
                    "max_prompt_image_size": 3145728,
                    "max_prompt_images": 1,
                    "supported_media_types": ["image/jpeg", "image/png", "image/webp"],
                },
            },
            "supports": supports,
        },
    }


DEFAULT_COPILOT_MODELS: list[dict[str, Any]] = [
    _chat_model(
        "gpt-4.1",
        "GPT-4.1",
        "Azure OpenAI",
        "gpt-4.1",
        ["/chat/completions", "/responses"],
        version="gpt-4.1-2025-04-14",
        limits=(128000, 16384, 128000),
        chat_default=False,
    ),
    _chat_model(
        "gpt-5-mini",
        "GPT-5 mini",
        "Azure OpenAI",
        "gpt-5-mini",
        ["/chat/completions", "/responses"],
        limits=(127988, 64000, 264000),
        thinking=True,
        chat_default=True,
    ),
    _chat_model(
        "claude-sonnet-4.5",
        "Claude Sonnet 4.5",
        "Anthropic",
        "claude-sonnet-4.5",
        ["/chat/completions", "/v1/messages"],
        limits=(128000, 16000, 144000),
        premium=True,
        multiplier=1.0,
    ),
    {
        "id": "text-embedding-3-small",
        "name": "Embedding V3 small",
        "vendor": "Azure OpenAI",
        "version": "text-embedding-3-small",
        "object": "model",
        "preview": False,
        "model_picker_enabled": False,
        "is_chat_default": False,
        "is_chat_fallback": False,
        "supported_endpoints": ["/embeddings"],
        "capabilities": {
            "type": "embeddings",
            "family": "text-embedding-3-small",
            "tokenizer": "cl100k_base",
            "object": "model_capabilities",
            "limits": {"max_inputs": 512},
            "supports": {"dimensions": True},
        },
    },
]
REASONING_MODELS = {"gpt-5-mini"}
DEFAULT_ZAI_MODELS = ["glm-4.5-air", "glm-4.6", "glm-4.7", "glm-5.1"]

_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER_RESULTS = [{"prompt_index": 0, "content_filter_results": CONTENT_FILTER}]


def http_date(seconds_from_now: float) -> str:
    """An HTTP-date (RFC 7231) ``seconds_from_now`` in the future, e.g. for Retry-After."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


# --------------------------------------------------------------------------------------
# public state objects
# --------------------------------------------------------------------------------------


@dataclass
class Script:
    """One canned behaviour for the next matching request(s). See ``FakeUpstream.script``."""

    path: str
    method: str | None = None
    token: str | None = None
    times: int | None = 1
    # canned response (used when ``status`` is set)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = _MISSING
    text: str | None = None
    html: str | None = None
    body: bytes | None = None
    # behaviour of the real handler
    delay: float = 0.0
    hang: bool = False
    reply: str | None = None
    chunks: int | list[str] | None = None
    chunk_delay: float = 0.0
    drop_after: int | None = None
    hang_after: int | None = None
    usage: dict[str, Any] | None = None
    used: int = 0

    def matches(self, rec: RecordedRequest) -> bool:
        if self.method is not None and self.method.upper() != rec.method:
            return False
        if "*" in self.path or "?" in self.path:
            if not fnmatch.fnmatchcase(rec.path, self.path):
                return False
        elif self.path != rec.path:
            return False
        return self.token is None or self.token in (rec.token, rec.github_token, rec.login)


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
    exchanges: int = 0


@dataclass
class CopilotToken:
    token: str
    github_token: str
    login: str
    expires_at: int
    revoked: bool = False


@dataclass
class RecordedRequest:
    """One request the fake received (headers are lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    query_string: str
    headers: dict[str, str]
    body: bytes
    json: Any
    form: dict[str, str] | None
    service: str  # github-web | github-api | copilot | zai | unknown
    token: str | None = None  # raw credential from Authorization
    github_token: str | None = None  # the gho_ behind a Copilot token
    login: str | None = None
    time: float = 0.0
    status: int | None = None
    scripted: bool = False
    streamed: bool = False
    completed: bool = False
    disconnected: bool = False
    dropped: bool = False
    usage: dict[str, Any] | None = None  # usage the fake reported

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


# --------------------------------------------------------------------------------------
# replies
# --------------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Stream:
    """SSE events; ``True`` marks a content delta (counted by drop_after/hang_after)."""

    events: list[tuple[bytes, bool]]
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200


def _dumps(obj: Any) -> str:
    return jsonlib.dumps(obj, separators=(",", ":"))


def _json_reply(status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()) -> _Reply:
    return _Reply(
        status,
        _dumps(obj).encode(),
        [("content-type", "application/json; charset=utf-8"), *headers],
    )


def _text_reply(status: int, text: str, ctype: str = "text/plain; charset=utf-8") -> _Reply:
    return _Reply(status, text.encode(), [("content-type", ctype)])


def _sse(obj: Any, event: str | None = None) -> bytes:
    data = obj if isinstance(obj, str) else _dumps(obj)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


def _openai_error(
    status: int, message: str, code: str, etype: str = "invalid_request_error"
) -> _Reply:
    return _json_reply(status, {"error": {"message": message, "code": code, "type": etype}})


# --------------------------------------------------------------------------------------
# helpers for deterministic content
# --------------------------------------------------------------------------------------


def message_text(content: Any) -> str:
    """Text of an OpenAI/Anthropic/Responses message content (str or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") == "tool_result":
                    out.append(message_text(part.get("content")))
        return "".join(out)
    return str(content)


def split_words(text: str) -> list[str]:
    """Stream pieces: one per word, trailing whitespace kept (``"".join == text``)."""
    lead = re.match(r"\s*", text)
    pieces = re.findall(r"\S+\s*", text)
    if lead and lead.group(0) and pieces:
        pieces[0] = lead.group(0) + pieces[0]
    return pieces or [text]


def _count_words(text: str) -> int:
    return len(text.split())


def _schema_args(schema: dict[str, Any] | None, text: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    keys = schema.get("required") or list(props)
    out: dict[str, Any] = {}
    for key in keys:
        ptype = (props.get(key) or {}).get("type", "string")
        if isinstance(ptype, list):
            ptype = next((t for t in ptype if t != "null"), "string")
        out[key] = {
            "string": text,
            "integer": 1,
            "number": 1,
            "boolean": True,
            "array": [],
            "object": {},
        }.get(ptype)
    return out


@dataclass
class _ToolCall:
    call_id: str
    name: str
    arguments: str


@dataclass
class _Plan:
    """What a generation replies: text deltas or one tool call, and usage."""

    deltas: list[str]
    tool: _ToolCall | None
    reasoning: str
    prompt_tokens: int
    usage_override: dict[str, Any] | None

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def usage_numbers(self, reasoning_tokens: int) -> dict[str, int]:
        completion = (len(self.deltas) if self.tool is None else 5) + reasoning_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": 2,
            "completion_tokens": completion,
            "reasoning_tokens": reasoning_tokens,
        }


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------------------


class FakeUpstream:
    """Fake GitHub + Copilot + Z.ai server. Use as a context manager or ``start()``/``stop()``."""

    def __init__(self, *, tls_cert: Any | None = None, name: str = "fake-upstream") -> None:
        self._cond = threading.Condition()
        self._server = BackgroundServer(self, tls_cert=tls_cert, name=name)
        self._ids = itertools.count(1)
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    github_url = url
    github_api_url = url
    copilot_url = url

    @property
    def zai_url(self) -> str:
        """Z.ai coding-plan base URL (``.../api/coding/paas/v4``)."""
        return self.url + ZAI_PREFIXES[0]

    @property
    def zai_general_url(self) -> str:
        return self.url + ZAI_PREFIXES[1]

    # -- state -------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget scripts, records, accounts, tokens; restore default models and flow."""
        with self._cond:
            self._records: list[RecordedRequest] = []
            self._scripts: list[Script] = []
            self.github_accounts: dict[str, GithubAccount] = {}
            self.bad_github_tokens: set[str] = set()
            self.copilot_tokens: dict[str, CopilotToken] = {}
            self.copilot_models: list[dict[str, Any]] = copy.deepcopy(DEFAULT_COPILOT_MODELS)
            self.zai_models: list[str] = list(DEFAULT_ZAI_MODELS)
            self.zai_keys: set[str] = set()
            self.bad_zai_keys: set[str] = set()
            self.device_flow = DeviceFlow()
            self.disconnects = 0
            self.drops = 0
            self._cond.notify_all()

    # -- scripting ---------------------------------------------------------------------
    def script(
        self,
        path: str,
        *,
        status: int | None = None,
        json: Any = _MISSING,
        text: str | None = None,
        html: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        token: str | None = None,
        times: int | None = 1,
        delay: float = 0.0,
        hang: bool = False,
        reply: str | None = None,
        chunks: int | list[str] | None = None,
        chunk_delay: float = 0.0,
        drop_after: int | None = None,
        hang_after: int | None = None,
        usage: dict[str, Any] | None = None,
    ) -> Script:
        """Queue a behaviour for the next ``times`` requests to ``path`` (None = forever).

        ``path`` is the request path (``/chat/completions``, ``/api/coding/paas/v4/models``;
        ``*`` globs allowed). ``token`` restricts to requests whose credential, underlying
        GitHub token, or login equals it. With ``status`` the canned response is sent
        instead of the real handler (body from ``json``/``text``/``html``/``body``);
        otherwise the real handler runs with the given stream/reply modifiers.
        Scripts are consumed first-in first-out among those that match.
        """
        s = Script(
            path=path,
            method=method,
            token=token,
            times=times,
            status=status,
            headers=dict(headers or {}),
            json=json,
            text=text,
            html=html,
            body=body,
            delay=delay,
            hang=hang,
            reply=reply,
            chunks=chunks,
            chunk_delay=chunk_delay,
            drop_after=drop_after,
            hang_after=hang_after,
            usage=usage,
        )
        with self._cond:
            self._scripts.append(s)
        return s

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
                acc = GithubAccount(token=token, login=login or _login_from_token(token))
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

    # -- inspection --------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._records)

    def requests_to(
        self, path: str, method: str | None = None, *, service: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests whose path equals ``path`` (or ends with it when it starts with '*')."""
        out = []
        for r in self.requests:
            ok = fnmatch.fnmatchcase(r.path, path) if "*" in path else r.path == path
            if (
                ok
                and (method is None or r.method == method.upper())
                and (service is None or r.service == service)
            ):
                out.append(r)
        return out

    def last(self, path: str | None = None) -> RecordedRequest:
        reqs = self.requests_to(path) if path else self.requests
        if not reqs:
            raise AssertionError(f"no request recorded for {path or 'any path'}")
        return reqs[-1]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Block until ``predicate()`` is truthy (re-checked on every fake state change)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s")
                self._cond.wait(min(left, 0.05))

    def wait_for_requests(
        self, path: str, count: int = 1, timeout: float = 10.0
    ) -> list[RecordedRequest]:
        return self.wait_for(
            lambda: (r := self.requests_to(path)) and len(r) >= count and r, timeout
        )

    def wait_disconnect(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` clients in total have disconnected mid-response."""
        self.wait_for(lambda: self.disconnects >= count, timeout)

    # -- config helpers ----------------------------------------------------------------
    def copilot_account(
        self, account_id: str = "copilot-1", github_token: str = "gho_octocat", **extra: Any
    ) -> dict[str, Any]:
        """An ``[[accounts]]`` table for a Copilot account talking to this fake."""
        acc = {
            "id": account_id,
            "provider": "github-copilot",
            "refresh_token": github_token,
            "refresh_url": self.url + "/copilot_internal/v2/token",
        }
        acc.update(extra)
        return acc

    def zai_account(
        self,
        account_id: str = "zai-1",
        api_key: str = "zai-key-1",
        provider: str = "zai-coding-plan",
        **extra: Any,
    ) -> dict[str, Any]:
        """An ``[[accounts]]`` table for a Z.ai account talking to this fake."""
        acc = {"id": account_id, "provider": provider, "api_key": api_key, "base_url": self.zai_url}
        acc.update(extra)
        return acc

    # ----------------------------------------------------------------------------------
    # ASGI
    # ----------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        rec = self._record(scope, body)
        with self._cond:
            script = self._take_script(rec)
        conn = _Conn(self, rec, receive, send)
        try:
            await self._serve(conn, rec, script)
        finally:
            with self._cond:
                self._cond.notify_all()

    async def _serve(self, conn: _Conn, rec: RecordedRequest, script: Script | None) -> None:
        if script is not None:
            rec.scripted = True
            if script.hang:
                await conn.wait_disconnect(None)
                return
            if script.delay and await conn.wait_disconnect(script.delay):
                return
            if script.status is not None:
                await conn.reply(_canned(script))
                return
        try:
            reply = self._dispatch(rec, script)
        except _HttpError as e:
            reply = e.reply
        if isinstance(reply, _Stream):
            await conn.stream(reply, script)
        else:
            if script is not None and script.hang_after is not None:
                await conn.wait_disconnect(None)
                return
            await conn.reply(reply)

    def _record(self, scope: dict[str, Any], body: bytes) -> RecordedRequest:
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            key = k.decode("latin-1").lower()
            val = v.decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        qs = scope.get("query_string", b"").decode("latin-1")
        query = dict(urllib.parse.parse_qsl(qs, keep_blank_values=True))
        parsed: Any = None
        form: dict[str, str] | None = None
        ctype = headers.get("content-type", "")
        if body:
            if "x-www-form-urlencoded" in ctype:
                form = dict(
                    urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
                )
            else:
                try:
                    parsed = jsonlib.loads(body)
                except ValueError:
                    parsed = None
        path = scope["path"]
        rec = RecordedRequest(
            method=scope["method"].upper(),
            path=path,
            query=query,
            query_string=qs,
            headers=headers,
            body=body,
            json=parsed,
            form=form,
            service=_service_for(path),
            time=time.time(),
        )
        auth = headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() in ("bearer", "token") and cred.strip():
            rec.token = cred.strip()
        elif rec.service == "zai" and headers.get("x-api-key"):
            rec.token = headers["x-api-key"]
        with self._cond:
            if rec.token:
                ct = self.copilot_tokens.get(rec.token)
                if ct is not None:
                    rec.github_token, rec.login = ct.github_token, ct.login
                elif rec.token.startswith(GITHUB_TOKEN_PREFIXES):
                    rec.github_token = rec.token
                    acc = self.github_accounts.get(rec.token)
                    rec.login = acc.login if acc else _login_from_token(rec.token)
            self._records.append(rec)
            self._cond.notify_all()
        return rec

    def _take_script(self, rec: RecordedRequest) -> Script | None:
        for s in self._scripts:
            if s.matches(rec):
                s.used += 1
                if s.times is not None and s.used >= s.times:
                    self._scripts.remove(s)
                return s
        return None

    def _dispatch(self, rec: RecordedRequest, script: Script | None) -> _Reply | _Stream:
        p, m = rec.path, rec.method
        for prefix in ZAI_PREFIXES:
            if p.startswith(prefix + "/"):
                sub = p[len(prefix) :]
                if sub == "/models" and m == "GET":
                    return self._zai_models(rec)
                if sub == "/chat/completions" and m == "POST":
                    return self._zai_chat(rec, script)
                return _json_reply(404, {"error": {"code": "404", "message": "Not Found"}})
        routes: dict[tuple[str, str], Callable[..., _Reply | _Stream]] = {
            ("POST", "/login/device/code"): self._device_code,
            ("POST", "/login/oauth/access_token"): self._access_token,
            ("GET", "/user"): self._user,
            ("GET", "/copilot_internal/v2/token"): self._copilot_token,
            ("GET", "/copilot_internal/user"): self._copilot_user,
            ("GET", "/models"): self._models,
            ("POST", "/chat/completions"): self._chat,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/embeddings"): self._embeddings,
            ("POST", "/responses"): self._responses,
            ("POST", "/v1/messages"): self._messages,
        }
        if p == "/echo" or p.startswith("/echo/"):
            return self._echo(rec)
        handler = routes.get((m, p))
        if handler is None:
            if any(path == p for (_, path) in routes):
                return _json_reply(405, {"message": "Method Not Allowed"})
            return _json_reply(
                404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
            )
        return handler(rec, script)

    @staticmethod
    def _echo(rec: RecordedRequest) -> _Reply:
        """Any method on ``/echo[/...]``: the request as JSON (for plain-HTTPS-host tests)."""
        return _json_reply(
            200,
            {
                "method": rec.method,
                "path": rec.path,
                "query": rec.query,
                "headers": rec.headers,
                "body": rec.body.decode("utf-8", "replace"),
            },
        )

    # ----------------------------------------------------------------------------------
    # GitHub web: device flow
    # ----------------------------------------------------------------------------------
    @staticmethod
    def _params(rec: RecordedRequest) -> dict[str, str]:
        params = dict(rec.query)
        if rec.form:
            params.update(rec.form)
        if isinstance(rec.json, dict):
            params.update({k: str(v) for k, v in rec.json.items()})
        return params

    @staticmethod
    def _oauth_reply(rec: RecordedRequest, obj: dict[str, Any]) -> _Reply:
        if "application/json" in rec.headers.get("accept", ""):
            return _json_reply(200, obj)
        return _text_reply(
            200,
            urllib.parse.urlencode({k: str(v) for k, v in obj.items()}),
            "application/x-www-form-urlencoded; charset=utf-8",
        )

    def _device_code(self, rec: RecordedRequest, script: Script | None) -> _Reply:
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

    def _access_token(self, rec: RecordedRequest, script: Script | None) -> _Reply:
        params = self._params(rec)
        uri = "https://docs.github.com/developers/apps/authorizing-oauth-apps#error-codes-for-the-device-flow"
        if params.get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code":
            return self._oauth_reply(
                rec,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "bad grant_type",
                    "error_uri": uri,
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
                "error_uri": uri,
            }
            if outcome.kind == "slow_down":
                new = outcome.interval if outcome.interval is not None else flow.interval + 5
                flow.interval = new
                obj["interval"] = new
        return self._oauth_reply(rec, obj)

    # ----------------------------------------------------------------------------------
    # GitHub API
    # ----------------------------------------------------------------------------------
    def _github_auth(self, rec: RecordedRequest) -> GithubAccount:
        tok = rec.token
        if not tok or not tok.startswith(GITHUB_TOKEN_PREFIXES) or tok in self.bad_github_tokens:
            raise _HttpError(
                _json_reply(
                    401,
                    {
                        "message": "Bad credentials",
                        "documentation_url": "https://docs.github.com/rest",
                        "status": "401",
                    },
                )
            )
        return self.github_account(tok)

    def _user(self, rec: RecordedRequest, script: Script | None) -> _Reply:
        acc = self._github_auth(rec)
        uid = int(hashlib.sha1(acc.login.encode()).hexdigest()[:6], 16)
        return _json_reply(
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

    def _copilot_token(self, rec: RecordedRequest, script: Script | None) -> _Reply:
        acc = self._github_auth(rec)
        with self._cond:
            acc.exchanges += 1
            failure = acc.exchange_failure
            if failure is None:
                token, exp = self._mint(acc, acc.expires_in)
        if failure == 401:
            return _json_reply(
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"},
            )
        if failure == 403:
            return _json_reply(
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
            return _json_reply(
                404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}
            )
        if failure is not None:
            return _json_reply(failure, {"message": f"fake failure {failure}"})
        api = acc.api_url or self.url
        return _json_reply(
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

    def _copilot_user(self, rec: RecordedRequest, script: Script | None) -> _Reply:
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

        return _json_reply(
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

    # ----------------------------------------------------------------------------------
    # Copilot API
    # ----------------------------------------------------------------------------------
    def _copilot_auth(self, rec: RecordedRequest) -> CopilotToken:
        with self._cond:
            ct = self.copilot_tokens.get(rec.token or "")
            if ct is None or ct.revoked or time.time() >= ct.expires_at:
                raise _HttpError(_text_reply(401, "unauthorized: token expired\n"))
            return ct

    def _visible_models(self, ct: CopilotToken) -> list[dict[str, Any]]:
        with self._cond:
            acc = self.github_accounts.get(ct.github_token)
            allowed = acc.models if acc else None
            return [
                copy.deepcopy(m)
                for m in self.copilot_models
                if allowed is None or m["id"] in allowed
            ]

    def _copilot_model(
        self, rec: RecordedRequest, ct: CopilotToken, endpoint: str
    ) -> dict[str, Any]:
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None:
            raise _HttpError(_openai_error(400, "Invalid JSON body", "invalid_request_body"))
        name = body.get("model")
        model = next((m for m in self._visible_models(ct) if m["id"] == name), None)
        if model is None:
            raise _HttpError(
                _json_reply(
                    400,
                    {
                        "error": {
                            "message": "The requested model is not supported.",
                            "code": "model_not_supported",
                            "param": "model",
                            "type": "invalid_request_error",
                        }
                    },
                )
            )
        if endpoint not in model.get("supported_endpoints", ["/chat/completions"]):
            raise _HttpError(
                _openai_error(
                    400,
                    f'model "{name}" is not accessible via the {endpoint} endpoint',
                    "unsupported_api_for_model",
                )
            )
        return model

    def _copilot_headers(self, ct: CopilotToken) -> list[tuple[str, str]]:
        with self._cond:
            acc = self.github_accounts.get(ct.github_token)
            rem = acc.premium_remaining if acc else 240.0
            ent = acc.premium_entitlement if acc else 300.0
        pct = round(rem / ent * 100, 1) if ent else 100.0
        quota = urllib.parse.urlencode(
            {
                "ent": int(ent),
                "ov": "0.0",
                "ovPerm": "false",
                "rem": pct,
                "rst": "2026-12-01T00:00:00Z",
            }
        )
        return [
            ("x-request-id", f"fake-{next(self._ids)}"),
            ("x-github-request-id", f"FAKE:{next(self._ids)}"),
            ("x-quota-snapshot-premium_interactions", quota),
        ]

    def _models(self, rec: RecordedRequest, script: Script | None) -> _Reply:
        ct = self._copilot_auth(rec)
        return _json_reply(
            200, {"data": self._visible_models(ct), "object": "list"}, self._copilot_headers(ct)
        )

    def _plan(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: Any,
        script: Script | None,
        *,
        tool_style: str = "openai",
    ) -> _Plan:
        # like real models, a trailing system message (aider's reminder, Claude
        # Code's agent list) does not change whose turn it is
        turns = [m for m in messages if m.get("role") not in ("system", "developer")]
        last = turns[-1] if turns else {}
        user_text = next(
            (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        prompt_tokens = 10 + sum(_count_words(message_text(m.get("content"))) for m in messages)
        last_role = last.get("role")
        last_is_tool_result = (
            last_role == "tool"
            or (
                isinstance(last.get("content"), list)
                and last["content"]
                and all(
                    isinstance(p, dict) and p.get("type") in ("tool_result", "function_call_output")
                    for p in last["content"]
                )
            )
            or last.get("type") == "function_call_output"
        )
        tool: _ToolCall | None = None
        if tools and last_role == "user" and not last_is_tool_result and tool_choice != "none":
            chosen = tools[0]
            wanted = None
            if isinstance(tool_choice, dict):
                wanted = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
            for t in tools:
                if _tool_name(t) == wanted:
                    chosen = t
            schema = _tool_schema(chosen)
            tool = _ToolCall(
                call_id=f"call_fake_{next(self._ids)}",
                name=_tool_name(chosen) or "tool",
                arguments=jsonlib.dumps(_schema_args(schema, user_text)),
            )
        if script is not None and script.reply is not None:
            text = script.reply
        elif last_is_tool_result:
            if last.get("type") == "function_call_output":
                text = "Tool result: " + str(last.get("output", ""))
            else:
                text = "Tool result: " + message_text(last.get("content"))
        else:
            text = "Echo: " + user_text
        if script is not None and isinstance(script.chunks, list):
            deltas = list(script.chunks)
        elif script is not None and isinstance(script.chunks, int):
            n = script.chunks
            deltas = [f"chunk{i}" + (" " if i < n - 1 else "") for i in range(n)]
        else:
            deltas = split_words(text)
        return _Plan(
            deltas=deltas,
            tool=tool,
            reasoning="",
            prompt_tokens=prompt_tokens,
            usage_override=script.usage if script is not None else None,
        )

    @staticmethod
    def _chat_usage(plan: _Plan, reasoning_tokens: int) -> dict[str, Any]:
        n = plan.usage_numbers(reasoning_tokens)
        usage = {
            "completion_tokens": n["completion_tokens"],
            "completion_tokens_details": {
                "accepted_prediction_tokens": 0,
                "audio_tokens": 0,
                "reasoning_tokens": n["reasoning_tokens"],
                "rejected_prediction_tokens": 0,
            },
            "prompt_tokens": n["prompt_tokens"],
            "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": n["cached_tokens"]},
            "total_tokens": n["prompt_tokens"] + n["completion_tokens"],
        }
        if plan.usage_override:
            usage = _deep_merge(usage, plan.usage_override)
        return usage

    def _chat(self, rec: RecordedRequest, script: Script | None) -> _Reply | _Stream:
        ct = self._copilot_auth(rec)
        model = self._copilot_model(rec, ct, "/chat/completions")
        body = rec.json
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HttpError(_openai_error(400, "messages is required", "invalid_request_body"))
        plan = self._plan(messages, body.get("tools"), body.get("tool_choice"), script)
        reasoning_tokens = 2 if model["id"] in REASONING_MODELS else 0
        usage = self._chat_usage(plan, reasoning_tokens)
        rec.usage = usage
        return _openai_chat_reply(
            f"chatcmpl-fake{next(self._ids)}",
            body,
            plan,
            usage,
            self._copilot_headers(ct),
            copilot=True,
        )

    def _embeddings(self, rec: RecordedRequest, script: Script | None) -> _Reply:
        ct = self._copilot_auth(rec)
        body = rec.json if isinstance(rec.json, dict) else {}
        name = body.get("model")
        model = next((m for m in self._visible_models(ct) if m["id"] == name), None)
        if model is None or model["capabilities"]["type"] != "embeddings":
            return _openai_error(
                400, "The requested model is not supported.", "model_not_supported"
            )
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            return _openai_error(400, "input is required", "invalid_request_body")
        dims = int(body.get("dimensions") or 8)
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else jsonlib.dumps(item)
            tokens += max(1, _count_words(text))
            vec = embedding_for(text, dims)
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        rec.usage = usage
        return _json_reply(
            200,
            {"object": "list", "data": data, "model": name, "usage": usage},
            self._copilot_headers(ct),
        )

    # -- Responses API -----------------------------------------------------------------
    def _responses(self, rec: RecordedRequest, script: Script | None) -> _Reply | _Stream:
        ct = self._copilot_auth(rec)
        model = self._copilot_model(rec, ct, "/responses")
        body = rec.json
        raw = body.get("input")
        items: list[dict[str, Any]]
        if isinstance(raw, str):
            items = [{"role": "user", "content": raw}]
        elif isinstance(raw, list):
            items = [i for i in raw if isinstance(i, dict)]
        else:
            raise _HttpError(_openai_error(400, "input is required", "invalid_request_body"))
        messages = [i if "role" in i else {**i, "role": None} for i in items]
        if body.get("instructions"):
            messages.insert(0, {"role": "system", "content": body["instructions"]})
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        plan = self._plan(messages, tools or None, body.get("tool_choice"), script)
        reasoning_tokens = 2 if model["id"] in REASONING_MODELS else 0
        n = plan.usage_numbers(reasoning_tokens)
        usage: dict[str, Any] = {
            "input_tokens": n["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": n["cached_tokens"]},
            "output_tokens": n["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": n["reasoning_tokens"]},
            "total_tokens": n["prompt_tokens"] + n["completion_tokens"],
        }
        if plan.usage_override:
            usage = _deep_merge(usage, plan.usage_override)
        rec.usage = usage
        rid = f"resp_fake{next(self._ids)}"
        item_id = f"msg_fake{next(self._ids)}"
        created = int(time.time())

        def response(status: str, output: list[dict[str, Any]], with_usage: bool) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "response",
                "created_at": created,
                "status": status,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"),
                "model": body["model"],
                "output": output,
                "parallel_tool_calls": True,
                "previous_response_id": body.get("previous_response_id"),
                "reasoning": {"effort": None, "summary": None},
                "store": False,
                "temperature": 1.0,
                "text": {"format": {"type": "text"}},
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [],
                "top_p": 1.0,
                "truncation": "disabled",
                "usage": usage if with_usage else None,
                "metadata": {},
            }

        if plan.tool is not None:
            fc_id = f"fc_fake{next(self._ids)}"
            final_item: dict[str, Any] = {
                "type": "function_call",
                "id": fc_id,
                "call_id": plan.tool.call_id,
                "name": plan.tool.name,
                "arguments": plan.tool.arguments,
                "status": "completed",
            }
        else:
            final_item = {
                "type": "message",
                "id": item_id,
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": plan.text, "annotations": []}],
            }
        headers = self._copilot_headers(ct)
        if not body.get("stream"):
            return _json_reply(200, response("completed", [final_item], True), headers)

        events: list[tuple[bytes, bool]] = []
        seq = itertools.count(0)

        def ev(etype: str, payload: dict[str, Any], delta: bool = False) -> None:
            events.append(
                (_sse({"type": etype, "sequence_number": next(seq), **payload}, etype), delta)
            )

        ev("response.created", {"response": response("in_progress", [], False)})
        ev("response.in_progress", {"response": response("in_progress", [], False)})
        if plan.tool is not None:
            added = {**final_item, "arguments": "", "status": "in_progress"}
            ev("response.output_item.added", {"output_index": 0, "item": added})
            args = plan.tool.arguments
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                ev(
                    "response.function_call_arguments.delta",
                    {"item_id": final_item["id"], "output_index": 0, "delta": part},
                    True,
                )
            ev(
                "response.function_call_arguments.done",
                {"item_id": final_item["id"], "output_index": 0, "arguments": args},
            )
        else:
            added = {**final_item, "status": "in_progress", "content": []}
            ev("response.output_item.added", {"output_index": 0, "item": added})
            part0 = {"type": "output_text", "text": "", "annotations": []}
            ev(
                "response.content_part.added",
                {"item_id": item_id, "output_index": 0, "content_index": 0, "part": part0},
            )
            for d in plan.deltas:
                ev(
                    "response.output_text.delta",
                    {
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": d,
                        "logprobs": [],
                    },
                    True,
                )
            ev(
                "response.output_text.done",
                {
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "text": plan.text,
                    "logprobs": [],
                },
            )
            ev(
                "response.content_part.done",
                {
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": final_item["content"][0],
                },
            )
        ev("response.output_item.done", {"output_index": 0, "item": final_item})
        ev("response.completed", {"response": response("completed", [final_item], True)})
        return _Stream(
            events, [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers]
        )

    # -- Anthropic Messages API --------------------------------------------------------
    def _messages(self, rec: RecordedRequest, script: Script | None) -> _Reply | _Stream:
        ct = self._copilot_auth(rec)
        self._copilot_model(rec, ct, "/v1/messages")
        body = rec.json
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HttpError(
                _json_reply(
                    400,
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": "messages: Field required",
                        },
                    },
                )
            )
        tools = body.get("tools") or None
        tool_choice = body.get("tool_choice")
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "none":
            tool_choice = "none"
        plan = self._plan(messages, tools, tool_choice, script)
        n = plan.usage_numbers(0)
        usage: dict[str, Any] = {
            "input_tokens": n["prompt_tokens"] - n["cached_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": n["cached_tokens"],
            "output_tokens": n["completion_tokens"],
        }
        if plan.usage_override:
            usage = _deep_merge(usage, plan.usage_override)
        rec.usage = usage
        mid = f"msg_fake{next(self._ids)}"
        model = body["model"]
        if plan.tool is not None:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_fake{next(self._ids)}",
                "name": plan.tool.name,
                "input": jsonlib.loads(plan.tool.arguments),
            }
            stop_reason = "tool_use"
        else:
            block = {"type": "text", "text": plan.text}
            stop_reason = "end_turn"
        message = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [block],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        headers = [("request-id", f"req_fake{next(self._ids)}"), *self._copilot_headers(ct)]
        if not body.get("stream"):
            return _json_reply(200, message, headers)
        events: list[tuple[bytes, bool]] = []

        def ev(etype: str, payload: dict[str, Any], delta: bool = False) -> None:
            events.append((_sse({"type": etype, **payload}, etype), delta))

        start_usage = {**usage, "output_tokens": 1}
        ev(
            "message_start",
            {"message": {**message, "content": [], "stop_reason": None, "usage": start_usage}},
        )
        if plan.tool is not None:
            ev("content_block_start", {"index": 0, "content_block": {**block, "input": {}}})
            ev("ping", {})
            args = plan.tool.arguments
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                ev(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "input_json_delta", "partial_json": part}},
                    True,
                )
        else:
            ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            ev("ping", {})
            for d in plan.deltas:
                ev(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "text_delta", "text": d}},
                    True,
                )
        ev("content_block_stop", {"index": 0})
        ev(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        ev("message_stop", {})
        return _Stream(
            events, [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers]
        )

    # ----------------------------------------------------------------------------------
    # Z.ai
    # ----------------------------------------------------------------------------------
    def _zai_auth(self, rec: RecordedRequest) -> str:
        key = rec.token or ""
        with self._cond:
            ok = (
                key.startswith(ZAI_KEY_PREFIX) or key in self.zai_keys
            ) and key not in self.bad_zai_keys
        if not ok:
            raise _HttpError(
                _json_reply(401, {"error": {"code": "1000", "message": "Authentication Failed"}})
            )
        return key

    def _zai_models(self, rec: RecordedRequest) -> _Reply:
        self._zai_auth(rec)
        with self._cond:
            models = list(self.zai_models)
        data = [
            {"id": m, "object": "model", "created": 1735689600, "owned_by": "z-ai"} for m in models
        ]
        return _json_reply(200, {"object": "list", "data": data})

    def _zai_chat(self, rec: RecordedRequest, script: Script | None) -> _Reply | _Stream:
        self._zai_auth(rec)
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None:
            return _json_reply(400, {"error": {"code": "1210", "message": "Invalid API parameter"}})
        with self._cond:
            known = body.get("model") in self.zai_models
        if not known:
            return _json_reply(
                400,
                {
                    "error": {
                        "code": "1211",
                        "message": "Unknown Model, please check the model code.",
                    }
                },
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _json_reply(400, {"error": {"code": "1214", "message": "messages is required"}})
        plan = self._plan(messages, body.get("tools"), body.get("tool_choice"), script)
        thinking = body.get("thinking")
        disabled = isinstance(thinking, dict) and thinking.get("type") == "disabled"
        if not disabled:
            user_text = next(
                (
                    message_text(m.get("content"))
                    for m in reversed(messages)
                    if m.get("role") == "user"
                ),
                "",
            )
            plan.reasoning = "Thinking about: " + user_text
        reasoning_tokens = len(split_words(plan.reasoning)) if plan.reasoning else 0
        usage = self._chat_usage(plan, reasoning_tokens)
        rec.usage = usage
        return _openai_chat_reply(
            f"chatcmpl-zai{next(self._ids)}", body, plan, usage, [], copilot=False
        )


class _HttpError(Exception):
    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _login_from_token(token: str) -> str:
    for prefix in GITHUB_TOKEN_PREFIXES:
        if token.startswith(prefix):
            return token[len(prefix) :] or DEFAULT_LOGIN
    return DEFAULT_LOGIN


def _service_for(path: str) -> str:
    if path.startswith(ZAI_PREFIXES):
        return "zai"
    if path.startswith("/login/"):
        return "github-web"
    if path == "/user" or path.startswith("/copilot_internal/"):
        return "github-api"
    if path in (
        "/models",
        "/chat/completions",
        "/v1/chat/completions",
        "/embeddings",
        "/responses",
        "/v1/messages",
    ):
        return "copilot"
    return "unknown"


def _tool_name(tool: dict[str, Any]) -> str | None:
    fn = tool.get("function")
    if isinstance(fn, dict):
        return fn.get("name")
    return tool.get("name")


def _tool_schema(tool: dict[str, Any]) -> dict[str, Any] | None:
    fn = tool.get("function")
    if isinstance(fn, dict):
        return fn.get("parameters")
    return tool.get("parameters") or tool.get("input_schema")


def embedding_for(text: str, dims: int = 8) -> list[float]:
    """The deterministic embedding the fake returns for ``text`` (values in [-1, 1))."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 128) / 128 for b in digest)
        counter += 1
    return out[:dims]


def _canned(script: Script) -> _Reply:
    assert script.status is not None
    headers = {k.lower(): v for k, v in script.headers.items()}
    if script.json is not _MISSING:
        body = _dumps(script.json).encode()
        headers.setdefault("content-type", "application/json; charset=utf-8")
    elif script.html is not None:
        body = script.html.encode()
        headers.setdefault("content-type", "text/html; charset=utf-8")
    elif script.text is not None:
        body = script.text.encode()
        headers.setdefault("content-type", "text/plain; charset=utf-8")
    else:
        body = script.body or b""
    return _Reply(script.status, body, list(headers.items()))


def _openai_chat_reply(
    cid: str,
    body: dict[str, Any],
    plan: _Plan,
    usage: dict[str, Any],
    headers: list[tuple[str, str]],
    *,
    copilot: bool,
) -> _Reply | _Stream:
    model = body["model"]
    created = int(time.time())
    finish = "tool_calls" if plan.tool is not None else "stop"
    extra_choice: dict[str, Any] = {"content_filter_results": CONTENT_FILTER} if copilot else {}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if plan.tool else plan.text}
        if plan.reasoning:
            message["reasoning_content"] = plan.reasoning
        if plan.tool is not None:
            message["tool_calls"] = [
                {
                    "id": plan.tool.call_id,
                    "type": "function",
                    "function": {"name": plan.tool.name, "arguments": plan.tool.arguments},
                }
            ]
        obj: dict[str, Any] = {
            "choices": [
                {
                    **extra_choice,
                    "finish_reason": finish,
                    "index": 0,
                    "logprobs": None,
                    "message": message,
                }
            ],
            "created": created,
            "id": cid,
            "model": model,
            "object": "chat.completion",
            "usage": usage,
        }
        if copilot:
            obj["prompt_filter_results"] = PROMPT_FILTER_RESULTS
            obj["system_fingerprint"] = "fp_fake"
        else:
            obj["request_id"] = cid
        return _json_reply(200, obj, headers)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events: list[tuple[bytes, bool]] = []

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None, usage_: Any = None
    ) -> dict[str, Any]:
        c: dict[str, Any] = {
            "choices": [
                {
                    **extra_choice,
                    "delta": delta,
                    "finish_reason": finish_reason,
                    "index": 0,
                    "logprobs": None,
                }
            ],
            "created": created,
            "id": cid,
            "model": model,
            "object": "chat.completion.chunk",
        }
        if copilot:
            c["system_fingerprint"] = "fp_fake"
            c["usage"] = usage_
        elif usage_ is not None:
            c["usage"] = usage_
        return c

    if copilot:
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": PROMPT_FILTER_RESULTS,
        }
        events.append((_sse(first), False))
    role_sent = False
    if plan.reasoning:
        for piece in split_words(plan.reasoning):
            d: dict[str, Any] = {"reasoning_content": piece}
            if not role_sent:
                d = {"role": "assistant", "content": "", **d}
                role_sent = True
            events.append((_sse(chunk(d)), True))
    if plan.tool is not None:
        tc0 = {
            "index": 0,
            "id": plan.tool.call_id,
            "type": "function",
            "function": {"name": plan.tool.name, "arguments": ""},
        }
        events.append(
            (_sse(chunk({"role": "assistant", "content": None, "tool_calls": [tc0]})), True)
        )
        args = plan.tool.arguments
        half = len(args) // 2
        for part in (args[:half], args[half:]):
            events.append(
                (_sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})), True)
            )
    else:
        for piece in plan.deltas:
            d = {"content": piece}
            if not role_sent:
                d = {"role": "assistant", **d}
                role_sent = True
            events.append((_sse(chunk(d)), True))
    if copilot:
        events.append((_sse(chunk({}, finish)), False))
        if include_usage:
            u = {
                "choices": [],
                "created": created,
                "id": cid,
                "model": model,
                "object": "chat.completion.chunk",
                "system_fingerprint": "fp_fake",
                "usage": usage,
            }
            events.append((_sse(u), False))
    else:
        # Z.ai: usage rides on the final chunk
        events.append((_sse(chunk({}, finish, usage)), False))
    events.append((b"data: [DONE]\n\n", False))
    return _Stream(
        events, [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers]
    )


class _Conn:
    """Sends one response, watching for the client going away."""

    def __init__(self, fake: FakeUpstream, rec: RecordedRequest, receive: Any, send: Any) -> None:
        self.fake = fake
        self.rec = rec
        self.receive = receive
        self.send = send
        self.finished = False

    def _mark(self, **flags: Any) -> None:
        with self.fake._cond:
            for k, v in flags.items():
                setattr(self.rec, k, v)
            if flags.get("disconnected"):
                self.fake.disconnects += 1
            if flags.get("dropped"):
                self.fake.drops += 1
            self.fake._cond.notify_all()

    async def _watch(self, cancel: trio.CancelScope) -> None:
        while True:
            msg = await self.receive()
            if msg["type"] == "http.disconnect":
                if not self.finished:
                    self._mark(disconnected=True)
                cancel.cancel()
                return

    async def wait_disconnect(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None = forever); True if the client disconnected meanwhile."""
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as n:
                n.start_soon(self._watch, cs)
                if seconds is None:
                    await trio.sleep_forever()
                await trio.sleep(seconds)
                n.cancel_scope.cancel()
        return self.rec.disconnected

    async def reply(self, r: _Reply) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in r.headers]
        headers.append((b"content-length", str(len(r.body)).encode()))
        # marked before the bytes go out, so a client that has read the whole
        # response can rely on the record being final
        self.finished = True
        self._mark(status=r.status, completed=True)
        await self.send({"type": "http.response.start", "status": r.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": r.body, "more_body": False})

    async def stream(self, s: _Stream, script: Script | None) -> None:
        drop_after = script.drop_after if script else None
        hang_after = script.hang_after if script else None
        delay = script.chunk_delay if script else 0.0
        self._mark(status=s.status, streamed=True)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in s.headers]
        dropped = False
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as n:
                n.start_soon(self._watch, cs)
                await self.send(
                    {"type": "http.response.start", "status": s.status, "headers": headers}
                )
                deltas = 0
                last = len(s.events) - 1
                for i, (data, is_delta) in enumerate(s.events):
                    if is_delta:
                        if drop_after is not None and deltas >= drop_after:
                            dropped = True
                            break
                        if hang_after is not None and deltas >= hang_after:
                            await trio.sleep_forever()
                        if delay and deltas:
                            await trio.sleep(delay)
                        deltas += 1
                    if i == last:
                        self.finished = True
                        self._mark(completed=True)
                    await self.send({"type": "http.response.body", "body": data, "more_body": True})
                if dropped:
                    # Returning without finishing the body makes hypercorn close the
                    # TCP connection: the client sees an incomplete chunked body.
                    self._mark(dropped=True)
                else:
                    self.finished = True
                    await self.send({"type": "http.response.body", "body": b"", "more_body": False})
                n.cancel_scope.cancel()

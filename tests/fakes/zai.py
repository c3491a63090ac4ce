"""Fake Z.ai: the OpenAI-compatible coding plan and general API.

Paths: ``GET {p}/models`` and ``POST {p}/chat/completions`` with ``p`` =
``/api/coding/paas/v4`` (``zai_url``) or ``/api/paas/v4`` (``zai_general_url``); any
other path under ``p`` answers Z.ai's 404. Auth: ``Bearer <key>`` (or ``x-api-key``).

Replies follow ``replies.py`` in the Z.ai flavour of Chat Completions: unless
``thinking: {"type": "disabled"}`` there is ``reasoning_content = "Thinking about: " +
<last user text>`` (streamed as ``delta.reasoning_content`` pieces before the content)
and ``reasoning_tokens`` = its word count; streams carry usage on the finish chunk.
Errors use Z.ai's codes: 1000 (auth), 1210 (bad body), 1211 (unknown model), 1214
(no messages).

Knobs: a key is valid iff it starts with ``zai-`` or is in ``zai_keys``, and is not in
``bad_zai_keys``; ``zai_models`` (editable; ``reset()`` restores ``DEFAULT_ZAI_MODELS``);
the ``script(...)`` knobs of ``server.py``. ``zai_account(...)`` returns the
``[[accounts]]`` table for this fake.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.replies import chat_completion, chat_usage, message_text, plan_reply, split_words
from tests.fakes.server import (
    Handler,
    HttpError,
    RecordedRequest,
    Reply,
    Script,
    ScriptedServer,
    Stream,
    json_reply,
)

ZAI_PREFIXES = ("/api/coding/paas/v4", "/api/paas/v4")
ZAI_KEY_PREFIX = "zai-"
DEFAULT_ZAI_MODELS = ["glm-4.5-air", "glm-4.6", "glm-4.7", "glm-5.1"]


def _zai_error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message}})


class ZaiFake(ScriptedServer):
    """Z.ai's two API prefixes."""

    @property
    def zai_url(self) -> str:
        """Z.ai coding-plan base URL (``.../api/coding/paas/v4``)."""
        return self.url + ZAI_PREFIXES[0]

    @property
    def zai_general_url(self) -> str:
        return self.url + ZAI_PREFIXES[1]

    # -- hooks -------------------------------------------------------------------------
    def _reset_state(self) -> None:
        super()._reset_state()
        self.zai_models: list[str] = list(DEFAULT_ZAI_MODELS)
        self.zai_keys: set[str] = set()
        self.bad_zai_keys: set[str] = set()

    def _mount(self, rec: RecordedRequest) -> Handler | None:
        p, m = rec.path, rec.method
        for prefix in ZAI_PREFIXES:
            if p.startswith(prefix + "/"):
                sub = p[len(prefix) :]
                if sub == "/models" and m == "GET":
                    return self._zai_models
                if sub == "/chat/completions" and m == "POST":
                    return self._zai_chat
                return lambda rec, script: _zai_error(404, "404", "Not Found")
        return super()._mount(rec)

    def _service_for(self, path: str) -> str:
        if path.startswith(ZAI_PREFIXES):
            return "zai"
        return super()._service_for(path)

    def _identify(self, rec: RecordedRequest) -> None:
        super()._identify(rec)
        if rec.token is None and rec.service == "zai" and rec.headers.get("x-api-key"):
            rec.token = rec.headers["x-api-key"]

    # -- config helper -----------------------------------------------------------------
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

    # -- handlers ----------------------------------------------------------------------
    def _zai_auth(self, rec: RecordedRequest) -> str:
        key = rec.token or ""
        with self._cond:
            ok = (
                key.startswith(ZAI_KEY_PREFIX) or key in self.zai_keys
            ) and key not in self.bad_zai_keys
        if not ok:
            raise HttpError(_zai_error(401, "1000", "Authentication Failed"))
        return key

    def _zai_models(self, rec: RecordedRequest, script: Script | None) -> Reply:
        self._zai_auth(rec)
        with self._cond:
            models = list(self.zai_models)
        data = [
            {"id": m, "object": "model", "created": 1735689600, "owned_by": "z-ai"} for m in models
        ]
        return json_reply(200, {"object": "list", "data": data})

    def _zai_chat(self, rec: RecordedRequest, script: Script | None) -> Reply | Stream:
        self._zai_auth(rec)
        body = rec.json if isinstance(rec.json, dict) else None
        if body is None:
            return _zai_error(400, "1210", "Invalid API parameter")
        with self._cond:
            known = body.get("model") in self.zai_models
        if not known:
            return _zai_error(400, "1211", "Unknown Model, please check the model code.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _zai_error(400, "1214", "messages is required")
        plan = plan_reply(
            messages, body.get("tools"), body.get("tool_choice"), script, self._next_id
        )
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
        usage = chat_usage(plan, reasoning_tokens)
        rec.usage = usage
        return chat_completion(
            f"chatcmpl-zai{self._next_id()}", body, plan, usage, [], copilot=False
        )

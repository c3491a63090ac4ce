"""Fake Copilot API: the model endpoints tokn-router relays to.

Paths (``copilot_url`` = the server's URL; ``endpoints.api`` of minted tokens):
``GET /models``, ``POST /chat/completions`` (also ``/v1/chat/completions``),
``POST /embeddings``, ``POST /responses``, ``POST /v1/messages``. Auth is
``Bearer <copilot token>`` minted by the GitHub exchange (``github.py``); unknown,
expired or revoked tokens get ``401 text/plain "unauthorized: token expired"``.

Replies follow ``replies.py`` (echo text, one tool call, usage numbers) in each API's
shape, whole or streamed:

* chat: Copilot's SSE (prelude chunk with ``prompt_filter_results``, one chunk per piece,
  finish chunk, usage-only chunk only with ``stream_options.include_usage``, ``[DONE]``);
* Responses: ``event:`` + ``data:`` pairs with ``sequence_number`` from 0;
* Messages: ``message_start`` ... ``message_stop``, usage as Anthropic counts it
  (``input_tokens = prompt - cached``, ``cache_read_input_tokens = cached``);
* embeddings: ``embedding_for(text, dims)``; base64 when asked.

The exact usage sent is stored in ``RecordedRequest.usage``. Answers carry
``x-request-id`` and ``x-quota-snapshot-premium_interactions`` (``rem`` = percent of
``GithubAccount.premium_remaining`` / ``premium_entitlement``, ``rst`` =
``premium_reset``); when the request carries ``X-GitHub-Api-Version`` (as Copilot
requires), also ``x-usage-ratelimit-<window>: <value>`` for each entry of
``GithubAccount.rate_windows`` (e.g. ``{"weekly": "ent=0&rem=35.5&rst=…"}``). Rate-limit
refusals (a weekly 429 with ``x-ratelimit-exceeded``, a bare 402 ``quota_exceeded``) are
canned ``script(...)`` answers with ``headers=`` and ``json=``.

Knobs: ``copilot_models`` (editable list; ``reset()`` restores ``DEFAULT_COPILOT_MODELS``;
a model's ``supported_endpoints`` gates the paths), ``GithubAccount.models`` (per-account
allow list), ``GithubAccount.premium_*`` (quota header), ``copilot_nano_aiu`` (below), and
every ``script(...)`` knob of ``server.py`` (canned status, delays, hangs, chunking, drops,
usage overrides).

``copilot_nano_aiu`` (None by default; ``reset()`` clears it): when set to N, successful
chat, Responses and Messages answers say what they cost, ``"copilot_usage":
{"total_nano_aiu": N}``, where Copilot puts it: at the top level of a whole answer; in a
chat stream, a chunk of its own (``choices: []``) before ``[DONE]``; on a Responses
stream's ``response.completed`` event and a Messages stream's ``message_delta``.
``copilot_account(...)`` returns the ``[[accounts]]`` table for this fake.

The module is long because the four API shapes are written out field by field, so that
tests meet the real wire shapes rather than a summary of them.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json as jsonlib
import struct
import time
import urllib.parse
from typing import Any

from tests.fakes.github import CopilotToken, GithubFake
from tests.fakes.replies import chat_completion, chat_usage, count_words, plan_reply
from tests.fakes.server import (
    SSE_HEADERS,
    Handler,
    HttpError,
    RecordedRequest,
    Reply,
    Script,
    Stream,
    deep_merge,
    dumps,
    json_reply,
    sse,
    text_reply,
)

COPILOT_PATHS = (
    "/models",
    "/chat/completions",
    "/v1/chat/completions",
    "/embeddings",
    "/responses",
    "/v1/messages",
)


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


def embedding_for(text: str, dims: int = 8) -> list[float]:
    """The deterministic embedding the fake returns for ``text`` (values in [-1, 1))."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        out.extend((b - 128) / 128 for b in digest)
        counter += 1
    return out[:dims]


def _openai_error(
    status: int, message: str, code: str, etype: str = "invalid_request_error"
) -> Reply:
    return json_reply(status, {"error": {"message": message, "code": code, "type": etype}})


class CopilotFake(GithubFake):
    """The Copilot API on top of the GitHub fake whose exchange mints its tokens."""

    @property
    def copilot_url(self) -> str:
        return self.url

    # -- hooks -------------------------------------------------------------------------
    def _reset_state(self) -> None:
        super()._reset_state()
        self.copilot_models: list[dict[str, Any]] = copy.deepcopy(DEFAULT_COPILOT_MODELS)
        self.copilot_nano_aiu: int | None = None

    def _add_routes(self, routes: dict[tuple[str, str], Handler]) -> None:
        super()._add_routes(routes)
        routes[("GET", "/models")] = self._models
        routes[("POST", "/chat/completions")] = self._costed(self._chat, None)
        routes[("POST", "/v1/chat/completions")] = self._costed(self._chat, None)
        routes[("POST", "/embeddings")] = self._embeddings
        routes[("POST", "/responses")] = self._costed(self._responses, "response.completed")
        routes[("POST", "/v1/messages")] = self._costed(self._messages, "message_delta")

    def _costed(self, handler: Handler, cost_event: str | None) -> Handler:
        """``handler`` plus ``copilot_usage`` when ``copilot_nano_aiu`` is set (see above)."""

        def costed(rec: RecordedRequest, script: Script | None) -> Reply | Stream:
            reply = handler(rec, script)
            nano = self.copilot_nano_aiu
            if nano is None or reply.status != 200:
                return reply
            cost = {"total_nano_aiu": nano}
            if isinstance(reply, Reply):
                obj = jsonlib.loads(reply.body)
                obj["copilot_usage"] = cost
                return Reply(reply.status, dumps(obj).encode(), reply.headers)
            events = list(reply.events)
            if cost_event is None:  # chat: a cost-only chunk before [DONE]
                chunk = {"choices": [], "object": "chat.completion.chunk", "copilot_usage": cost}
                events.insert(len(events) - 1, (sse(chunk), False))
            else:
                head = f"event: {cost_event}\n".encode()
                for i, (ev, delta) in enumerate(events):
                    if ev.startswith(head):
                        obj = jsonlib.loads(ev[len(head) :].removeprefix(b"data: "))
                        events[i] = (sse({**obj, "copilot_usage": cost}, cost_event), delta)
            return Stream(events, reply.headers, reply.status)

        return costed

    def _service_for(self, path: str) -> str:
        if path in COPILOT_PATHS:
            return "copilot"
        return super()._service_for(path)

    # -- config helper -----------------------------------------------------------------
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

    # -- handlers ----------------------------------------------------------------------
    def _copilot_auth(self, rec: RecordedRequest) -> CopilotToken:
        with self._cond:
            ct = self.copilot_tokens.get(rec.token or "")
            if ct is None or ct.revoked or time.time() >= ct.expires_at:
                raise HttpError(text_reply(401, "unauthorized: token expired\n"))
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
            raise HttpError(_openai_error(400, "Invalid JSON body", "invalid_request_body"))
        name = body.get("model")
        model = next((m for m in self._visible_models(ct) if m["id"] == name), None)
        if model is None:
            raise HttpError(
                json_reply(
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
            raise HttpError(
                _openai_error(
                    400,
                    f'model "{name}" is not accessible via the {endpoint} endpoint',
                    "unsupported_api_for_model",
                )
            )
        return model

    def _copilot_headers(
        self, ct: CopilotToken, rec: RecordedRequest | None = None
    ) -> list[tuple[str, str]]:
        with self._cond:
            acc = self.github_accounts.get(ct.github_token)
            rem = acc.premium_remaining if acc else 240.0
            ent = acc.premium_entitlement if acc else 300.0
            rst = acc.premium_reset if acc else "2026-12-01T00:00:00Z"
            windows = dict(acc.rate_windows) if acc else {}
        pct = round(rem / ent * 100, 1) if ent else 100.0
        quota = urllib.parse.urlencode(
            {
                "ent": int(ent),
                "ov": "0.0",
                "ovPerm": "false",
                "rem": pct,
                "rst": rst,
            }
        )
        out = [
            ("x-request-id", f"fake-{next(self._ids)}"),
            ("x-github-request-id", f"FAKE:{next(self._ids)}"),
            ("x-quota-snapshot-premium_interactions", quota),
        ]
        if rec is not None and rec.header("x-github-api-version"):
            out += [(f"x-usage-ratelimit-{name}", value) for name, value in windows.items()]
        return out

    def _models(self, rec: RecordedRequest, script: Script | None) -> Reply:
        ct = self._copilot_auth(rec)
        return json_reply(
            200, {"data": self._visible_models(ct), "object": "list"}, self._copilot_headers(ct)
        )

    def _chat(self, rec: RecordedRequest, script: Script | None) -> Reply | Stream:
        ct = self._copilot_auth(rec)
        model = self._copilot_model(rec, ct, "/chat/completions")
        body = rec.json
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(_openai_error(400, "messages is required", "invalid_request_body"))
        plan = plan_reply(
            messages, body.get("tools"), body.get("tool_choice"), script, self._next_id
        )
        reasoning_tokens = 2 if model["id"] in REASONING_MODELS else 0
        usage = chat_usage(plan, reasoning_tokens)
        rec.usage = usage
        return chat_completion(
            f"chatcmpl-fake{next(self._ids)}",
            body,
            plan,
            usage,
            self._copilot_headers(ct, rec),
            copilot=True,
        )

    def _embeddings(self, rec: RecordedRequest, script: Script | None) -> Reply:
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
            tokens += max(1, count_words(text))
            vec = embedding_for(text, dims)
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        rec.usage = usage
        return json_reply(
            200,
            {"object": "list", "data": data, "model": name, "usage": usage},
            self._copilot_headers(ct, rec),
        )

    # -- Responses API -----------------------------------------------------------------
    def _responses(self, rec: RecordedRequest, script: Script | None) -> Reply | Stream:
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
            raise HttpError(_openai_error(400, "input is required", "invalid_request_body"))
        messages = [i if "role" in i else {**i, "role": None} for i in items]
        if body.get("instructions"):
            messages.insert(0, {"role": "system", "content": body["instructions"]})
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
        plan = plan_reply(messages, tools or None, body.get("tool_choice"), script, self._next_id)
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
            usage = deep_merge(usage, plan.usage_override)
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
        headers = self._copilot_headers(ct, rec)
        if not body.get("stream"):
            return json_reply(200, response("completed", [final_item], True), headers)

        events: list[tuple[bytes, bool]] = []
        seq = itertools.count(0)

        def ev(etype: str, payload: dict[str, Any], delta: bool = False) -> None:
            events.append(
                (sse({"type": etype, "sequence_number": next(seq), **payload}, etype), delta)
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
        return Stream(events, [*SSE_HEADERS, *headers])

    # -- Anthropic Messages API --------------------------------------------------------
    def _messages(self, rec: RecordedRequest, script: Script | None) -> Reply | Stream:
        ct = self._copilot_auth(rec)
        self._copilot_model(rec, ct, "/v1/messages")
        body = rec.json
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(
                json_reply(
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
        plan = plan_reply(messages, tools, tool_choice, script, self._next_id)
        n = plan.usage_numbers(0)
        usage: dict[str, Any] = {
            "input_tokens": n["prompt_tokens"] - n["cached_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": n["cached_tokens"],
            "output_tokens": n["completion_tokens"],
        }
        if plan.usage_override:
            usage = deep_merge(usage, plan.usage_override)
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
        headers = [("request-id", f"req_fake{next(self._ids)}"), *self._copilot_headers(ct, rec)]
        if not body.get("stream"):
            return json_reply(200, message, headers)
        events: list[tuple[bytes, bool]] = []

        def ev(etype: str, payload: dict[str, Any], delta: bool = False) -> None:
            events.append((sse({"type": etype, **payload}, etype), delta))

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
        return Stream(events, [*SSE_HEADERS, *headers])

"""`/v1/messages` and `/v1/messages/count_tokens` against a real daemon (Claude Code's API).

Both modes run against the fake Copilot upstream: ``claude-sonnet-4.5`` lists
``/v1/messages`` in ``supported_endpoints`` (native: forwarded, SSE relayed byte
for byte), ``gpt-4.1`` does not (translated to ``/chat/completions`` and back).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.fakes import FakeUpstream
from tests.helpers import CACHED_LEDGER, CACHED_USAGE, cached_usage_of, ledger_rows, stop

NATIVE = "claude-sonnet-4.5"
TRANSLATED = "gpt-4.1"
MODES = [
    pytest.param(NATIVE, "/v1/messages", id="native"),
    pytest.param(TRANSLATED, "/chat/completions", id="translated"),
]
CLIENT_KEY = "sk-ant-client-secret-never-forwarded"

BASH_TOOL = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
        "required": ["command"],
    },
}


def client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=CLIENT_KEY, max_retries=0)


def one_account(fake: FakeUpstream, write_config, **extra: Any) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")], **extra})


def sse_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of an SSE body (comments skipped)."""
    out = []
    for block in raw.split("\n\n"):
        name, data = None, None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if data is not None:
            out.append((name, data))
    return out


def assert_client_key_not_forwarded(fake: FakeUpstream) -> None:
    for rec in fake.requests:
        assert CLIENT_KEY not in json.dumps(rec.headers)
        assert "x-api-key" not in rec.headers


# --------------------------------------------------------------------------- SDK, both modes


@pytest.mark.parametrize(("model", "upstream"), MODES)
def test_sdk_create_stream_tool_round_trip_and_count(
    fake: FakeUpstream, write_config, daemon, model: str, upstream: str
) -> None:
    one_account(fake, write_config)
    d = daemon()
    c = client(d.url)

    msg = c.messages.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": "hello there"}]
    )
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Echo: hello there"
    assert msg.stop_reason == "end_turn"
    sent = fake.last(upstream).usage
    prompt = sent.get("prompt_tokens", sent.get("input_tokens", 0) + 2)
    assert msg.usage.cache_read_input_tokens == 2
    assert msg.usage.input_tokens + msg.usage.cache_read_input_tokens == prompt
    assert fake.last(upstream).header("x-initiator") == "user"

    # streamed tool call, then its result sent back
    first = [{"role": "user", "content": "ls -la"}]
    with c.messages.stream(model=model, max_tokens=256, messages=first, tools=[BASH_TOOL]) as s:
        events = [e.type for e in s]
        call_msg = s.get_final_message()
    assert "content_block_stop" in events and events[-1] == "message_stop"
    assert call_msg.stop_reason == "tool_use"
    (tool_use,) = [b for b in call_msg.content if b.type == "tool_use"]
    assert tool_use.name == "Bash" and tool_use.input == {"command": "ls -la"}
    if upstream == "/chat/completions":
        # the chat tool-call id is the tool_use id (and comes back as tool_use_id)
        assert tool_use.id.startswith("call_fake_")

    follow = [
        *first,
        {"role": "assistant", "content": [b.model_dump() for b in call_msg.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_use.id,
                    "content": "file.txt",
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
    ]
    with c.messages.stream(model=model, max_tokens=256, messages=follow, tools=[BASH_TOOL]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Tool result: file.txt"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    rec = fake.last(upstream)
    assert rec.header("x-initiator") == "agent"  # a user turn made only of tool results
    if upstream == "/chat/completions":
        tool_msg = rec.json["messages"][-1]
        assert tool_msg == {"role": "tool", "tool_call_id": tool_use.id, "content": "file.txt"}
    else:
        assert rec.json["messages"][-1]["content"][0]["tool_use_id"] == tool_use.id

    count = c.messages.count_tokens(
        model=model, messages=[{"role": "user", "content": "hello there"}], tools=[BASH_TOOL]
    )
    assert 350 < count.input_tokens < 450  # tool prompt overhead + a few tokens
    assert len(fake.requests_to(upstream)) == 3  # count_tokens never went upstream
    assert_client_key_not_forwarded(fake)


@pytest.mark.parametrize(("model", "upstream"), MODES)
def test_claude_code_shaped_request(
    fake: FakeUpstream, write_config, daemon, model: str, upstream: str
) -> None:
    """What Claude Code sends (agents-wire.md), including its session-title request."""
    one_account(fake, write_config, model_aliases={"claude-3-5-haiku-latest": model})
    d = daemon()
    body = {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>agents</system-reminder>"},
                    {
                        "type": "text",
                        "text": "run pwd",
                        "cache_control": {"type": "ephemeral"},
                    },
                ],
            }
        ],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197;"},
            {
                "type": "text",
                "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "Main prompt.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [BASH_TOOL],
        "metadata": {"user_id": '{"device_id":"d"}'},
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "stream": True,
    }
    headers = {
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "accept": "application/json",  # even with stream: true
        "x-app": "cli",
    }
    r = httpx.post(d.url + "/v1/messages?beta=true", json=body, headers=headers, timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["request-id"]
    events = sse_events(r.text)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_stop" in names
    assert all(n == d["type"] for n, d in events)  # every event has its event: line
    tool_start = next(d for n, d in events if n == "content_block_start")
    assert tool_start["content_block"]["type"] == "tool_use"

    rec = fake.last(upstream)
    assert rec.token and rec.token.startswith("tid=")
    if upstream == "/v1/messages":
        # native: the body unchanged except the model id; intent headers set
        assert rec.json == {**body, "model": NATIVE}
        assert rec.header("anthropic-version") == "2023-06-01"
        assert rec.header("anthropic-beta") == headers["anthropic-beta"]
        assert rec.header("openai-intent") == "messages-proxy"
        assert rec.header("x-interaction-type") == "messages-proxy"
    else:
        chat = rec.json
        assert chat["messages"][0] == {
            "role": "system",
            "content": "You are a Claude agent, built on Anthropic's Claude Agent SDK."
            "\n\nMain prompt.",
        }
        assert chat["max_tokens"] == 16384  # clamped to the model's output limit
        params = chat["tools"][0]["function"]["parameters"]
        assert "$schema" not in params and params["required"] == ["command"]
        assert chat["stream_options"] == {"include_usage": True}
        assert rec.header("openai-intent") == "conversation-panel"
        assert rec.header("anthropic-beta") is None

    # the session-title request: haiku-class id via [model_aliases], tools: []
    title = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "Generate a title"}],
        "system": [{"type": "text", "text": "Generate a concise, sentence-case title"}],
        "tools": [],
        "thinking": {"type": "disabled"},
        "temperature": 1,
        "stream": True,
    }
    r = httpx.post(d.url + "/v1/messages?beta=true", json=title, headers=headers, timeout=30)
    assert r.status_code == 200
    text = "".join(d["delta"]["text"] for n, d in sse_events(r.text) if n == "content_block_delta")
    assert text == "Echo: Generate a title"
    rec = fake.last(upstream)
    assert rec.json["model"] == model
    assert "tools" not in rec.json  # an empty tool list is not forwarded
    assert_client_key_not_forwarded(fake)


# --------------------------------------------------------------------------- errors


def test_bad_input_gets_anthropic_errors_and_nothing_goes_upstream(
    fake: FakeUpstream, write_config, daemon
) -> None:
    one_account(fake, write_config)
    d = daemon()
    url = d.url + "/v1/messages"
    ok_msgs = [{"role": "user", "content": "hi"}]
    bad = [
        {"model": NATIVE, "messages": ok_msgs},  # no max_tokens
        {"model": NATIVE, "max_tokens": "100", "messages": ok_msgs},
        {"model": NATIVE, "max_tokens": 10, "messages": "hi"},
        {"model": NATIVE, "max_tokens": 10, "messages": []},
        {"model": 5, "max_tokens": 10, "messages": ok_msgs},
        {"model": NATIVE, "max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]},
        {
            "model": TRANSLATED,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "bogus", "text": "x"}]}],
        },
        {
            "model": NATIVE,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
        },
    ]
    for body in bad:
        r = httpx.post(url, json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        err = r.json()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert err["error"]["message"]
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # count_tokens validates the same way
    r = httpx.post(url + "/count_tokens", json={"model": NATIVE, "messages": "x"})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert not fake.requests_to("/v1/messages") and not fake.requests_to("/chat/completions")

    # unknown model: 404 naming the closest ids, also for count_tokens
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        r = httpx.post(
            d.url + path, json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": ok_msgs}
        )
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found_error"
        assert "claude-sonnet-4.5" in r.json()["error"]["message"]


@pytest.mark.parametrize(("model", "upstream"), MODES)
def test_upstream_errors_in_anthropic_shape(
    fake: FakeUpstream, write_config, daemon, model: str, upstream: str
) -> None:
    one_account(fake, write_config)
    d = daemon()
    c = client(d.url)
    msgs = [{"role": "user", "content": "hi"}]
    # an upstream 4xx is the request's fault: relayed, in the Anthropic shape
    if upstream == "/v1/messages":
        fake.script(
            upstream,
            status=400,
            json={"type": "error", "error": {"type": "invalid_request_error", "message": "bad!"}},
        )
    else:
        fake.script(upstream, status=400, json={"error": {"message": "bad!", "code": "x"}})
    with pytest.raises(anthropic.BadRequestError) as exc:
        c.messages.create(model=model, max_tokens=10, messages=msgs)
    assert exc.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad!"},
    }

    if upstream == "/chat/completions":
        # a tool call whose arguments are not JSON cannot become a tool_use block
        bad_call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "Bash", "arguments": '{"command": '},
        }
        fake.script(
            upstream,
            status=200,
            json={
                "id": "chatcmpl-1",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {"role": "assistant", "content": None, "tool_calls": [bad_call]},
                    }
                ],
            },
        )
        with pytest.raises(anthropic.APIStatusError) as exc2:
            c.messages.create(model=model, max_tokens=10, messages=msgs, tools=[BASH_TOOL])
        assert exc2.value.status_code == 502
        assert exc2.value.body["error"]["type"] == "api_error"
        assert "invalid JSON arguments" in exc2.value.body["error"]["message"]

    # every account failing: 503 overloaded_error with Retry-After
    fake.script(upstream, status=500, text="boom", times=None)
    r = httpx.post(d.url + "/v1/messages", json={"model": model, "max_tokens": 5, "messages": msgs})
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "overloaded_error"
    assert "boom" in err["error"]["message"]


@pytest.mark.parametrize(("model", "upstream"), MODES)
def test_failover_before_first_byte_and_mid_stream_drop(
    fake: FakeUpstream, write_config, daemon, env_home, model: str, upstream: str
) -> None:
    write_config(
        {
            "accounts": [
                fake.copilot_account("alice", "gho_alice"),
                fake.copilot_account("bob", "gho_bob"),
            ]
        }
    )
    d = daemon()
    c = client(d.url)
    msgs = [{"role": "user", "content": "fail over please"}]
    fake.script(upstream, status=429, headers={"Retry-After": "60"}, json={"error": {}})
    with c.messages.stream(model=model, max_tokens=64, messages=msgs) as s:
        assert "".join(s.text_stream) == "Echo: fail over please"
    tried = fake.requests_to(upstream)
    assert [r.status for r in tried] == [429, 200]
    assert tried[0].login != tried[1].login

    # after the first byte there is no failover: the stream ends with an error event
    fake.script(upstream, chunks=4, drop_after=2)
    with httpx.stream(
        "POST",
        d.url + "/v1/messages",
        json={"model": model, "max_tokens": 64, "messages": msgs, "stream": True},
        timeout=30,
    ) as r:
        raw = r.read().decode()
    events = sse_events(raw)
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["type"] == "api_error"
    assert "message_stop" not in [n for n, _ in events]
    c.close()  # an idle keep-alive connection would hold the graceful shutdown
    stop(d)

    rows = ledger_rows(env_home.state_dir)
    assert [r["status"] for r in rows] == [200, 200]
    ok, broken = rows
    assert [a["status"] for a in json.loads(ok["ctx_json"])["attempts"]] == [429, 200]
    assert broken["request_error"]


def test_failover_from_a_native_account_to_a_translating_one(
    fake: FakeUpstream, write_config, daemon
) -> None:
    """Native vs translated is decided per account: one failover can cross modes."""
    native_glm = {**fake.copilot_models[2], "id": "glm-4.7", "name": "GLM via Copilot"}
    fake.copilot_models.append(native_glm)  # lists /v1/messages; reset by the fixture
    write_config(
        {"accounts": [fake.copilot_account("alice", "gho_alice"), fake.zai_account("zai")]}
    )
    d = daemon()
    fake.script("/v1/messages", status=503, text="down")
    msg = client(d.url).messages.create(
        model="glm-4.7", max_tokens=64, messages=[{"role": "user", "content": "cross over"}]
    )
    assert [r.status for r in fake.requests_to("/v1/messages")] == [503]
    (chat,) = fake.requests_to("*/chat/completions")
    assert chat.service == "zai" and chat.json["messages"][-1]["content"] == "cross over"
    # Z.ai reasoning comes back as a thinking block, the answer as text
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Thinking about: cross over"
    assert msg.content[1].text == "Echo: cross over"


# --------------------------------------------------------------------------- ledger


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
def test_ledger_rows_and_model_ids(fake: FakeUpstream, write_config, daemon, env_home) -> None:
    one_account(fake, write_config, model_aliases={"haiku": TRANSLATED})
    d = daemon()
    c = client(d.url)
    msgs = [{"role": "user", "content": "meter this"}]
    # Anthropic-style id normalised to the upstream's; native, streamed
    with c.messages.stream(model="claude-sonnet-4-5-20250929", max_tokens=64, messages=msgs) as s:
        s.until_done()
    native_usage = fake.last("/v1/messages").usage
    assert fake.last("/v1/messages").json["model"] == NATIVE
    # alias → translated, not streamed
    c.messages.create(model="haiku", max_tokens=64, messages=msgs)
    chat_usage = fake.last("/chat/completions").usage
    assert fake.last("/chat/completions").json["model"] == TRANSLATED
    c.messages.count_tokens(model="haiku", messages=msgs)  # no ledger row
    c.close()
    stop(d)

    native, translated = ledger_rows(env_home.state_dir)
    for row in (native, translated):
        assert row["endpoint"] == "/v1/messages" and row["status"] == 200
        assert row["account_id"] == "alice" and row["provider_id"] == "github-copilot"
    assert native["model"] == "claude-sonnet-4-5-20250929"
    assert json.loads(native["ctx_json"])["upstream_model"] == NATIVE
    assert json.loads(native["params_json"])["stream"] is True
    u = json.loads(native["usage_json"])
    assert u["input"] == native_usage["input_tokens"] + native_usage["cache_read_input_tokens"]
    assert u["cache_read"] == native_usage["cache_read_input_tokens"]
    assert u["output"] == native_usage["output_tokens"]

    assert translated["model"] == "haiku"
    u = json.loads(translated["usage_json"])
    assert u["input"] == chat_usage["prompt_tokens"]
    assert u["output"] == chat_usage["completion_tokens"]
    assert u["cache_read"] == chat_usage["prompt_tokens_details"]["cached_tokens"]


def test_prompt_cache_reads_and_writes_count_as_input(
    fake: FakeUpstream, write_config, daemon, env_home
) -> None:
    one_account(fake, write_config)
    d = daemon()
    fake.script("/v1/messages", usage=CACHED_USAGE, times=None)
    c = client(d.url)
    msgs = [{"role": "user", "content": "cache me"}]
    c.messages.create(model=NATIVE, max_tokens=64, messages=msgs)
    with c.messages.stream(model=NATIVE, max_tokens=64, messages=msgs) as s:
        s.until_done()
    c.close()
    stop(d)
    rows = ledger_rows(env_home.state_dir)
    assert [r["status"] for r in rows] == [200, 200]
    assert [cached_usage_of(r) for r in rows] == [CACHED_LEDGER, CACHED_LEDGER]

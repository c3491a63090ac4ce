"""The fakes speak the wire shapes the product relies on (fast; 127.0.0.1 only)."""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import struct
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import (
    Daemon,
    DeviceOutcome,
    FakeUpstream,
    HttpProxy,
    Socks5Proxy,
    embedding_for,
    http_date,
)
from tests.fakes.process import CLI

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JSON = {"accept": "application/json"}


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=10, trust_env=False) as c:
        yield c


def copilot_headers(fake: FakeUpstream, gho: str = "gho_octocat") -> dict[str, str]:
    token, _ = fake.issue_copilot_token(gho)
    return {"authorization": f"Bearer {token}"}


def sse_data(lines: list[str]) -> list[Any]:
    out: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def chat_body(text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}], **extra}


# --------------------------------------------------------------------------------------
# GitHub web + API
# --------------------------------------------------------------------------------------


def test_device_flow_json_and_form(fake: FakeUpstream, client: httpx.Client) -> None:
    r = client.post(
        "/login/device/code", json={"client_id": "Iv1.x", "scope": "read:user"}, headers=JSON
    )
    dc = r.json()
    assert r.status_code == 200
    assert len(dc["device_code"]) == 40 and dc["user_code"].startswith("FAKE-")
    assert dc["verification_uri"] == fake.url + "/login/device"
    assert dc["interval"] == 0 and dc["expires_in"] == 900

    fake.script_device_flow(
        "authorization_pending",
        "slow_down",
        DeviceOutcome("slow_down", interval=9),
        "expired_token",
    )
    fake.script_device_flow("access_denied", DeviceOutcome("success", login="alice"))
    seen = []
    for _ in range(6):
        r = client.post(
            "/login/oauth/access_token",
            data={"client_id": "Iv1.x", "device_code": dc["device_code"], "grant_type": GRANT},
            headers=JSON,
        )
        assert r.status_code == 200  # errors come with HTTP 200, like GitHub
        seen.append(r.json())
    assert [s.get("error") for s in seen[:5]] == [
        "authorization_pending",
        "slow_down",
        "slow_down",
        "expired_token",
        "access_denied",
    ]
    assert seen[1]["interval"] == 5 and seen[2]["interval"] == 9
    assert seen[5] == {"access_token": "gho_alice", "token_type": "bearer", "scope": "read:user"}
    assert fake.device_flow.polls == 6
    form = fake.requests_to("/login/oauth/access_token")[0].form
    assert form is not None and form["grant_type"] == GRANT

    # default outcome once the queue is empty; unknown device code
    r = client.post(
        "/login/oauth/access_token",
        json={"device_code": dc["device_code"], "grant_type": GRANT},
        headers=JSON,
    )
    assert r.json()["access_token"] == "gho_octocat"
    r = client.post(
        "/login/oauth/access_token", json={"device_code": "nope", "grant_type": GRANT}, headers=JSON
    )
    assert r.json()["error"] == "incorrect_device_code"


def test_device_flow_without_accept_json_is_form_encoded(client: httpx.Client) -> None:
    r = client.post("/login/device/code", data={"client_id": "x", "scope": "read:user"})
    assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert "device_code=" in r.text and "interval=0" in r.text


def test_token_exchange_envelope_and_counts(fake: FakeUpstream, client: httpx.Client) -> None:
    r = client.get("/copilot_internal/v2/token", headers={"authorization": "token gho_alice"})
    env = r.json()
    assert r.status_code == 200
    assert (
        env["token"].startswith("tid=") and ";exp=" in env["token"] and ";proxy-ep=" in env["token"]
    )
    assert env["endpoints"]["api"] == fake.url
    assert env["refresh_in"] == 1500 and env["expires_at"] > 0
    assert fake.exchange_count("gho_alice") == 1
    rec = fake.last("/copilot_internal/v2/token")
    assert (rec.token, rec.github_token, rec.login, rec.service) == (
        "gho_alice",
        "gho_alice",
        "alice",
        "github-api",
    )

    # the minted token works on the Copilot API and is attributed to the account
    models = client.get("/models", headers={"authorization": f"Bearer {env['token']}"})
    assert models.status_code == 200
    assert fake.last("/models").github_token == "gho_alice"

    assert (
        client.get("/user", headers={"authorization": "token gho_alice"}).json()["login"] == "alice"
    )
    bad = client.get("/user", headers={"authorization": "token nope"})
    assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"


@pytest.mark.parametrize("status", [401, 403, 404])
def test_token_exchange_failures(fake: FakeUpstream, client: httpx.Client, status: int) -> None:
    acc = fake.github_account("gho_bob")
    acc.exchange_failure = status
    acc.notification_id = "subscription_ended"
    r = client.get("/copilot_internal/v2/token", headers={"authorization": "token gho_bob"})
    assert r.status_code == status
    if status == 403:
        details = r.json()["error_details"]
        assert details["notification_id"] == "subscription_ended"
        assert set(details) == {"message", "notification_id", "title", "url"}
    assert fake.exchange_count("gho_bob") == 1


def test_short_lived_and_revoked_tokens(fake: FakeUpstream, client: httpx.Client) -> None:
    acc = fake.github_account("gho_carol")
    acc.expires_in, acc.refresh_in = 0, 0
    env = client.get(
        "/copilot_internal/v2/token", headers={"authorization": "token gho_carol"}
    ).json()
    assert env["refresh_in"] == 0
    r = client.get("/models", headers={"authorization": f"Bearer {env['token']}"})
    assert r.status_code == 401 and r.text.strip() == "unauthorized: token expired"
    assert r.headers["content-type"].startswith("text/plain")

    h = copilot_headers(fake, "gho_carol2")
    assert client.get("/models", headers=h).status_code == 200
    assert fake.revoke_copilot_tokens("gho_carol2") == 1
    assert client.get("/models", headers=h).status_code == 401


def test_copilot_user_quota(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.github_account("gho_dave").premium_remaining = 30
    body = client.get("/copilot_internal/user", headers={"authorization": "token gho_dave"}).json()
    snap = body["quota_snapshots"]["premium_interactions"]
    assert (
        snap["remaining"] == 30 and snap["entitlement"] == 300 and snap["percent_remaining"] == 10.0
    )
    assert body["quota_snapshots"]["chat"]["unlimited"] is True
    assert body["copilot_plan"] == "individual"


# --------------------------------------------------------------------------------------
# Copilot API
# --------------------------------------------------------------------------------------


def test_models_shape(fake: FakeUpstream, client: httpx.Client) -> None:
    data = client.get("/models", headers=copilot_headers(fake)).json()
    assert data["object"] == "list"
    by_id = {m["id"]: m for m in data["data"]}
    assert set(by_id) == {"gpt-4.1", "gpt-5-mini", "claude-sonnet-4.5", "text-embedding-3-small"}
    for m in by_id.values():
        assert {
            "id",
            "name",
            "vendor",
            "version",
            "object",
            "capabilities",
            "supported_endpoints",
        } <= set(m)
        assert {"type", "family", "tokenizer", "limits", "supports"} <= set(m["capabilities"])
    assert by_id["gpt-5-mini"]["supported_endpoints"] == ["/chat/completions", "/responses"]
    assert by_id["claude-sonnet-4.5"]["supported_endpoints"] == [
        "/chat/completions",
        "/v1/messages",
    ]
    assert by_id["text-embedding-3-small"]["capabilities"]["type"] == "embeddings"

    fake.github_account("gho_limited").models = ["gpt-4.1"]
    h = copilot_headers(fake, "gho_limited")
    assert [m["id"] for m in client.get("/models", headers=h).json()["data"]] == ["gpt-4.1"]
    r = client.post("/chat/completions", headers=h, json=chat_body(model="gpt-5-mini"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"


def test_chat_non_stream(fake: FakeUpstream, client: httpx.Client) -> None:
    r = client.post(
        "/chat/completions", headers=copilot_headers(fake), json=chat_body("hello there")
    )
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4.1"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello there"}
    assert choice["finish_reason"] == "stop"
    u = body["usage"]
    assert u["prompt_tokens"] == 12 and u["completion_tokens"] == 3 and u["total_tokens"] == 15
    assert u["prompt_tokens_details"]["cached_tokens"] == 2
    assert u["completion_tokens_details"]["reasoning_tokens"] == 0
    assert fake.last("/chat/completions").usage == u
    assert "x-quota-snapshot-premium_interactions" in r.headers

    r = client.post(
        "/chat/completions", headers=copilot_headers(fake), json=chat_body(model="gpt-5-mini")
    )
    assert r.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_shape(fake: FakeUpstream, client: httpx.Client, include_usage: bool) -> None:
    body = chat_body("hello big world", stream=True)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with client.stream("POST", "/chat/completions", headers=copilot_headers(fake), json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_data(list(r.iter_lines()))
    assert events[-1] == "[DONE]"
    first = events[0]
    assert first["choices"] == [] and first["id"] == "" and "prompt_filter_results" in first
    deltas = [e for e in events[1:-1] if e["choices"] and e["choices"][0]["delta"]]
    assert [d["choices"][0]["delta"]["content"] for d in deltas] == [
        "Echo: ",
        "hello ",
        "big ",
        "world",
    ]
    assert deltas[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(d["object"] == "chat.completion.chunk" and d["usage"] is None for d in deltas)
    finish = [e for e in events[1:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    usage_chunks = [e for e in events[1:-1] if e["choices"] == [] and e.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1 and events[-2] is usage_chunks[0]
        assert usage_chunks[0]["usage"]["completion_tokens"] == 4
    else:
        assert usage_chunks == []
    rec = fake.last("/chat/completions")
    assert rec.streamed and rec.completed and not rec.disconnected


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def test_chat_tool_calls(fake: FakeUpstream, client: httpx.Client) -> None:
    h = copilot_headers(fake)
    r = client.post("/chat/completions", headers=h, json=chat_body("Paris", tools=[WEATHER_TOOL]))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and call["id"].startswith("call_fake_")
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 1}

    body = chat_body("Paris", tools=[WEATHER_TOOL], stream=True)
    with client.stream("POST", "/chat/completions", headers=h, json=body) as r:
        events = sse_data(list(r.iter_lines()))
    calls = [
        e["choices"][0]["delta"]["tool_calls"][0]
        for e in events[1:-1]
        if e["choices"] and "tool_calls" in e["choices"][0]["delta"]
    ]
    assert calls[0]["id"].startswith("call_fake_") and calls[0]["function"]["name"] == "get_weather"
    args = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(args) == {"city": "Paris", "days": 1}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"

    # tool result last → text reply, no further tool call
    msgs = [
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]
    r = client.post(
        "/chat/completions",
        headers=h,
        json={"model": "gpt-4.1", "messages": msgs, "tools": [WEATHER_TOOL]},
    )
    assert r.json()["choices"][0]["message"]["content"] == "Tool result: sunny"


def test_embeddings(fake: FakeUpstream, client: httpx.Client) -> None:
    h = copilot_headers(fake)
    r = client.post(
        "/embeddings",
        headers=h,
        json={"model": "text-embedding-3-small", "input": ["a b", "c"], "dimensions": 4},
    )
    body = r.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][0]["embedding"] == embedding_for("a b", 4)
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    r = client.post(
        "/embeddings",
        headers=h,
        json={"model": "text-embedding-3-small", "input": "x", "encoding_format": "base64"},
    )
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert list(struct.unpack("<8f", raw)) == pytest.approx(embedding_for("x", 8))
    r = client.post("/embeddings", headers=h, json={"model": "gpt-4.1", "input": "x"})
    assert r.status_code == 400


def test_responses_api(fake: FakeUpstream, client: httpx.Client) -> None:
    h = copilot_headers(fake)
    r = client.post("/responses", headers=h, json={"model": "gpt-5-mini", "input": "hi there"})
    body = r.json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Echo: hi there",
        "annotations": [],
    }
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 2

    with client.stream(
        "POST",
        "/responses",
        headers=h,
        json={"model": "gpt-4.1", "input": "hi there", "stream": True},
    ) as r:
        lines = list(r.iter_lines())
    types = [ln[7:] for ln in lines if ln.startswith("event: ")]
    datas = sse_data(lines)
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.count("response.output_text.delta") == 3
    assert [d["sequence_number"] for d in datas] == list(range(len(datas)))
    assert [d["type"] for d in datas] == types
    assert datas[-1]["response"]["usage"]["input_tokens"] == 12

    r = client.post("/responses", headers=h, json={"model": "claude-sonnet-4.5", "input": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_api_for_model"

    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    r = client.post(
        "/responses", headers=h, json={"model": "gpt-4.1", "input": "cats", "tools": [tool]}
    )
    item = r.json()["output"][0]
    assert (
        item["type"] == "function_call"
        and item["name"] == "lookup"
        and json.loads(item["arguments"]) == {"q": "cats"}
    )


def test_anthropic_messages(fake: FakeUpstream, client: httpx.Client) -> None:
    h = copilot_headers(fake)
    base = {
        "model": "claude-sonnet-4.5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "yo there"}],
    }
    body = client.post("/v1/messages", headers=h, json=base).json()
    assert body["type"] == "message" and body["content"] == [
        {"type": "text", "text": "Echo: yo there"}
    ]
    assert body["stop_reason"] == "end_turn" and body["usage"]["cache_read_input_tokens"] == 2

    with client.stream("POST", "/v1/messages", headers=h, json={**base, "stream": True}) as r:
        lines = list(r.iter_lines())
    types = [ln[7:] for ln in lines if ln.startswith("event: ")]
    assert types == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert (
        client.post("/v1/messages", headers=h, json={**base, "model": "gpt-4.1"}).status_code == 400
    )


# --------------------------------------------------------------------------------------
# Z.ai
# --------------------------------------------------------------------------------------


def test_zai_models_and_auth(fake: FakeUpstream, client: httpx.Client) -> None:
    for base in (fake.zai_url, fake.zai_general_url):
        r = client.get(base + "/models", headers={"authorization": "Bearer zai-key-1"})
        assert r.status_code == 200
        assert [m["id"] for m in r.json()["data"]] == [
            "glm-4.5-air",
            "glm-4.6",
            "glm-4.7",
            "glm-5.1",
        ]
    r = client.get(fake.zai_url + "/models", headers={"authorization": "Bearer sk-wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "1000"
    fake.zai_keys.add("sk-wrong")
    assert (
        client.get(
            fake.zai_url + "/models", headers={"authorization": "Bearer sk-wrong"}
        ).status_code
        == 200
    )
    assert fake.last().service == "zai" and fake.last().token == "sk-wrong"


def test_zai_chat_reasoning(fake: FakeUpstream, client: httpx.Client) -> None:
    h = {"authorization": "Bearer zai-key-1"}
    url = fake.zai_url + "/chat/completions"
    body = {"model": "glm-4.7", "messages": [{"role": "user", "content": "hi"}]}
    msg = client.post(url, headers=h, json=body).json()["choices"][0]["message"]
    assert msg["content"] == "Echo: hi" and msg["reasoning_content"] == "Thinking about: hi"

    off = {**body, "thinking": {"type": "disabled"}}
    msg = client.post(url, headers=h, json=off).json()["choices"][0]["message"]
    assert "reasoning_content" not in msg
    assert fake.last(fake.zai_url.removeprefix(fake.url) + "/chat/completions").json[
        "thinking"
    ] == {"type": "disabled"}

    with client.stream("POST", url, headers=h, json={**body, "stream": True}) as r:
        events = sse_data(list(r.iter_lines()))
    assert events[-1] == "[DONE]"
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events[:-1])
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert reasoning == "Thinking about: hi" and content == "Echo: hi"
    assert events[-2]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3

    r = client.post(url, headers=h, json={**body, "model": "gpt-4.1"})
    assert r.status_code == 400


# --------------------------------------------------------------------------------------
# scripting
# --------------------------------------------------------------------------------------


def test_scripted_canned_responses(fake: FakeUpstream, client: httpx.Client) -> None:
    h = copilot_headers(fake)
    fake.script(
        "/chat/completions",
        status=429,
        headers={"Retry-After": "2"},
        json={"error": {"code": "rate_limited"}},
    )
    fake.script("/chat/completions", status=429, headers={"Retry-After": http_date(30)}, json={})
    fake.script("/chat/completions", status=403, html="<html><body>Forbidden</body></html>")
    r1 = client.post("/chat/completions", headers=h, json=chat_body())
    r2 = client.post("/chat/completions", headers=h, json=chat_body())
    r3 = client.post("/chat/completions", headers=h, json=chat_body())
    r4 = client.post("/chat/completions", headers=h, json=chat_body())
    assert (r1.status_code, r1.headers["retry-after"], r1.json()["error"]["code"]) == (
        429,
        "2",
        "rate_limited",
    )
    assert r2.status_code == 429 and r2.headers["retry-after"].endswith("GMT")
    assert r3.status_code == 403 and r3.headers["content-type"].startswith("text/html")
    assert r4.status_code == 200
    assert [r.scripted for r in fake.requests_to("/chat/completions")] == [True, True, True, False]


def test_script_targets_one_account(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script("/chat/completions", token="gho_alice", status=500, text="boom", times=None)
    alice, bob = copilot_headers(fake, "gho_alice"), copilot_headers(fake, "gho_bob")
    assert client.post("/chat/completions", headers=alice, json=chat_body()).status_code == 500
    assert client.post("/chat/completions", headers=bob, json=chat_body()).status_code == 200
    assert client.post("/chat/completions", headers=alice, json=chat_body()).text == "boom"
    fake.reset()
    assert fake.requests == []


def test_script_reply_chunks_and_usage(fake: FakeUpstream, client: httpx.Client) -> None:
    h = copilot_headers(fake)
    fake.script(
        "/chat/completions", chunks=3, usage={"prompt_tokens_details": {"cached_tokens": 50}}
    )
    body = chat_body(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/chat/completions", headers=h, json=body) as r:
        events = sse_data(list(r.iter_lines()))
    text = "".join(
        e["choices"][0]["delta"].get("content", "") for e in events[1:-1] if e["choices"]
    )
    assert text == "chunk0 chunk1 chunk2"
    assert events[-2]["usage"]["prompt_tokens_details"]["cached_tokens"] == 50
    fake.script("/chat/completions", reply="custom")
    assert (
        client.post("/chat/completions", headers=h, json=chat_body()).json()["choices"][0][
            "message"
        ]["content"]
        == "custom"
    )


def test_drop_mid_stream_is_abrupt(fake: FakeUpstream, client: httpx.Client) -> None:
    fake.script("/chat/completions", chunks=5, drop_after=2)
    got: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream(
            "POST", "/chat/completions", headers=copilot_headers(fake), json=chat_body(stream=True)
        ) as r,
    ):
        for line in r.iter_lines():
            got.append(line)
    contents = [e["choices"][0]["delta"]["content"] for e in sse_data(got)[1:]]
    assert contents == ["chunk0 ", "chunk1 "]
    assert fake.drops == 1 and fake.last("/chat/completions").dropped


def test_hang_until_client_disconnects(fake: FakeUpstream) -> None:
    fake.script("/chat/completions", hang_after=1)
    with (
        httpx.Client(base_url=fake.url, timeout=10, trust_env=False) as c,
        c.stream(
            "POST", "/chat/completions", headers=copilot_headers(fake), json=chat_body(stream=True)
        ) as r,
    ):
        lines = r.iter_lines()
        for line in lines:
            if '"content":"Echo: "' in line:
                break
        # leaving the block closes the response; the connection goes away
    fake.wait_disconnect(timeout=5)
    rec = fake.last("/chat/completions")
    assert rec.disconnected and not rec.completed


def test_hang_and_delay_non_stream(fake: FakeUpstream) -> None:
    fake.script("/models", hang=True)
    with (
        httpx.Client(base_url=fake.url, timeout=0.3, trust_env=False) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.get("/models", headers=copilot_headers(fake))
    fake.wait_disconnect(timeout=5)
    fake.script("/models", delay=0.05)
    with httpx.Client(base_url=fake.url, timeout=5, trust_env=False) as c:
        assert c.get("/models", headers=copilot_headers(fake)).status_code == 200


def test_wait_for_requests_and_recording(fake: FakeUpstream, client: httpx.Client) -> None:
    client.get(
        "/user", params={"a": "1"}, headers={"authorization": "Bearer gho_x", "X-Custom": "v"}
    )
    rec = fake.wait_for_requests("/user")[0]
    assert rec.query == {"a": "1"} and rec.header("x-custom") == "v" and rec.status == 200


# --------------------------------------------------------------------------------------
# layout: the package face, one module per upstream
# --------------------------------------------------------------------------------------


def test_package_face_is_locked() -> None:
    import types

    import tests.fakes

    assert tests.fakes.__all__ == [
        "BackgroundServer",
        "Daemon",
        "DeviceOutcome",
        "Exchange",
        "FakeUpstream",
        "GithubAccount",
        "H11Server",
        "HttpProxy",
        "ProxyRecord",
        "RecordedRequest",
        "Script",
        "Socks5Proxy",
        "embedding_for",
        "http_date",
        "merge_env",
        "run_cli",
        "serve_h11",
        "wait_for",
    ]
    public = {
        name
        for name, value in vars(tests.fakes).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(tests.fakes.__all__)


def test_each_upstream_serves_alone() -> None:
    """Every upstream module is a whole fake; ``FakeUpstream`` only puts them on one server."""
    from tests.fakes.github import GithubFake
    from tests.fakes.https_host import HttpsHost
    from tests.fakes.zai import ZaiFake

    with ZaiFake() as z, GithubFake() as g, HttpsHost() as h, httpx.Client(trust_env=False) as c:
        r = c.get(z.zai_url + "/models", headers={"authorization": "Bearer zai-k"})
        assert r.json()["data"][0]["id"] == "glm-4.5-air"
        assert c.get(z.url + "/user").status_code == 404
        r = c.get(g.url + "/user", headers={"authorization": "token gho_solo"})
        assert r.json()["login"] == "solo"
        assert c.post(g.url + "/chat/completions", json={}).status_code == 404
        assert c.put(h.url + "/echo/x", content=b"b").json()["body"] == "b"
        assert [r.service for r in (*z.requests, *g.requests, *h.requests)] == [
            "zai",
            "unknown",
            "github-api",
            "unknown",
            "unknown",
        ]


# --------------------------------------------------------------------------------------
# TLS, proxies
# --------------------------------------------------------------------------------------


def test_tls_fake(fake_tls: FakeUpstream, client_ssl_context: ssl.SSLContext) -> None:
    assert fake_tls.url.startswith("https://127.0.0.1:")
    with httpx.Client(verify=client_ssl_context, trust_env=False) as c:
        env = c.get(
            fake_tls.url + "/copilot_internal/v2/token", headers={"authorization": "token gho_t"}
        ).json()
        assert env["endpoints"]["api"] == fake_tls.url
        r = c.get(
            fake_tls.url.replace("127.0.0.1", "localhost") + "/models",
            headers={"authorization": f"Bearer {env['token']}"},
        )
        assert r.status_code == 200


def test_http_proxy_connect_and_forward(
    http_proxy: HttpProxy,
    fake: FakeUpstream,
    fake_tls: FakeUpstream,
    client_ssl_context: ssl.SSLContext,
) -> None:
    with httpx.Client(proxy=http_proxy.url, verify=client_ssl_context, trust_env=False) as c:
        assert (
            c.get(fake_tls.url + "/user", headers={"authorization": "token gho_p"}).json()["login"]
            == "p"
        )
        assert (
            c.get(fake.url + "/user", headers={"authorization": "token gho_q"}).json()["login"]
            == "q"
        )
    kinds = [(r.kind, r.method, r.port) for r in http_proxy.records]
    assert ("connect", "CONNECT", fake_tls.port) in kinds
    assert ("forward", "GET", fake.port) in kinds
    fwd = next(r for r in http_proxy.records if r.kind == "forward")
    assert fwd.target == fake.url + "/user" and fwd.ok
    assert fake.last("/user").path == "/user"  # origin-form upstream


def test_http_proxy_auth_hosts_and_bad_connections(
    http_proxy: HttpProxy, fake: FakeUpstream
) -> None:
    # garbage and refused targets must not kill the proxy
    with socket.create_connection(("127.0.0.1", http_proxy.port)) as s:
        s.sendall(b"garbage\r\n\r\n")
        s.recv(100)
    with httpx.Client(proxy=http_proxy.url, trust_env=False) as c:
        assert c.get("http://127.0.0.1:1/").status_code == 502
    http_proxy.auth = ("user", "pw")
    http_proxy.hosts["upstream.test"] = "127.0.0.1"
    with httpx.Client(proxy=http_proxy.url, trust_env=False) as c:
        assert c.get(f"http://upstream.test:{fake.port}/user").status_code == 407
    with httpx.Client(proxy=http_proxy.url.replace("://", "://user:pw@"), trust_env=False) as c:
        r = c.get(
            f"http://upstream.test:{fake.port}/user", headers={"authorization": "token gho_z"}
        )
        assert r.json()["login"] == "z"
    assert (
        http_proxy.records[-1].auth_user == "user"
        and http_proxy.records[-1].host == "upstream.test"
    )


def test_socks5_proxy(
    socks_proxy: Socks5Proxy,
    fake: FakeUpstream,
    fake_tls: FakeUpstream,
    client_ssl_context: ssl.SSLContext,
) -> None:
    socks_proxy.hosts["upstream.test"] = "127.0.0.1"
    with httpx.Client(proxy=socks_proxy.url, trust_env=False, verify=client_ssl_context) as c:
        assert (
            c.get(
                f"http://upstream.test:{fake.port}/user", headers={"authorization": "token gho_s"}
            ).json()["login"]
            == "s"
        )
        # TLS by host name, resolved by the proxy
        r = c.post(f"https://upstream.test:{fake_tls.port}/echo/x?a=1", content=b"hi")
        assert r.json()["path"] == "/echo/x" and r.json()["body"] == "hi"
        assert r.json()["query"] == {"a": "1"}
    recs = socks_proxy.wait_for(lambda: len(socks_proxy.records) >= 2 and socks_proxy.records)
    assert (recs[0].atyp, recs[0].host, recs[0].port) == ("domain", "upstream.test", fake.port)
    assert (recs[1].atyp, recs[1].port, recs[1].ok) == ("domain", fake_tls.port, True)

    # raw IPv4 request
    with socket.create_connection(("127.0.0.1", socks_proxy.port)) as s:
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(
            b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", fake.port)
        )
        assert s.recv(10)[:2] == b"\x05\x00"
        s.sendall(
            b"GET /user HTTP/1.1\r\nHost: x\r\nAuthorization: token gho_r\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b'"login":"r"' in data
    assert socks_proxy.records[-1].atyp == "ipv4"
    # a client that talks nonsense does not kill the server
    with socket.create_connection(("127.0.0.1", socks_proxy.port)) as s:
        s.sendall(b"\x04\x01")
    with httpx.Client(proxy=socks_proxy.url, trust_env=False) as c:
        assert (
            c.get(fake.url + "/user", headers={"authorization": "token gho_u"}).status_code == 200
        )


# --------------------------------------------------------------------------------------
# env, CLI, daemon helpers
# --------------------------------------------------------------------------------------


def test_env_home_and_write_config(
    env_home: Any, cli_env: dict[str, str], fake: FakeUpstream, write_config: Any
) -> None:
    assert cli_env["HOME"] == str(env_home.home)
    assert cli_env["TOKN_ROUTER_CONFIG"] == str(env_home.xdg_config / "tokn-router" / "config.toml")
    assert cli_env["TOKN_ROUTER_GITHUB_URL"] == fake.url == cli_env["TOKN_ROUTER_GITHUB_API_URL"]
    assert (
        cli_env["NO_PROXY"] == "*"
        and "HTTPS_PROXY" not in cli_env
        and "GITHUB_TOKEN" not in cli_env
    )
    path = write_config(
        {
            "server": {"port": 0},
            "accounts": [fake.copilot_account("a1", "gho_alice"), fake.zai_account()],
        }
    )
    assert path == env_home.config_path and oct(path.stat().st_mode & 0o777) == "0o600"
    cfg = tomllib.loads(path.read_text())
    assert cfg["accounts"][0]["refresh_token"] == "gho_alice"
    assert cfg["accounts"][1]["base_url"] == fake.zai_url


def test_run_cli_runs_console_script(run_cli: Any) -> None:
    assert CLI.exists()
    r = run_cli("--help")
    assert r.returncode == 0 and "serve" in r.stdout


FAKE_DAEMON = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (print("bye", flush=True), sys.exit(3)))
print("starting", flush=True)
print("error line", file=sys.stderr, flush=True)
print("listening on http://127.0.0.1:12345", flush=True)
if "--with-proxy" in sys.argv:
    print("proxy listening on http://127.0.0.1:12346", flush=True)
while True:
    time.sleep(0.05)
"""


def test_daemon_helper(tmp_path: Path, cli_env: dict[str, str]) -> None:
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    with Daemon(["--with-proxy"], env=cli_env, exe=[sys.executable, str(script)]) as d:
        d.start().wait_ready(10)
        assert d.url == "http://127.0.0.1:12345" and d.proxy_url == "http://127.0.0.1:12346"
        assert d.wait_output("error line", stream="stderr")
        pos = d.output_pos()
        d.send_signal(signal.SIGTERM)
        assert d.wait_exit(10) == 3
        assert "bye" in d.stdout_text[pos:]
    with Daemon([], env=cli_env, exe=[sys.executable, "-c", "print('nope')"]) as d:
        d.start()
        with pytest.raises(RuntimeError, match="exited"):
            d.wait_ready(10)


def test_openai_sdk_parses_the_fake(fake: FakeUpstream) -> None:
    import openai  # anthropic's SDK is exercised by the Messages tests of the API

    token, _ = fake.issue_copilot_token("gho_sdk")
    with openai.OpenAI(base_url=fake.url, api_key=token, max_retries=0) as oc:
        stream = oc.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "hi you"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Echo: hi you" and chunks[-1].usage is not None
        tools: Any = [
            {
                "type": "function",
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
        ]
        with oc.responses.stream(model="gpt-4.1", input="cats", tools=tools) as rs:
            for _ in rs:
                pass
            final = rs.get_final_response()
        assert final.output[0].type == "function_call" and final.output[0].name == "lookup"

"""`tokn-router serve` as users run it: chat completions with real clients."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import FakeUpstream


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="client-key-never-forwarded", max_retries=0)


def test_sdk_non_stream_and_identity_headers(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    resp = _openai(d.url).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hello world"}]
    )
    assert resp.choices[0].message.content == "Echo: hello world"
    rec = fake.last("/chat/completions")
    sent = rec.usage
    assert resp.usage is not None and sent is not None
    assert resp.usage.prompt_tokens == sent["prompt_tokens"]
    # the editor identity headers, defaults tracking a recent VS Code release
    # (the packaged set, tokn_router/data/identity.toml)
    assert rec.header("editor-version") == "vscode/1.140.0"
    assert rec.header("editor-plugin-version") == "copilot-chat/0.68.0"
    assert rec.header("user-agent") == "GitHubCopilotChat/0.68.0"
    assert rec.header("copilot-integration-id") == "vscode-chat"
    assert rec.header("openai-intent") == "conversation-panel"
    assert rec.header("x-github-api-version") == "2026-08-01"
    assert rec.header("x-initiator") == "user"
    assert rec.header("x-request-id")
    assert rec.header("copilot-vision-request") is None
    # the client's own key never reaches upstream
    assert "client-key" not in json.dumps(rec.headers)
    assert rec.token and rec.token.startswith("tid=")


def test_sdk_stream_hides_usage_unless_asked(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    client = _openai(d.url)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert all(c.usage is None for c in chunks)  # usage-only chunk hidden
    # upstream was asked for usage anyway
    assert fake.last("/chat/completions").json["stream_options"]["include_usage"] is True

    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1
    assert usage[0].prompt_tokens == fake.last("/chat/completions").usage["prompt_tokens"]


def test_stream_bytes_are_forwarded_unchanged(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    body = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "alpha beta"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", d.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = r.read()
    # what the fake sent, byte for byte: replay the same request directly
    token = fake.last("/chat/completions").token
    direct = httpx.post(
        fake.url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).content
    norm = lambda b: b.replace(b'"created":', b"").split(b"\n")  # noqa: E731
    assert len(norm(got)) == len(norm(direct))
    assert got.startswith(b'data: {"choices":[],"created":0')
    assert got.rstrip().endswith(b"data: [DONE]")


def test_tool_calls_and_agent_initiator(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    client = _openai(d.url)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages: list[dict] = [{"role": "user", "content": "Paris"}]
    first = client.chat.completions.create(model="gpt-4.1", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake.last("/chat/completions").header("x-initiator") == "user"

    messages += [
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    stream = client.chat.completions.create(
        model="gpt-4.1", messages=messages, tools=tools, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Tool result: sunny"
    assert fake.last("/chat/completions").header("x-initiator") == "agent"


def test_streamed_tool_call_arrives_through_sdk(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string"}},
                    "required": ["q"],
                },
            },
        }
    ]
    args = ""
    finish = None
    for c in _openai(d.url).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "x"}], tools=tools, stream=True
    ):
        for ch in c.choices:
            for tc in ch.delta.tool_calls or []:
                args += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    assert json.loads(args) == {"q": "x"}
    assert finish == "tool_calls"


def test_image_sets_vision_header_and_client_initiator_wins(
    fake: FakeUpstream, write_config, daemon
) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    client = _openai(d.url)
    client.chat.completions.create(
        model="gpt-4.1",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
        extra_headers={"X-Initiator": "agent"},
    )
    rec = fake.last("/chat/completions")
    assert rec.header("copilot-vision-request") == "true"
    assert rec.header("x-initiator") == "agent"


def test_account_initiator_mode_and_settings(fake: FakeUpstream, write_config, daemon) -> None:
    acc = fake.copilot_account("a1", "gho_alice")
    acc["settings"] = {"initiator_mode": "always_agent", "editor_version": "vscode/9.9.9"}
    write_config({"accounts": [acc]})
    d = daemon()
    _openai(d.url).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]
    )
    rec = fake.last("/chat/completions")
    assert rec.header("x-initiator") == "agent"
    assert rec.header("editor-version") == "vscode/9.9.9"


def test_curl_streaming(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    out = subprocess.run(
        [
            "curl",
            "-sN",
            "--max-time",
            "20",
            d.url + "/v1/chat/completions",
            "-H",
            "content-type: application/json",
            "-d",
            json.dumps(
                {
                    "model": "gpt-4.1",
                    "stream": True,
                    "messages": [{"role": "user", "content": "via curl"}],
                }
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pieces = [
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in out.splitlines()
        if line.startswith("data: {") and '"choices":[{' in line
    ]
    assert "".join(pieces) == "Echo: via curl"
    assert out.rstrip().endswith("data: [DONE]")


def test_models_union_with_metadata(fake: FakeUpstream, write_config, daemon, wait_for) -> None:
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice"), fake.zai_account("z1")]})
    d = daemon()

    def live() -> Any:
        # static entries are served until each account's live list is read
        page = _openai(d.url).models.list()
        sources = {m.model_dump()["x_tokn_router"]["source"] for m in page.data}
        return page if sources == {"upstream"} else None

    models = wait_for(live)
    by_id = {m.id: m.model_dump() for m in models.data}
    assert {"gpt-4.1", "claude-sonnet-4.5", "glm-4.7"} <= set(by_id)
    gpt = by_id["gpt-4.1"]
    assert gpt["x_tokn_router"]["provider"] == "github-copilot"
    assert gpt["x_tokn_router"]["provider_display_name"] == "GitHub Copilot"
    assert gpt["x_tokn_router"]["auth_kind"] == "github-oauth"
    assert "limit" in gpt["x_tokn_router"] and "cost" in gpt["x_tokn_router"]
    # upstream entry kept unchanged
    assert gpt["capabilities"]["family"]
    glm = by_id["glm-4.7"]["x_tokn_router"]
    assert glm["provider"] == "zai-coding-plan" and glm["auth_kind"] == "api-key"
    assert len(models.data) == len(by_id)  # de-duplicated


def test_zai_thinking_injection_and_provider_pin(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.zai_account("z1", "zai-key-1")]})
    d = daemon()
    client = _openai(d.url)
    resp = client.chat.completions.create(
        model="zai-coding-plan/glm-4.7", messages=[{"role": "user", "content": "think"}]
    )
    assert resp.choices[0].message.content == "Echo: think"
    rec = fake.last("/api/coding/paas/v4/chat/completions")
    assert rec.json["model"] == "glm-4.7"  # provider prefix stripped
    assert rec.json["thinking"] == {"type": "enabled", "clear_thinking": False}
    assert rec.token == "zai-key-1"
    client.chat.completions.create(
        model="glm-4.7",
        messages=[{"role": "user", "content": "no"}],
        extra_body={"thinking": {"type": "disabled"}},
    )
    assert fake.last("/api/coding/paas/v4/chat/completions").json["thinking"] == {
        "type": "disabled"
    }
    # Z.ai streams carry usage on the finish chunk: it stays (it has choices)
    chunks = list(
        client.chat.completions.create(
            model="glm-4.7", messages=[{"role": "user", "content": "s"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: s"


def test_account_pin_header(fake: FakeUpstream, write_config, daemon) -> None:
    write_config(
        {
            "accounts": [
                fake.copilot_account("a1", "gho_alice"),
                fake.copilot_account("b1", "gho_bob"),
            ]
        }
    )
    d = daemon()
    client = _openai(d.url)
    for _ in range(3):
        client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Tokn-Account": "b1"},
        )
    assert {r.login for r in fake.requests_to("/chat/completions")} == {"bob"}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Tokn-Account": "nobody"},
        )

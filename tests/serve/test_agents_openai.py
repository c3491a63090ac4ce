"""`/v1/responses` (Codex CLI's API) and `/v1/embeddings` against a real daemon.

Both modes run against the fake Copilot upstream: ``gpt-4.1`` lists
``/responses`` in ``supported_endpoints`` (native: forwarded, SSE relayed byte
for byte), ``claude-sonnet-4.5`` does not (translated to ``/chat/completions``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.fakes import FakeUpstream, embedding_for
from tests.helpers import ledger_rows, stop

NATIVE = "gpt-4.1"
TRANSLATED = "claude-sonnet-4.5"
MODES = [
    pytest.param(NATIVE, "/responses", id="native"),
    pytest.param(TRANSLATED, "/chat/completions", id="translated"),
]
CLIENT_KEY = "sk-client-secret-never-forwarded"

EXEC_TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
        "required": ["cmd"],
    },
}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def one_account(fake: FakeUpstream, write_config, **extra: Any) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")], **extra})


def sse_events(raw: str) -> list[dict[str, Any]]:
    out = []
    for block in raw.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def assert_client_key_not_forwarded(fake: FakeUpstream) -> None:
    for rec in fake.requests:
        assert CLIENT_KEY not in json.dumps(rec.headers)


# --------------------------------------------------------------------------- SDK, both modes


@pytest.mark.parametrize(("model", "upstream"), MODES)
def test_sdk_responses_stream_and_not_with_function_tool(
    fake: FakeUpstream, write_config, daemon, model: str, upstream: str
) -> None:
    one_account(fake, write_config)
    d = daemon()
    c = client(d.url)

    resp = c.responses.create(model=model, input="hello there")
    assert resp.status == "completed" and resp.output_text == "Echo: hello there"
    sent = fake.last(upstream).usage
    assert resp.usage is not None
    assert resp.usage.input_tokens == sent.get("input_tokens", sent.get("prompt_tokens"))
    assert resp.usage.input_tokens_details.cached_tokens == 2
    assert fake.last(upstream).header("x-initiator") == "user"
    assert fake.last(upstream).header("copilot-vision-request") is None

    # streamed function call (Codex reads items from output_item.done only)
    first: list[Any] = [
        {"type": "message", "role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "pwd"}]},
    ]
    events = list(c.responses.create(model=model, input=first, tools=[EXEC_TOOL], stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    seqs = [e.sequence_number for e in events]
    assert seqs == list(range(len(seqs)))
    (call,) = [e.item for e in events if e.type == "response.output_item.done"]
    assert call.type == "function_call" and call.name == "exec_command"
    assert json.loads(call.arguments) == {"cmd": "pwd"}
    assert call.call_id.startswith("call_fake_")
    assert events[-1].response.usage is not None

    # the call echoed back with its output: the same call_id travels upstream
    follow = [
        *first,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "/home/me"},
    ]
    events = list(c.responses.create(model=model, input=follow, tools=[EXEC_TOOL], stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Tool result: /home/me"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Tool result: /home/me"
    rec = fake.last(upstream)
    assert rec.header("x-initiator") == "agent"
    if upstream == "/chat/completions":
        *_, assistant, tool = rec.json["messages"]
        assert assistant["tool_calls"][0]["id"] == call.call_id
        assert tool == {"role": "tool", "tool_call_id": call.call_id, "content": "/home/me"}
    else:
        assert rec.json["input"][-1]["call_id"] == call.call_id

    # an image marks the request as a vision request
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    c.responses.create(
        model=model,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "see"}, image]}],
        extra_headers={"X-Initiator": "agent"},  # the client's header wins over the classifier
    )
    assert fake.last(upstream).header("copilot-vision-request") == "true"
    assert fake.last(upstream).header("x-initiator") == "agent"
    assert_client_key_not_forwarded(fake)


@pytest.mark.parametrize(("model", "upstream"), MODES)
def test_codex_shaped_request(
    fake: FakeUpstream, write_config, daemon, model: str, upstream: str
) -> None:
    """What Codex CLI sends (agents-wire.md): developer items, namespace and web_search tools."""
    one_account(fake, write_config)
    d = daemon()
    call = {
        "type": "function_call",
        "status": "completed",
        "id": "fc_1",
        "name": "exec_command",
        "arguments": '{"cmd":"ls"}',
        "call_id": "call_abc",
    }
    body = {
        "model": model,
        "stream": True,
        "input": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "developer",
                "content": [{"type": "input_text", "text": "You are a coding agent."}],
            },
            {
                "type": "message",
                "id": "msg_2",
                "role": "user",
                "content": [{"type": "input_text", "text": "<environment_context/>"}],
            },
            {
                "type": "message",
                "id": "msg_3",
                "role": "user",
                "content": [{"type": "input_text", "text": "list files"}],
            },
            call,
            {
                "type": "function_call_output",
                "id": "fco_1",
                "call_id": "call_abc",
                "output": "a.txt",
            },
        ],
        "tools": [
            EXEC_TOOL,
            {
                "type": "namespace",
                "name": "multi_agent_v1",
                "description": "agents",
                "tools": [
                    {
                        "type": "function",
                        "name": "spawn_agent",
                        "parameters": {"type": "object", "properties": {}},
                    }
                ],
            },
            {"type": "web_search", "external_web_access": False},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"x-codex-installation-id": "i"},
    }
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "accept": "text/event-stream"}
    r = httpx.post(d.url + "/v1/responses", json=body, headers=headers, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-request-id"]
    events = sse_events(r.text)
    assert events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    (item,) = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert item["content"][0]["text"] == "Tool result: a.txt"

    rec = fake.last(upstream)
    assert rec.header("x-initiator") == "agent"
    if upstream == "/responses":
        assert rec.json == body  # native: unchanged (the model id is the upstream's already)
        assert rec.header("openai-intent") == "responses-proxy"
    else:
        chat = rec.json
        assert chat["messages"][0] == {"role": "system", "content": "You are a coding agent."}
        names = [t["function"]["name"] for t in chat["tools"]]
        assert names == ["exec_command", "multi_agent_v1__spawn_agent"]  # web_search dropped
        assert chat["messages"][-2]["tool_calls"][0]["id"] == "call_abc"
        assert chat["messages"][-1]["tool_call_id"] == "call_abc"
    assert_client_key_not_forwarded(fake)


# --------------------------------------------------------------------------- errors


def test_bad_input_and_model_errors_in_openai_shape(
    fake: FakeUpstream, write_config, daemon
) -> None:
    one_account(fake, write_config)
    d = daemon()
    url = d.url + "/v1/responses"
    bad = [
        {"model": NATIVE},  # no input
        {"model": NATIVE, "input": 5},
        {"input": "hi"},
        {"model": NATIVE, "input": [{"foo": 1}]},
        {"model": NATIVE, "input": "hi", "max_output_tokens": "many"},
        {"model": TRANSLATED, "input": [{"role": "user", "content": [{"type": "bogus"}]}]},
    ]
    for body in bad:
        r = httpx.post(url, json=body, timeout=10)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(url, json={"model": NATIVE, "input": "hi", "previous_response_id": "resp_1"})
    assert r.status_code == 400
    assert "full" in r.json()["error"]["message"] and "store: false" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "previous_response_id"
    assert not fake.requests_to("/responses") and not fake.requests_to("/chat/completions")

    with pytest.raises(openai.NotFoundError) as exc:
        client(d.url).responses.create(model="gpt-4.2", input="hi")
    assert "gpt-4.1" in exc.value.message

    # an upstream 4xx is relayed in the OpenAI shape
    fake.script("/responses", status=400, json={"error": {"message": "bad!", "code": "x"}})
    r = httpx.post(url, json={"model": NATIVE, "input": "hi"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "bad!"
    # every account failing: 503 with Retry-After
    fake.script("/chat/completions", status=500, text="boom", times=None)
    r = httpx.post(url, json={"model": TRANSLATED, "input": "hi"})
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["error"]["code"] == "all_accounts_unavailable"


@pytest.mark.parametrize(("model", "upstream"), MODES)
def test_failover_and_mid_stream_drop(
    fake: FakeUpstream, write_config, daemon, model: str, upstream: str
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
    fake.script(upstream, status=500, text="boom")
    resp = client(d.url).responses.create(model=model, input="fail over")
    assert resp.output_text == "Echo: fail over"
    assert [r.status for r in fake.requests_to(upstream)] == [500, 200]

    fake.script(upstream, chunks=4, drop_after=2)
    body = {"model": model, "input": "drop me", "stream": True}
    with httpx.stream("POST", d.url + "/v1/responses", json=body, timeout=30) as r:
        events = sse_events(r.read().decode())
    assert events[0]["type"] == "response.created"
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed" and last["response"]["error"]["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "response.completed" not in [e["type"] for e in events]


# --------------------------------------------------------------------------- ledger, embeddings


def test_ledger_embeddings_and_model_ids(
    fake: FakeUpstream, write_config, daemon, env_home
) -> None:
    one_account(fake, write_config, model_aliases={"codex-model": TRANSLATED})
    d = daemon()
    c = client(d.url)
    list(c.responses.create(model=NATIVE, input="stream me", stream=True))
    native_usage = fake.last("/responses").usage
    c.responses.create(model="codex-model", input="alias me")  # alias → translated
    chat_usage = fake.last("/chat/completions").usage
    assert fake.last("/chat/completions").json["model"] == TRANSLATED

    emb = c.embeddings.create(model="text-embedding-3-small", input=["hello world", "x"])
    assert [e.index for e in emb.data] == [0, 1]
    assert emb.data[0].embedding == pytest.approx(embedding_for("hello world"), rel=1e-6)
    assert emb.usage.prompt_tokens == 3
    rec = fake.last("/embeddings")
    assert rec.header("openai-intent") == "copilot-panel"
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="text-embedding-3-small", input=[])

    # the chat endpoint resolves Anthropic-style ids the same way
    chat = c.chat.completions.create(
        model="claude-sonnet-4-5-20250929", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.content == "Echo: hi"
    assert fake.last("/chat/completions").json["model"] == "claude-sonnet-4.5"
    c.close()
    stop(d)

    rows = ledger_rows(env_home.state_dir)
    native, translated, embedded, bad_embedding, chat_row = rows
    assert native["endpoint"] == translated["endpoint"] == "/v1/responses"
    u = json.loads(native["usage_json"])
    assert u["input"] == native_usage["input_tokens"]
    assert u["output"] == native_usage["output_tokens"]
    assert u["cache_read"] == native_usage["input_tokens_details"]["cached_tokens"]
    assert json.loads(native["params_json"])["stream"] is True
    assert json.loads(native["ctx_json"])["ttft_ms"] is not None
    assert translated["model"] == "codex-model"
    assert json.loads(translated["ctx_json"])["upstream_model"] == TRANSLATED
    assert json.loads(translated["usage_json"])["input"] == chat_usage["prompt_tokens"]
    assert embedded["endpoint"] == "/v1/embeddings" and embedded["status"] == 200
    assert json.loads(embedded["usage_json"])["input"] == 3
    assert bad_embedding["status"] == 400
    assert chat_row["endpoint"] == "/v1/chat/completions"

"""Table tests of the pure provider functions: initiator, headers, API base, thinking."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokn_router.accounts import identity
from tokn_router.accounts.providers import PROVIDERS, RequestInfo
from tokn_router.accounts.providers import github as gh
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.providers.copilot import (
    DEFAULT_API_BASE,
    api_base_from_token,
    build_headers,
    identity_headers,
)
from tokn_router.accounts.providers.zai import inject_thinking, is_reasoning_model
from tokn_router.accounts.schema import Account, AccountSettings
from tokn_router.wire.initiator import (
    classify_chat,
    classify_messages,
    classify_responses,
    has_image,
    resolve_initiator,
)

SYS = {"role": "system", "content": "be brief"}
DEV = {"role": "developer", "content": "rules"}
USER = {"role": "user", "content": "hi"}
ASSIST = {"role": "assistant", "content": "calling a tool"}
TOOL = {"role": "tool", "tool_call_id": "c1", "content": "42"}


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([USER], "user"),
        ([SYS, USER], "user"),
        ([USER, ASSIST, TOOL], "agent"),
        ([USER, ASSIST], "agent"),
        ([USER, TOOL, SYS], "agent"),  # trailing system skipped
        ([USER, ASSIST, DEV], "agent"),  # trailing developer skipped
        ([TOOL, USER], "user"),
        ([SYS], "user"),  # nothing but system → unknown → user
        ([], "user"),
        ([{"role": "narrator"}], "user"),  # unknown role
        (["not a dict"], "user"),
        (None, "user"),
        ("a string", "user"),
    ],
)
def test_classify_chat(messages: Any, expected: str) -> None:
    assert classify_chat(messages) == expected


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ("just a prompt", "user"),
        ([{"role": "user", "content": "hi"}], "user"),
        ([{"type": "message", "role": "user", "content": "hi"}], "user"),
        ([{"role": "user"}, {"type": "function_call", "name": "f"}], "agent"),
        ([{"role": "user"}, {"type": "function_call_output", "output": "1"}], "agent"),
        ([{"role": "user"}, {"type": "custom_tool_call_output"}], "agent"),
        ([{"role": "user"}, {"type": "reasoning"}], "agent"),
        ([{"role": "user"}, {"type": "message", "role": "assistant"}], "agent"),
        ([{"type": "function_call_output"}, {"role": "developer", "content": "x"}], "agent"),
        ([{"role": "system", "content": "x"}], "user"),
        ([], "user"),
        ([42], "user"),
        (None, "user"),
    ],
)
def test_classify_responses(items: Any, expected: str) -> None:
    assert classify_responses(items) == expected


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "user", "content": "hi"}], "user"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}], "agent"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": "1"}],
                }
            ],
            "agent",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t", "content": "1"},
                        {"type": "text", "text": "and also"},
                    ],
                }
            ],
            "user",
        ),
        ([{"role": "user", "content": []}], "user"),
        ([], "user"),
        (["x"], "user"),
        (None, "user"),
    ],
)
def test_classify_messages(messages: Any, expected: str) -> None:
    assert classify_messages(messages) == expected


@pytest.mark.parametrize(
    ("header", "mode", "classified", "expected"),
    [
        ("agent", "auto", "user", "agent"),  # client header wins
        ("user", "agent", "agent", "user"),
        (" Agent ", "user", "user", "agent"),  # case and spaces tolerated
        ("bogus", "auto", "agent", "agent"),  # unknown header ignored
        (None, "user", "agent", "user"),  # account mode beats the classifier
        (None, "agent", "user", "agent"),
        (None, "always_user", "agent", "user"),  # legacy spellings
        (None, "always_agent", "user", "agent"),
        (None, "auto", "agent", "agent"),  # auto → classifier
        (None, "auto", "user", "user"),
        ("", "auto", "agent", "agent"),
    ],
)
def test_resolve_initiator(header: str | None, mode: str, classified: Any, expected: str) -> None:
    assert resolve_initiator(header, mode, classified) == expected


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([USER], False),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
            True,
        ),
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], True),
        ([{"role": "user", "content": [{"type": "image", "source": {}}]}], True),
        ([{"role": "user", "content": [{"type": "text", "text": "image_url"}]}], False),
        ([USER, {"role": "user", "content": [{"type": "image_url"}]}, ASSIST], True),
        ("nope", False),
        ([None, "x"], False),
    ],
)
def test_has_image(messages: Any, expected: bool) -> None:
    assert has_image(messages) is expected


# ------------------------------------------------------------------- Copilot headers


def test_build_headers_defaults() -> None:
    h = build_headers(AccountSettings(), "tid=abc", RequestInfo(request_id="r-1"))
    interaction = h.pop("X-Interaction-Id")  # derived from the request id: a UUID
    assert len(interaction) == 36 and interaction.count("-") == 4
    assert h == {
        "Authorization": "Bearer tid=abc",
        "Editor-Version": identity.EDITOR_VERSION,
        "Editor-Plugin-Version": identity.EDITOR_PLUGIN_VERSION,
        "User-Agent": identity.USER_AGENT,
        "Copilot-Integration-Id": identity.COPILOT_INTEGRATION_ID,
        "OpenAI-Intent": identity.OPENAI_INTENT,
        "X-GitHub-Api-Version": identity.GITHUB_API_VERSION,
        "X-VSCode-User-Agent-Library-Version": identity.USER_AGENT_LIBRARY,
        "X-Interaction-Type": identity.OPENAI_INTENT,
        "X-Request-Id": "r-1",
        "X-Initiator": "user",
    }


@pytest.mark.parametrize(
    ("settings", "info", "expected"),
    [
        (
            AccountSettings(editor_version="vscode/9.9.9", user_agent="UA/1"),
            RequestInfo(request_id="r"),
            {"Editor-Version": "vscode/9.9.9", "User-Agent": "UA/1"},
        ),
        (
            AccountSettings(
                copilot_integration_id="copilot-developer-cli", github_api_version="2030-01-01"
            ),
            RequestInfo(request_id="r", initiator="agent"),
            {
                "Copilot-Integration-Id": "copilot-developer-cli",
                "X-GitHub-Api-Version": "2030-01-01",
                "X-Initiator": "agent",
            },
        ),
        (
            AccountSettings(openai_intent="conversation-agent"),
            RequestInfo(request_id="r", intent="model-access"),
            {"OpenAI-Intent": "model-access"},  # per-request intent overrides the setting
        ),
        (
            AccountSettings(),
            RequestInfo(request_id="r", vision=True),
            {"Copilot-Vision-Request": "true"},
        ),
        (
            AccountSettings(),
            RequestInfo(request_id="r", extra={"X-Interaction-Type": "conversation-agent"}),
            {"X-Interaction-Type": "conversation-agent"},
        ),
    ],
)
def test_build_headers_overrides(
    settings: AccountSettings, info: RequestInfo, expected: dict[str, str]
) -> None:
    h = build_headers(settings, "tok", info)
    for k, v in expected.items():
        assert h[k] == v
    if not info.vision:
        assert "Copilot-Vision-Request" not in h
    assert h["Authorization"] == "Bearer tok"


def test_identity_headers_and_provider_headers_agree() -> None:
    acc = Account(id="a", settings=AccountSettings(editor_plugin_version="copilot-chat/1.0"))
    p = PROVIDERS["github-copilot"]
    info = RequestInfo(request_id="x", initiator="agent", vision=True)
    assert p.headers(acc, "t", info) == build_headers(acc.settings, "t", info, account_id="a")
    assert identity_headers(acc.settings)["Editor-Plugin-Version"] == "copilot-chat/1.0"
    mh = p.model_headers(acc, "t")
    assert mh["OpenAI-Intent"] == "model-access" and mh["Authorization"] == "Bearer t"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (
            "tid=1;ol=2;exp=3;sku=copilot_for_business_seat_quota;proxy-ep=proxy.business.githubcopilot.com;st=dotcom:abc",
            "https://api.business.githubcopilot.com",
        ),
        (
            "tid=1;proxy-ep=proxy.individual.githubcopilot.com:mac",
            "https://api.individual.githubcopilot.com",
        ),
        (
            "tid=1;proxy-ep=proxy.enterprise.githubcopilot.com",
            "https://api.enterprise.githubcopilot.com",
        ),
        ("tid=1;exp=3:mac", None),  # no proxy-ep
        ("tid=1;proxy-ep=copilot-proxy.example.com:mac", None),  # not proxy.*
        ("opaque", None),
        ("", None),
    ],
)
def test_api_base_from_token(token: str, expected: str | None) -> None:
    assert api_base_from_token(token) == expected


@pytest.mark.parametrize(
    ("base_url", "cred", "expected"),
    [
        (
            "https://custom.example/v1/",
            Credential("t", api_base="https://api.x"),
            "https://custom.example/v1",
        ),
        (
            None,
            Credential("t", api_base="https://api.individual.githubcopilot.com/"),
            "https://api.individual.githubcopilot.com",
        ),
        (
            None,
            Credential("tid=1;proxy-ep=proxy.business.githubcopilot.com:m"),
            "https://api.business.githubcopilot.com",
        ),
        (None, Credential("opaque"), DEFAULT_API_BASE),
        (None, None, DEFAULT_API_BASE),
    ],
)
def test_copilot_base_url(base_url: str | None, cred: Credential | None, expected: str) -> None:
    acc = Account(id="a", base_url=base_url)
    assert PROVIDERS["github-copilot"].base_url(acc, cred) == expected


# ---------------------------------------------------------------------------- Z.ai

THINKING = {"type": "enabled", "clear_thinking": False}


@pytest.mark.parametrize(
    ("body", "expected_thinking"),
    [
        ({"model": "glm-4.7", "messages": []}, THINKING),
        ({"model": "GLM-5.1"}, THINKING),
        ({"model": "zai/glm-4.5-air"}, THINKING),
        (
            {"model": "glm-4.7", "thinking": {"type": "disabled"}},
            {"type": "disabled"},
        ),  # client wins
        ({"model": "glm-4.7", "thinking": None}, None),  # explicitly set, even to null
        ({"model": "gpt-4.1"}, "absent"),
        ({"messages": []}, "absent"),
        ({"model": 42}, "absent"),
    ],
)
def test_inject_thinking(body: dict[str, Any], expected_thinking: Any) -> None:
    before = dict(body)
    out = inject_thinking(body)
    assert body == before  # the input is not mutated
    if expected_thinking == "absent":
        assert "thinking" not in out
    else:
        assert out["thinking"] == expected_thinking
    assert {k: v for k, v in out.items() if k != "thinking"} == {
        k: v for k, v in before.items() if k != "thinking"
    }


def test_injected_thinking_is_a_fresh_dict() -> None:
    a = inject_thinking({"model": "glm-4.7"})
    a["thinking"]["type"] = "disabled"
    assert inject_thinking({"model": "glm-4.7"})["thinking"] == THINKING


@pytest.mark.parametrize(
    ("model", "expected"), [("glm-4.6v", True), ("GLM-5", True), ("gpt-5", False), ("", False)]
)
def test_is_reasoning_model(model: str, expected: bool) -> None:
    assert is_reasoning_model(model) is expected


@pytest.mark.parametrize(
    ("pid", "default_base"),
    [
        ("zai-coding-plan", "https://api.z.ai/api/coding/paas/v4"),
        ("zai", "https://api.z.ai/api/paas/v4"),
        ("zhipuai-coding-plan", "https://open.bigmodel.cn/api/coding/paas/v4"),
        ("zhipuai", "https://open.bigmodel.cn/api/paas/v4"),
    ],
)
def test_zai_providers(pid: str, default_base: str) -> None:
    p = PROVIDERS[pid]
    assert p.id == pid and p.auth_kind == "api-key" and not p.needs_refresh()
    acc = Account(id="z", provider=pid, api_key="sk-1")
    assert p.base_url(acc, None) == default_base
    assert (
        p.base_url(Account(id="z", provider=pid, base_url="https://x/v4/"), None) == "https://x/v4"
    )
    assert p.token(acc) == "sk-1"
    assert p.headers(acc, "sk-1", RequestInfo(request_id="r"))["Authorization"] == "Bearer sk-1"
    assert p.transform_request({"model": "glm-4.7"})["thinking"] == THINKING
    assert "glm-4.7" in p.static_models


# ------------------------------------------------------- token exchange answers


@pytest.mark.parametrize(
    ("endpoints", "expected"),
    [
        (
            {"api": "https://api.enterprise.githubcopilot.com"},
            "https://api.enterprise.githubcopilot.com",
        ),
        ({"api": "http://127.0.0.1:9999"}, "http://127.0.0.1:9999"),
        ({"api": "api.example.com"}, None),  # not a URL: never used as one
        ({"api": 42}, None),
        ({}, None),
        (None, None),
    ],
)
def test_exchange_endpoint_is_read(endpoints: Any, expected: str | None) -> None:
    body: dict[str, Any] = {"token": "tid=1;proxy-ep=proxy.individual.githubcopilot.com:x"}
    body["expires_at"] = 2_000_000_000
    if endpoints is not None:
        body["endpoints"] = endpoints
    cred = gh.credential_from_exchange(200, json.dumps(body).encode())
    assert cred.api_base == expected
    # the endpoint the exchange named beats the proxy-ep guess
    base = PROVIDERS["github-copilot"].base_url(Account(id="a"), cred)
    assert base == (expected or "https://api.individual.githubcopilot.com")


def test_exchange_error_names_the_status() -> None:
    err = gh.exchange_error(500, b'{"message": "fake failure 500"}')
    assert str(err) == "Copilot token exchange failed: HTTP 500 (fake failure 500)"
    assert str(gh.exchange_error(502, b"")) == "Copilot token exchange failed: HTTP 502"

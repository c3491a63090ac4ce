"""Sticky-session keys and the session table (serve/sticky.py; no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokn_router.serve.call import Headers
from tokn_router.serve.sticky import SessionTable, claude_code_session, session_key

UUID = "c31ac7cf-56a7-4c0a-b363-2b726377687d"
LEGACY = "user_" + "ab" * 32 + "_account__session_" + UUID
JSON_ID = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": UUID})
SYSTEM = "You are a coding agent. SECRET-PROMPT-TEXT"


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        (LEGACY, UUID),
        ("user_x_account_1234_session_" + UUID, UUID),
        (JSON_ID, UUID),
        (json.dumps({"device_id": "d"}), None),
        ("{not json", None),
        ("same-user-across-chats", None),
        ("_session_", None),
        (None, None),
        (42, None),
    ],
)
def test_claude_code_session_part(user_id: Any, expected: str | None) -> None:
    assert claude_code_session(user_id) == expected


def chat(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": r, "content": c} for r, c in turns], **extra}


def key_of(headers: dict[str, str], body: dict[str, Any]) -> tuple[str, str, bool]:
    k = session_key(Headers(headers.items()), body)
    assert k is not None
    return k.key, k.source, k.follows


def test_sources_in_priority_order() -> None:
    body = chat(("user", "hi"), metadata={"user_id": LEGACY}, prompt_cache_key="pck-1")
    assert key_of({"X-Tokn-Session": "mine"}, body)[1] == "header"
    assert key_of({}, body)[1] == "claude_code"
    assert key_of({"x-claude-code-session-id": UUID}, chat(("user", "hi")))[1] == "claude_code"
    assert key_of({}, chat(("user", "hi"), prompt_cache_key="pck-1"))[1] == "codex"
    assert key_of({"session-id": "s1"}, chat(("user", "hi")))[1] == "codex"
    assert key_of({"session_id": "s1"}, chat(("user", "hi")))[1] == "codex"
    assert key_of({"x-session-id": "s1"}, chat(("user", "hi")))[1] == "opencode"
    assert key_of({}, chat(("user", "hi")))[1] == "prompt"
    assert session_key(Headers(), {"model": "m", "input": 5}) is None


def test_both_claude_code_forms_name_the_same_session() -> None:
    legacy = key_of({}, chat(("user", "a"), metadata={"user_id": LEGACY}))
    modern = key_of({}, chat(("user", "b"), metadata={"user_id": JSON_ID}))
    header = key_of({"x-claude-code-session-id": UUID}, chat(("user", "c")))
    assert legacy == modern == header


def test_keys_are_digests_never_raw_text() -> None:
    k, _, _ = key_of({}, chat(("system", SYSTEM), ("user", "SECRET-USER-TEXT")))
    assert len(k) == 32 and all(c in "0123456789abcdef" for c in k)
    explicit, _, _ = key_of({"X-Tokn-Session": "SECRET-ID"}, chat(("user", "x")))
    assert "SECRET" not in explicit


def test_prompt_hash_is_stable_across_turns_and_apis() -> None:
    first = key_of({}, chat(("system", SYSTEM), ("user", "fix the bug")))
    later = key_of(
        {},
        chat(("system", SYSTEM), ("user", "fix the bug"), ("assistant", "done"), ("user", "more")),
    )
    assert first[0] == later[0]
    assert first[2] is False and later[2] is True  # only a continuing request follows
    other = key_of({}, chat(("system", SYSTEM), ("user", "another task")))
    assert other[0] != first[0]
    # Anthropic: system at the top level, content blocks with cache hints
    messages = {
        "model": "m",
        "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "next"},
        ],
    }
    assert key_of({}, messages)[0] == first[0]
    # Responses: developer items, a string input
    responses = {
        "model": "m",
        "input": [
            {"type": "message", "role": "developer", "content": SYSTEM},
            {"type": "message", "role": "user", "content": "fix the bug"},
            {"type": "function_call_output", "call_id": "c", "output": "x"},
        ],
    }
    assert key_of({}, responses) == (first[0], "prompt", True)
    assert key_of({}, {"model": "m", "input": "one shot"})[2] is False


def test_table_binds_and_expires_idle_sessions() -> None:
    t = SessionTable()
    t.bind("k1", "alice", 100.0, idle=60)
    assert t.lookup("k1", 150.0, idle=60) == "alice"
    assert t.lookup("k1", 161.0, idle=60) is None  # idle past the limit
    assert len(t) == 0
    t.bind("k1", "alice", 200.0, idle=60)
    t.bind("k1", "bob", 230.0, idle=60)  # a switch rebinds
    assert t.lookup("k1", 280.0, idle=60) == "bob"
    t.bind("k2", "alice", 400.0, idle=60)  # binding sweeps what went idle
    assert len(t) == 1


def test_table_is_bounded() -> None:
    t = SessionTable(max_sessions=3)
    for i in range(5):
        t.bind(f"k{i}", "a", 100.0 + i, idle=3600)
    assert len(t) == 3
    assert t.lookup("k0", 110.0, idle=3600) is None
    assert t.lookup("k4", 110.0, idle=3600) == "a"

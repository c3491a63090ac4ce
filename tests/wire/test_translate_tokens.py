"""Offline token counting over whole Messages requests."""

from __future__ import annotations

import base64
import copy
import os
import struct
import subprocess
import sys
import zlib
from typing import Any

from tokn_router.wire.translate.tokens import count_text, count_tokens, image_tokens, tokenizer_name

BODY: dict[str, Any] = {
    "model": "claude-sonnet-4",
    "max_tokens": 1000,
    "system": [{"type": "text", "text": "You are a helpful coding agent."}],
    "messages": [{"role": "user", "content": "List the files in this repository, please."}],
}


def test_real_bpe_counts() -> None:
    # o200k_base ids are tiktoken's: these counts are exact, not estimates
    assert count_text("hello world") == 2
    assert count_text("hello world", "cl100k_base") == 2
    assert count_text("") == 0
    assert count_text("Hello, world! ünïcödé 🧠", "o200k_base") != len("Hello, world! ünïcödé 🧠")


def test_unknown_tokenizer_falls_back_to_o200k() -> None:
    assert tokenizer_name("p50k_base") == "o200k_base"
    assert tokenizer_name(None) == "o200k_base"
    assert tokenizer_name("cl100k_base") == "cl100k_base"
    assert count_tokens(BODY, "no-such-tokenizer") == count_tokens(BODY)


def test_count_is_deterministic_and_grows_with_content() -> None:
    n = count_tokens(BODY)
    assert n > 10
    assert count_tokens(copy.deepcopy(BODY)) == n
    longer = copy.deepcopy(BODY)
    longer["messages"].append({"role": "assistant", "content": "Sure: README.md, src/, tests/."})
    assert count_tokens(longer) > n
    more_system = copy.deepcopy(BODY)
    more_system["system"].append({"type": "text", "text": "Always answer in French. " * 20})
    assert count_tokens(more_system) > n + 100


def test_tools_and_tool_blocks_count() -> None:
    n = count_tokens(BODY)
    tools = copy.deepcopy(BODY)
    tools["tools"] = [
        {
            "name": "Bash",
            "description": "Run a shell command",
            "input_schema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"command": {"type": "string", "description": "The command"}},
            },
        }
    ]
    with_tools = count_tokens(tools)
    assert with_tools > n + 300  # tool prompt + definition
    tools["messages"] += [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls -la"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "a.py b.py"}],
                }
            ],
        },
    ]
    assert count_tokens(tools) > with_tools + 10


def test_thinking_counts_only_on_the_last_assistant_turn() -> None:
    thinking = {"type": "thinking", "thinking": "long deliberation " * 50, "signature": "s"}

    def conversation(first: list[dict[str, Any]], last: list[dict[str, Any]]) -> dict[str, Any]:
        body = copy.deepcopy(BODY)
        body["messages"] += [
            {"role": "assistant", "content": [*first, {"type": "text", "text": "ok"}]},
            {"role": "user", "content": "next"},
            {"role": "assistant", "content": [*last, {"type": "text", "text": "ok"}]},
        ]
        return body

    plain = count_tokens(conversation([], []))
    assert count_tokens(conversation([thinking], [])) == plain  # earlier turns: dropped
    assert count_tokens(conversation([], [thinking])) > plain + 50


def _png(w: int, h: int) -> str:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    return base64.b64encode(data + b"\0" * 32).decode()


def _jpeg(w: int, h: int) -> str:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\1\1\0\0\1\0\1\0\0"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\1\x11\0"
    return base64.b64encode(b"\xff\xd8" + app0 + sof + b"\xff\xd9").decode()


def test_image_tokens_from_headers() -> None:
    assert image_tokens({"type": "base64", "media_type": "image/png", "data": _png(200, 150)}) == 40
    assert (
        image_tokens({"type": "base64", "media_type": "image/jpeg", "data": _jpeg(750, 100)}) == 100
    )
    gif = base64.b64encode(b"GIF89a" + struct.pack("<HH", 75, 10) + b"\0" * 20).decode()
    assert image_tokens({"type": "base64", "media_type": "image/gif", "data": gif}) == 1
    assert (
        image_tokens({"type": "base64", "media_type": "image/png", "data": _png(4000, 4000)})
        == 1600
    )
    assert image_tokens({"type": "url", "url": "https://example.com/a.png"}) == 1600
    assert image_tokens({"type": "base64", "data": "not an image"}) == 1600
    body = copy.deepcopy(BODY)
    body["messages"][0]["content"] = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": _png(200, 150)},
        },
        {"type": "text", "text": "what is it"},
    ]
    assert count_tokens(body) >= 40


def test_counting_needs_no_network_and_loads_lazily() -> None:
    """The encoding ships inside the package: counting works with networking disabled."""
    code = (
        "import socket, sys\n"
        "def no_net(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.socket.connect = no_net\n"
        "socket.create_connection = no_net\n"
        "socket.getaddrinfo = no_net\n"
        "import tokn_router.wire.translate.tokens as t\n"
        "assert 'toktok' not in sys.modules, 'tokenizer imported at module import'\n"
        "print(t.count_text('hello world'), t.count_text('hello world', 'cl100k_base'))\n"
    )
    env = dict(
        os.environ,
        HOME="/nonexistent",
        XDG_CACHE_HOME="/nonexistent",
        TIKTOKEN_CACHE_DIR="/nonexistent",
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["2", "2"]

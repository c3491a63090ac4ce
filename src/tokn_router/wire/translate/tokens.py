"""Offline token counting for ``POST /v1/messages/count_tokens``.

Counts with a real BPE tokenizer from ``toktok-rs``: its encodings
(``o200k_base``, ``cl100k_base``, ``o200k_harmony``) are compiled into the
extension module, so nothing is downloaded at run time, and its ids are
identical to tiktoken's. The import and the vocabulary load (~0.5 s for
o200k) happen on first use only; :func:`warm_up` does it ahead of time.

What is counted: the system prompt, every message block (text, tool_use name
and input JSON, tool_result content, documents as the translator sends them,
thinking of the final assistant turn only, as Anthropic does), tool
definitions, plus small fixed per-message and tool-prompt overheads. Images
count as Anthropic bills them (width × height / 750 after its resizing), with
the size read from the image header.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Mapping
from typing import Any

import msgspec

from tokn_router.wire.translate.anthropic import document_text

DEFAULT_TOKENIZER = "o200k_base"
_KNOWN = frozenset({"o200k_base", "cl100k_base", "o200k_harmony"})

# Chat framing: role markers and separators per message, and the priming of
# the reply (the numbers OpenAI documents for its chat format).
_PER_MESSAGE = 3
_REPLY_PRIMING = 3
# Anthropic's tool-use system prompt (documented: 346 tokens for auto/none,
# 313 for any/tool on current models) and a little framing per tool.
_TOOLS_PROMPT = 346
_TOOLS_PROMPT_FORCED = 313
_PER_TOOL = 8
# An image whose size cannot be read (URL source): Anthropic's cap.
_IMAGE_MAX = 1600

_encode = msgspec.json.encode


def tokenizer_name(name: str | None) -> str:
    """The bundled encoding for ``name`` (a model's ``tokenizer``); o200k_base otherwise."""
    if name is not None and name in _KNOWN:
        return name
    return DEFAULT_TOKENIZER


def warm_up(tokenizer: str = DEFAULT_TOKENIZER) -> None:
    """Load the encoding now (call from a worker thread at start-up)."""
    _count([" "], tokenizer_name(tokenizer))


def _count(texts: list[str], encoding: str) -> int:
    import toktok  # lazy: keeps daemon start-up fast

    if not texts:
        return 0
    return sum(toktok.batch_count(texts, encoding, threads=1))


def count_text(text: str, tokenizer: str = DEFAULT_TOKENIZER) -> int:
    return _count([text], tokenizer_name(tokenizer))


def count_tokens(body: Mapping[str, Any], tokenizer: str = DEFAULT_TOKENIZER) -> int:
    """Input tokens of an Anthropic Messages request (as count_tokens answers)."""
    texts: list[str] = []
    fixed = _REPLY_PRIMING
    system = body.get("system")
    if isinstance(system, str) and system:
        texts.append(system)
        fixed += _PER_MESSAGE
    elif isinstance(system, list):
        for block in system:
            if isinstance(block, Mapping) and isinstance(block.get("text"), str):
                texts.append(block["text"])
        fixed += _PER_MESSAGE
    messages = body.get("messages")
    if isinstance(messages, list):
        last_assistant = max(
            (
                i
                for i, m in enumerate(messages)
                if isinstance(m, Mapping) and m.get("role") == "assistant"
            ),
            default=-1,
        )
        for i, msg in enumerate(messages):
            if not isinstance(msg, Mapping):
                continue
            fixed += _PER_MESSAGE
            content = msg.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                fixed += _blocks(content, texts, keep_thinking=i == last_assistant)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        choice = body.get("tool_choice")
        forced = isinstance(choice, Mapping) and choice.get("type") in ("any", "tool")
        fixed += _TOOLS_PROMPT_FORCED if forced else _TOOLS_PROMPT
        for tool in tools:
            if not isinstance(tool, Mapping):
                continue
            fixed += _PER_TOOL
            for key in ("name", "description"):
                if isinstance(tool.get(key), str):
                    texts.append(tool[key])
            schema = tool.get("input_schema")
            if isinstance(schema, Mapping):
                texts.append(_encode({k: v for k, v in schema.items() if k != "$schema"}).decode())
    return fixed + _count([t for t in texts if t], tokenizer_name(tokenizer))


def _blocks(blocks: list[Any], texts: list[str], *, keep_thinking: bool) -> int:
    """Append the countable text of content blocks; return image tokens."""
    images = 0
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "image":
            images += image_tokens(block.get("source"))
        elif kind == "tool_use":
            if isinstance(block.get("name"), str):
                texts.append(block["name"])
            texts.append(_encode(block.get("input", {})).decode())
        elif kind == "tool_result":
            content = block.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                images += _blocks(content, texts, keep_thinking=False)
        elif kind == "thinking" and keep_thinking and isinstance(block.get("thinking"), str):
            texts.append(block["thinking"])
        elif kind == "document":
            texts.append(document_text(block))
        elif kind == "search_result":
            inner = block.get("content")
            if isinstance(inner, list):
                images += _blocks(inner, texts, keep_thinking=False)
    return images


def image_tokens(source: Any) -> int:
    """Anthropic's image cost: ceil(w*h/750) after scaling the long edge to ≤1568."""
    size = None
    if (
        isinstance(source, Mapping)
        and source.get("type") == "base64"
        and isinstance(source.get("data"), str)
    ):
        size = _image_size(source["data"])
    if size is None:
        return _IMAGE_MAX
    w, h = size
    scale = min(1.0, 1568 / max(w, h))
    return max(1, min(_IMAGE_MAX, math.ceil(w * scale * h * scale / 750)))


def _image_size(b64: str) -> tuple[int, int] | None:
    """(width, height) from a base64 PNG, GIF, WebP or JPEG header."""
    try:
        head = base64.b64decode(b64[:64] + "=" * (-min(len(b64), 64) % 4), validate=False)
    except ValueError:
        return None
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return (w, h) if w and h else None
        if head[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", head[6:10])
            return (w, h) if w and h else None
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(b64)
    except struct.error:
        return None
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _jpeg_size(b64: str) -> tuple[int, int] | None:
    # The frame header (SOFn) follows APP segments such as EXIF: read up to 256 KiB.
    prefix = b64[: 256 * 1024 * 4 // 3]
    prefix = prefix[: len(prefix) - len(prefix) % 4]
    try:
        data = base64.b64decode(prefix, validate=False)
    except ValueError:
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (w, h) if w and h else None
        i += 2 + length
    return None

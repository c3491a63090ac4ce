"""What both stream translators share: reading chat-completions chunks.

:class:`ChatStreamTranslator` turns upstream chunks into a sequence of
*blocks* (thinking, text, tool call) that are opened, fed and closed one at a
time, and leaves the wire format to a subclass (Anthropic Messages or OpenAI
Responses events). Both target APIs stream one output block after the other,
while chat-completions deltas may interleave: several tool calls can stream
side by side (one chunk announces calls 0 and 1, later chunks carry arguments
for both). The policy, implemented once here:

* Before the first tool call, reasoning and text stream live; a change of kind
  closes the open block and opens the next.
* The first tool call streams live. From then on every other delta (further
  tool calls, late text or reasoning) is buffered and emitted, in order of
  first appearance, once the choice finishes. A tool call's arguments are thus
  never split across two blocks, whatever the interleaving, and the common
  sequential case still streams the first call as it is generated.
* ``reasoning_opaque`` seen while no thinking block is open is held: if
  reasoning text follows it becomes that block's signature, otherwise it is
  emitted as an opaque-only ("redacted") thinking block before the next block.

It is one module of over 400 lines because the chunk state machine is one piece:
splitting it would scatter the ordering rules stated above.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tokn_router.wire.sse import ChunkReader

BlockKind = Literal["thinking", "text", "tool"]

# Delta/message fields that carry reasoning, by upstream dialect: Copilot,
# Z.ai/DeepSeek, OpenRouter, Anthropic-style, Azure (each names it differently).
REASONING_TEXT_KEYS = (
    "reasoning_text",
    "reasoning_content",
    "reasoning",
    "thinking",
    "cot_summary",
)
REASONING_OPAQUE_KEYS = ("reasoning_opaque", "signature")


def first_str(obj: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """The first non-empty string value among ``keys`` ("" when none)."""
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str) and v:
            return v
    return ""


def str_or(v: Any, default: str = "") -> str:
    """``v`` when it is a non-empty string, else ``default``."""
    return v if isinstance(v, str) and v else default


def text_of(content: Any) -> str:
    """Text of a chat ``content`` (string, or a list of text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


@dataclass(slots=True)
class ChatUsage:
    """Chat-completions usage numbers (``prompt`` includes ``cached``)."""

    prompt: int = 0
    completion: int = 0
    cached: int = 0
    reasoning: int = 0
    total: int = 0

    @classmethod
    def parse(cls, usage: Any) -> ChatUsage | None:
        if not isinstance(usage, dict):
            return None
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        pd = usage.get("prompt_tokens_details")
        cd = usage.get("completion_tokens_details")
        cached = _int(pd.get("cached_tokens")) if isinstance(pd, dict) else 0
        reasoning = _int(cd.get("reasoning_tokens")) if isinstance(cd, dict) else 0
        total = _int(usage.get("total_tokens")) or prompt + completion
        return cls(prompt, completion, min(cached, prompt), reasoning, total)


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


@dataclass(slots=True, eq=False)
class Block:
    """One output block: a thinking/reasoning item, a text message or a tool call."""

    kind: BlockKind
    parts: list[str] = field(default_factory=list)  # text, reasoning or argument pieces
    signature: str = ""  # reasoning_opaque for thinking blocks
    tool_id: str = ""
    name: str = ""
    ordinal: int = -1  # position in the output once opened
    opened: bool = False
    redacted: bool = False  # thinking block with a signature and no text

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ChatStreamTranslator:
    """Base of the incremental chat-completions → client-API stream translators.

    Feed upstream chunk dicts (``feed``) or raw upstream bytes (``feed_bytes``);
    each call returns the SSE event bytes to send now. End with ``finish()`` at
    ``[DONE]``/end of body, or ``error(message)`` when the upstream fails
    mid-stream. After the end every call returns ``[]``.
    """

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._started = False
        self._ended = False
        self._content_done = False
        self._active: Block | None = None
        self._live_tool: Block | None = None
        self._tool_phase = False
        self._tools: dict[int, Block] = {}
        self._pending: list[Block] = []
        self._pending_opaque = ""
        self.blocks: list[Block] = []  # opened blocks, in output order
        self.finish_reason: str | None = None
        self.usage: ChatUsage | None = None
        self.upstream_model: str | None = None
        self._reader: ChunkReader | None = None

    # ---- public API -------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    def start(self) -> list[bytes]:
        """The opening events (also sent implicitly by the first ``feed``)."""
        self._ensure_started()
        return self._take()

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        if self._ended:
            return []
        self._ensure_started()
        err = chunk.get("error")
        if err is not None:
            self._fail_from_upstream(err)
            return self._take()
        if self.upstream_model is None and isinstance(chunk.get("model"), str) and chunk["model"]:
            self.upstream_model = chunk["model"]
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice)
        usage = ChatUsage.parse(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
            # Usage comes last (in the finish chunk or a choices-less chunk after
            # it): once both are known nothing else is expected.
            if self._content_done:
                self._end()
        return self._take()

    def feed_bytes(self, data: bytes) -> list[bytes]:
        """Feed raw upstream SSE bytes, split anywhere."""
        if self._reader is None:
            self._reader = ChunkReader()
        out: list[bytes] = []
        for chunk in self._reader.feed(data):
            out += self.feed(chunk)
        return out

    def finish(self) -> list[bytes]:
        """Upstream body ended: close everything and end the message.

        When fed bytes, a body that ended with neither ``[DONE]`` nor a
        ``finish_reason`` was cut off: that ends with the error event instead
        of passing for a complete answer. (Callers feeding chunk dicts make
        that call themselves and use ``error``.)
        """
        if self._ended:
            return []
        out: list[bytes] = []
        if self._reader is not None:
            for chunk in self._reader.close():
                out += self.feed(chunk)
            if self._ended:
                return out
            if not self._reader.done and self.finish_reason is None:
                return out + self.error("upstream stream ended before the response was complete")
        self._ensure_started()
        if not self._content_done:
            self._close_content()
        self._end()
        return out + self._take()

    def error(self, message: str, *, status: int = 502, code: str | None = None) -> list[bytes]:
        """Upstream failed after the stream started: end with the API's error event.

        Open blocks are deliberately *not* closed first: clients take a block
        as final when it is closed (Claude Code runs a closed tool_use), so a
        half-received block must die with the error.
        """
        self._fail(message, status, code)
        return self._take()

    # ---- subclass hooks -----------------------------------------------------

    def _on_start(self) -> None:
        raise NotImplementedError

    def _on_open(self, block: Block) -> None:
        raise NotImplementedError

    def _on_delta(self, block: Block, piece: str) -> None:
        raise NotImplementedError

    def _on_close(self, block: Block) -> None:
        raise NotImplementedError

    def _on_end(self) -> None:
        raise NotImplementedError

    def _on_error(self, message: str, status: int, code: str | None) -> None:
        raise NotImplementedError

    # ---- chunk handling -----------------------------------------------------

    def _fail(self, message: str, status: int, code: str | None) -> None:
        if not self._ended:
            self._ended = True
            self._on_error(message, status, code)

    def _ensure_started(self) -> None:
        if not self._started and not self._ended:
            self._started = True
            self._on_start()

    def _take(self) -> list[bytes]:
        out = self._out
        if out:
            self._out = []
        return out

    def _fail_from_upstream(self, err: Any) -> None:
        message = "upstream error"
        code: str | None = None
        status = 502
        if isinstance(err, dict):
            m = err.get("message")
            if isinstance(m, str) and m:
                message = m
            c = err.get("code")
            code = c if isinstance(c, str) else None
            if (
                c in ("rate_limited", "rate_limit_exceeded")
                or err.get("type") == "rate_limit_error"
            ):
                status = 429
        elif isinstance(err, str) and err:
            message = err
        self._fail(message, status, code)

    def _choice(self, choice: dict[str, Any]) -> None:
        if self._content_done:
            return
        delta = choice.get("delta")
        if isinstance(delta, dict) and delta:
            reasoning = first_str(delta, REASONING_TEXT_KEYS)
            if reasoning:
                self._reasoning(reasoning)
            opaque = first_str(delta, REASONING_OPAQUE_KEYS)
            if opaque:
                self._opaque(opaque)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text(content)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._text(refusal)
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for pos, tc in enumerate(tool_calls):
                    if isinstance(tc, dict):
                        self._tool(tc, pos)
        fr = choice.get("finish_reason")
        if isinstance(fr, str) and fr:
            self.finish_reason = fr
            self._close_content()

    def _pending_block(self, kind: BlockKind) -> Block:
        if self._pending and self._pending[-1].kind == kind:
            return self._pending[-1]
        b = Block(kind)
        self._pending.append(b)
        return b

    def _reasoning(self, text: str) -> None:
        if self._tool_phase:
            self._pending_block("thinking").parts.append(text)
            return
        b = self._active
        if b is None or b.kind != "thinking":
            b = Block("thinking", signature=self._pending_opaque)
            self._pending_opaque = ""
            self._switch_to(b)
        b.parts.append(text)
        self._on_delta(b, text)

    def _opaque(self, sig: str) -> None:
        if self._tool_phase:
            self._pending_block("thinking").signature += sig
        elif self._active is not None and self._active.kind == "thinking":
            self._active.signature += sig
        else:
            self._pending_opaque += sig

    def _text(self, text: str) -> None:
        if self._tool_phase:
            self._pending_block("text").parts.append(text)
            return
        b = self._active
        if b is None or b.kind != "text":
            b = Block("text")
            self._switch_to(b)
        b.parts.append(text)
        self._on_delta(b, text)

    def _tool(self, tc: dict[str, Any], pos: int) -> None:
        idx = tc.get("index")
        if not isinstance(idx, int):
            idx = pos
        fn = tc.get("function")
        fn = fn if isinstance(fn, dict) else {}
        tid, name, args = tc.get("id"), fn.get("name"), fn.get("arguments")
        b = self._tools.get(idx)
        if b is None:
            b = Block("tool")
            self._tools[idx] = b
            if self._tool_phase:
                self._pending.append(b)
            else:
                self._tool_phase = True
                self._close_active()
                self._live_tool = b
        if isinstance(tid, str) and tid and not b.tool_id:
            b.tool_id = tid
        if isinstance(name, str) and name and not b.name:
            b.name = name
        if not isinstance(args, str) or not args:
            args = ""
        if b is not self._live_tool:
            if args:
                b.parts.append(args)
        elif b.opened:
            if args:
                b.parts.append(args)
                self._on_delta(b, args)
        else:
            if args:
                b.parts.append(args)
            # A tool block can only start once its name is known.
            if b.name:
                self._open(b)
                for piece in b.parts:
                    self._on_delta(b, piece)

    # ---- block lifecycle ----------------------------------------------------

    def _open(self, b: Block) -> None:
        if b.kind == "tool" and not b.tool_id:
            b.tool_id = new_id("call_")
        if b.kind == "thinking" and not b.parts and b.signature:
            b.redacted = True
        b.ordinal = len(self.blocks)
        b.opened = True
        self.blocks.append(b)
        self._active = b
        self._on_open(b)

    def _close_active(self) -> None:
        b = self._active
        if b is not None:
            self._active = None
            self._on_close(b)
        if self._pending_opaque:
            # An opaque reasoning blob that no reasoning text claimed.
            r = Block("thinking", signature=self._pending_opaque)
            self._pending_opaque = ""
            self._open(r)
            self._active = None
            self._on_close(r)

    def _switch_to(self, b: Block) -> None:
        self._close_active()
        self._open(b)

    def _close_content(self) -> None:
        """The choice is finished: close the live block and flush the buffered ones."""
        self._content_done = True
        live = self._live_tool
        if live is not None and not live.opened:
            self._open(live)
            for piece in live.parts:
                self._on_delta(live, piece)
        self._close_active()
        for b in self._pending:
            if b.kind != "tool" and not b.parts and not b.signature:
                continue
            self._open(b)
            if b.parts and not b.redacted:
                self._on_delta(b, b.text)
            self._active = None
            self._on_close(b)
        self._pending = []

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._on_end()

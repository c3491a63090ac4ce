"""Added cost of the agent-API translation per streamed event (issue 9, target ≤ 20 µs).

Not part of the test suite. Usage::

    python bench/agents_micro.py                     # 200-event streams, text and tool call
    python bench/agents_micro.py --events 1000 --repeat 50

Every variant is fed the same upstream chat-completions SSE body, one upstream
read per event (what the relay sees with a real upstream), through the exact
stream transform the daemon uses for it:

- ``chat pass-through``: ``sse.ChatStreamRelay`` (``/v1/chat/completions``), the baseline
- ``messages translated`` / ``responses translated``: ``api.agents.TranslatedStream``
  around ``ChatToMessagesStream`` / ``ChatToResponsesStream``
- ``messages native`` / ``responses native``: the byte-for-byte relay of a native
  upstream stream with usage scanning (fed that API's own events)

Reported: CPU µs per upstream event (best of ``--repeat`` runs) and the cost
added on top of chat pass-through in the same run. Everything else on the
request path (hypercorn, the upstream client, the pump) is the same for all
variants, so this difference is the translation's cost.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from tokn_router.serve.agents import (
    NativeMessagesStream,
    NativeResponsesStream,
    TranslatedStream,
)
from tokn_router.wire.sse import ChatStreamRelay
from tokn_router.wire.translate import ChatToMessagesStream, ChatToResponsesStream

TARGET_US = 20.0
_SAFE = {"filtered": False, "severity": "safe"}
_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


def _data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return _data(
        {
            "choices": [
                {
                    "content_filter_results": _FILTER,
                    "delta": delta,
                    "finish_reason": finish,
                    "index": 0,
                    "logprobs": None,
                }
            ],
            "created": 1749821284,
            "id": "chatcmpl-bench",
            "model": "gpt-4.1-2025-04-14",
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_bench",
            "usage": None,
        }
    )


def chat_events(n: int, *, tool: bool) -> list[bytes]:
    """A Copilot-shaped chat stream: prelude, n deltas, finish, usage."""
    out = [
        _data(
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER}],
            }
        )
    ]
    if tool:
        first = {
            "index": 0,
            "id": "call_bench",
            "type": "function",
            "function": {"name": "exec_command", "arguments": ""},
        }
        out.append(_chunk({"role": "assistant", "content": None, "tool_calls": [first]}))
        for i in range(n):
            piece = '{"cmd":"' if i == 0 else ("x" if i < n - 1 else '"}')
            out.append(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        for i in range(n):
            delta: dict[str, Any] = {"content": f"word{i} "}
            if i == 0:
                delta["role"] = "assistant"
            out.append(_chunk(delta))
    out.append(_chunk({}, "tool_calls" if tool else "stop"))
    usage = {
        "completion_tokens": n,
        "completion_tokens_details": {"reasoning_tokens": 0},
        "prompt_tokens": 900,
        "prompt_tokens_details": {"cached_tokens": 0},
        "total_tokens": 900 + n,
    }
    out.append(_data({"choices": [], "created": 0, "id": "", "model": "", "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out


def _sse(name: str, obj: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + _data({"type": name, **obj})


def messages_events(n: int) -> list[bytes]:
    usage = {"input_tokens": 900, "cache_read_input_tokens": 0, "output_tokens": 1}
    msg = {"id": "msg_b", "type": "message", "role": "assistant", "model": "claude-sonnet-4.5"}
    out = [
        _sse("message_start", {"message": {**msg, "content": [], "usage": usage}}),
        _sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    for i in range(n):
        delta = {"type": "text_delta", "text": f"word{i} "}
        out.append(_sse("content_block_delta", {"index": 0, "delta": delta}))
    out.append(_sse("content_block_stop", {"index": 0}))
    out.append(
        _sse("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": n}})
    )
    out.append(_sse("message_stop", {}))
    return out


def responses_events(n: int) -> list[bytes]:
    resp = {"id": "resp_b", "object": "response", "created_at": 1, "model": "gpt-4.1"}
    seq = iter(range(10**9))
    out = [_sse("response.created", {"sequence_number": next(seq), "response": resp})]
    for i in range(n):
        out.append(
            _sse(
                "response.output_text.delta",
                {
                    "sequence_number": next(seq),
                    "item_id": "msg_b",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": f"word{i} ",
                },
            )
        )
    usage = {"input_tokens": 900, "output_tokens": n, "total_tokens": 900 + n}
    done = {**resp, "status": "completed", "usage": usage}
    out.append(_sse("response.completed", {"sequence_number": next(seq), "response": done}))
    return out


Transform = Any  # api.streaming.StreamTransform


def run(make: Callable[[], Transform], events: list[bytes], repeat: int) -> float:
    """Best-of-``repeat`` CPU µs per upstream event for one whole stream."""
    best = float("inf")
    for _ in range(repeat):
        t = make()
        start = time.process_time_ns()
        for ev in events:
            t.feed(ev)
        t.flush()
        best = min(best, (time.process_time_ns() - start) / 1000 / len(events))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200, help="content events per stream")
    ap.add_argument("--repeat", type=int, default=30, help="runs per variant (best kept)")
    args = ap.parse_args()
    n, repeat = args.events, args.repeat
    request = {"model": "gpt-4.1", "input": "x", "tools": []}

    def messages() -> TranslatedStream:
        return TranslatedStream(ChatToMessagesStream("claude-sonnet-4-5"), b"error")

    def responses() -> TranslatedStream:
        return TranslatedStream(ChatToResponsesStream("gpt-4.1", request), b"response.failed")

    def chat() -> ChatStreamRelay:
        return ChatStreamRelay(drop_usage_chunk=False)

    failed = False
    for label, tool in (("text", False), ("tool call", True)):
        events = chat_events(n, tool=tool)
        base = run(chat, events, repeat)
        print(f"\n{label} stream, {len(events)} upstream events, best of {repeat}")
        print(f"  {'variant':<24}{'µs/event':>10}{'added':>10}")
        print(f"  {'chat pass-through':<24}{base:>10.2f}{'':>10}")
        for name, make in (("messages translated", messages), ("responses translated", responses)):
            cost = run(make, events, repeat)
            added = cost - base
            flag = "" if added <= TARGET_US else f"  over the {TARGET_US:.0f} µs target"
            failed = failed or added > TARGET_US
            print(f"  {name:<24}{cost:>10.2f}{added:>+10.2f}{flag}")
    print(f"\nnative relays ({n} content events, byte for byte with usage scanning)")
    native_m = run(NativeMessagesStream, messages_events(n), repeat)
    native_r = run(lambda: NativeResponsesStream("gpt-4.1", request), responses_events(n), repeat)
    print(f"  {'messages native':<24}{native_m:>10.2f}")
    print(f"  {'responses native':<24}{native_r:>10.2f}")
    print(f"\ntarget: ≤ {TARGET_US:.0f} µs added per event: {'FAILED' if failed else 'met'}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()

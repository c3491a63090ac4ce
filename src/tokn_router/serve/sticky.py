"""Sticky sessions: the requests of one conversation go to the same account.

Moving a conversation between accounts throws away the upstream prompt cache
(cached tokens bill cheaper) and invalidates thinking signatures, so the
relay keeps each conversation on the account that served it while that
account is healthy, and switches only on failure (or when the account fell
below its ``reserve_percent`` and another one has room).

:func:`session_key` reads the conversation from what agents send, first match wins:

* ``X-Tokn-Session`` (explicit);
* Claude Code: ``metadata.user_id`` - the JSON string with ``session_id``, or
  the older ``user_<hash>_account_<uuid>_session_<uuid>`` - then its
  ``x-claude-code-session-id`` header;
* Codex: ``prompt_cache_key``, then its ``session-id`` / ``session_id`` header;
* opencode: ``x-session-id``;
* otherwise a hash of the first messages (system prompt + first user
  message). Such a key only *follows* a binding when the request continues a
  conversation (there are turns after the first user message): identical
  one-shot prompts keep the round robin.

Keys are SHA-256 digests: no raw prompt text or client id is ever stored,
logged or written to the ledger. :class:`SessionTable` maps keys to accounts
and forgets a session idle for ``[pool] sticky_idle_secs``.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# An explicit id longer than this is not an id: hash what fits, ignore the rest.
_MAX_ID = 512
_MAX_SESSIONS = 50_000  # bound memory against a client inventing a key per request


class HeaderLookup(Protocol):
    def get(self, name: str, default: str | None = None) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SessionKey:
    key: str  # a digest, safe to store
    source: str  # header | claude_code | codex | opencode | prompt
    follows: bool = True  # may follow an existing binding (False: a conversation's first turn)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "source": self.source}
        if not self.follows:
            out["new"] = True
        return out


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def _explicit(source: str, value: str | None) -> SessionKey | None:
    if not isinstance(value, str):
        return None
    value = value.strip()[:_MAX_ID]
    if not value:
        return None
    return SessionKey(_digest(source, value), source)


def claude_code_session(user_id: Any) -> str | None:
    """The session part of Claude Code's ``metadata.user_id`` (either form)."""
    if not isinstance(user_id, str) or not user_id:
        return None
    text = user_id.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        sid = data.get("session_id") if isinstance(data, dict) else None
        return sid if isinstance(sid, str) and sid else None
    head, sep, sid = text.rpartition("_session_")
    return sid if sep and head and sid else None


def _text(content: Any) -> str:
    """Message content as comparable text (strings, or the text of content blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping):
                t = block.get("text")
                if isinstance(t, str):
                    parts.append(t)
                else:
                    # images, tool calls: their JSON, minus volatile cache hints
                    parts.append(
                        json.dumps(
                            {k: v for k, v in block.items() if k != "cache_control"},
                            sort_keys=True,
                            default=str,
                        )
                    )
        return "\n".join(parts)
    if content is None:
        return ""
    return json.dumps(content, sort_keys=True, default=str)


def _prompt_key(body: Mapping[str, Any]) -> SessionKey | None:
    """The hash of the system prompt and the first user message, for any of the three APIs."""
    system: list[str] = []
    for key in ("system", "instructions"):  # Messages, Responses
        if body.get(key):
            system.append(_text(body[key]))
    items: Any = body.get("messages")
    if items is None:
        items = body.get("input")
    if isinstance(items, str):  # a Responses string input: one user turn
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        return None
    first_user: str | None = None
    later = 0
    for item in items:
        if not isinstance(item, Mapping):
            continue
        role = item.get("role")
        if first_user is None:
            if role in ("system", "developer"):
                system.append(_text(item.get("content")))
            elif role == "user":
                first_user = _text(item.get("content"))
            continue
        later += 1
    if first_user is None:
        return None
    return SessionKey(_digest("prompt", *system, "\0user", first_user), "prompt", later > 0)


def session_key(headers: HeaderLookup, body: Mapping[str, Any]) -> SessionKey | None:
    """The conversation a request belongs to (None: nothing to go by)."""
    key = _explicit("header", headers.get("x-tokn-session"))
    if key:
        return key
    meta = body.get("metadata")
    if isinstance(meta, Mapping):
        key = _explicit("claude_code", claude_code_session(meta.get("user_id")))
        if key:
            return key
    key = _explicit("claude_code", headers.get("x-claude-code-session-id"))
    if key:
        return key
    pck = body.get("prompt_cache_key")
    key = _explicit("codex", pck if isinstance(pck, str) else None)
    if key:
        return key
    for name in ("session-id", "session_id"):
        key = _explicit("codex", headers.get(name))
        if key:
            return key
    key = _explicit("opencode", headers.get("x-session-id"))
    if key:
        return key
    return _prompt_key(body)


class SessionTable:
    """Session key -> account id, forgetting sessions idle for ``idle`` seconds."""

    def __init__(self, max_sessions: int = _MAX_SESSIONS) -> None:
        # oldest use first, so expiry and the size bound drop from the front
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._max = max_sessions

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, now: float, idle: float) -> str | None:
        """The account of a live session (its idle clock is not reset by a lookup)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now - entry[1] > idle:
            del self._entries[key]
            return None
        return entry[0]

    def bind(self, key: str, account_id: str, now: float, idle: float) -> None:
        """Record that the session was (just) served by ``account_id``."""
        self._entries[key] = (account_id, now)
        self._entries.move_to_end(key)
        self.expire(now, idle)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def expire(self, now: float, idle: float) -> None:
        while self._entries:
            key, (_, used) = next(iter(self._entries.items()))
            if now - used <= idle:
                break
            del self._entries[key]


__all__ = ["SessionKey", "SessionTable", "claude_code_session", "session_key"]

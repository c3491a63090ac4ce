"""Responses API tools as chat functions, and the way back to client names.

See the naming rules in :mod:`tokn_router.wire.translate.responses`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from tokn_router.wire.translate.errors import TranslationError

_decode = msgspec.json.decode

CUSTOM_TOOL_PARAM = "input"
_MAX_NAME = 64
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class ToolRef:
    """A client tool behind one chat function name."""

    name: str
    namespace: str | None = None
    custom: bool = False


def flat_tool_name(namespace: str, name: str) -> str:
    """The chat function name of tool ``name`` inside ``namespace``."""
    flat = namespace + ("" if namespace.endswith("_") else "__") + name
    flat = _BAD_NAME_CHARS.sub("_", flat)
    if len(flat) > _MAX_NAME:
        digest = hashlib.sha1(f"{namespace}\0{name}".encode()).hexdigest()[:8]
        flat = flat[: _MAX_NAME - 9] + "_" + digest
    return flat


class ToolMap:
    """The request's tools as chat functions, and the way back to client names.

    Built from the Responses ``tools`` list; ``strict`` raises
    :class:`TranslationError` on malformed entries (request path), otherwise
    they are skipped (answer path: the request was validated already).
    """

    __slots__ = ("by_wire", "chat_tools")

    def __init__(self, tools: Any, *, strict: bool = False) -> None:
        self.chat_tools: list[dict[str, Any]] = []
        self.by_wire: dict[str, ToolRef] = {}
        if tools is None:
            return
        if not isinstance(tools, list):
            if strict:
                raise TranslationError("tools: must be a list", "tools")
            return
        for k, tool in enumerate(tools):
            if not isinstance(tool, Mapping):
                if strict:
                    raise TranslationError(f"tools.{k}: must be an object", f"tools.{k}")
                continue
            kind = tool.get("type")
            if kind in ("function", "custom"):
                self._add(tool, None, f"tools.{k}", strict, None)
            elif kind == "namespace":
                ns = tool.get("name")
                nested = tool.get("tools")
                if not isinstance(ns, str) or not ns or not isinstance(nested, list):
                    if strict:
                        raise TranslationError(
                            f"tools.{k}: a namespace tool needs name and tools", f"tools.{k}"
                        )
                    continue
                ns_desc = tool.get("description")
                for j, sub in enumerate(nested):
                    if isinstance(sub, Mapping) and sub.get("type", "function") in (
                        "function",
                        "custom",
                    ):
                        # The group's description rides on its first tool only.
                        extra = ns_desc if j == 0 and isinstance(ns_desc, str) and ns_desc else None
                        self._add(sub, ns, f"tools.{k}.tools.{j}", strict, extra)
            # hosted tools (web_search, file_search, mcp, …): nothing to call locally

    def _add(
        self,
        tool: Mapping[str, Any],
        namespace: str | None,
        where: str,
        strict: bool,
        group_desc: str | None,
    ) -> None:
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            if strict:
                raise TranslationError(f"{where}.name: field required", f"{where}.name")
            return
        custom = tool.get("type") == "custom"
        wire = flat_tool_name(namespace, name) if namespace else name
        self.by_wire[wire] = ToolRef(name, namespace, custom)
        desc = tool.get("description")
        desc = desc if isinstance(desc, str) else ""
        if group_desc:
            desc = f"{desc}\n\n(Tool group {namespace}: {group_desc})".strip()
        params: Any
        if custom:
            params = _custom_parameters(tool.get("format"))
            desc = (desc + "\n\n" if desc else "") + (
                f"This tool takes free-form text: pass it verbatim as the string argument "
                f"`{CUSTOM_TOOL_PARAM}`."
            )
        else:
            params = tool.get("parameters")
            if not isinstance(params, Mapping):
                params = {"type": "object", "properties": {}}
        fn: dict[str, Any] = {"name": wire, "parameters": params}
        if desc:
            fn["description"] = desc
        self.chat_tools.append({"type": "function", "function": fn})

    def wire(self, name: str, namespace: Any = None) -> str:
        """The chat function name for a client tool (as echoed in input items)."""
        if isinstance(namespace, str) and namespace:
            return flat_tool_name(namespace, name)
        return name

    def ref(self, wire: str) -> ToolRef:
        return self.by_wire.get(wire) or ToolRef(wire)


def _custom_parameters(fmt: Any) -> dict[str, Any]:
    desc = "The raw input text."
    if isinstance(fmt, Mapping) and fmt.get("type") == "grammar":
        definition = fmt.get("definition")
        syntax = fmt.get("syntax") or "lark"
        if isinstance(definition, str) and definition:
            desc = f"The raw input. It must conform to this {syntax} grammar:\n{definition}"
    return {
        "type": "object",
        "properties": {CUSTOM_TOOL_PARAM: {"type": "string", "description": desc}},
        "required": [CUSTOM_TOOL_PARAM],
        "additionalProperties": False,
    }


def custom_input(arguments: str) -> str:
    """The freeform input inside a custom tool's chat arguments."""
    try:
        value = _decode(arguments)
    except msgspec.DecodeError:
        return arguments  # the model ignored the schema: hand over what it wrote
    if isinstance(value, dict):
        v = value.get(CUSTOM_TOOL_PARAM)
        if isinstance(v, str):
            return v
        strings = [x for x in value.values() if isinstance(x, str)]
        if len(value) == 1 and strings:
            return strings[0]
    return arguments


def tool_choice(choice: Any, tools: ToolMap) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        name = choice.get("name")
        if kind in ("function", "custom") and isinstance(name, str) and name:
            return {
                "type": "function",
                "function": {"name": tools.wire(name, choice.get("namespace"))},
            }
        if kind == "allowed_tools" and choice.get("mode") in ("auto", "required"):
            return choice["mode"]
    return None  # hosted-tool choices and unknown shapes: upstream default (auto)

"""How deeply a JSON text nests, found by a byte scan before anything decodes it.

msgspec (like the standard library's ``json``) decodes nested arrays and
objects by recursion and has no depth option: a body nested a few thousand
levels deep raises ``RecursionError``, and anything that later walks or
re-encodes a merely deep body recurses as far. So a client body is measured
first and refused past :data:`MAX_DEPTH`: far deeper than any real request
(tool schemas nest a few dozen levels at most), far below the interpreter's
recursion limit.

The scan agrees with a decoder on every valid prefix of the input: escapes and
strings are removed the way a JSON tokenizer reads them, so brackets inside
strings never count. Past the first invalid byte the two may disagree, but a
decoder stops there with its own error. Pure functions; nothing here does I/O.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate

__all__ = ["MAX_DEPTH", "depth", "too_deep"]

MAX_DEPTH = 256

_DROP = bytes(b for b in range(256) if b not in b'[]{}"')
_STRINGS = re.compile(rb'"[^"]*"')
_SQUARE = bytes.maketrans(b"{}", b"[]")
_STEPS = bytes.maketrans(b"[]", b"\x01\xff")  # +1 / -1 as signed bytes
# Peeling every innermost "[]" lowers the depth by at most one and costs one C-speed
# pass; a few passes shrink what is left to walk element by element.
_PEELS = 8


def _brackets(raw: bytes) -> bytes:
    """Only the brackets outside strings, all as ``[`` and ``]``."""
    # Escapes first, left to right as a tokenizer reads them: escaped backslashes,
    # then escaped quotes. A string is then "..." with no quote inside.
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = _STRINGS.sub(b"", text.translate(None, _DROP))
    return kept.replace(b'"', b"").translate(_SQUARE)


def _max_prefix(brackets: bytes) -> int:
    if not brackets:
        return 0
    return max(0, max(accumulate(array("b", brackets.translate(_STEPS)))))


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (0 for a scalar)."""
    return _max_prefix(_brackets(raw))


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests deeper than ``limit`` levels."""
    # A body with few brackets cannot nest deeply: most requests stop here.
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _brackets(raw)
    peeled, passes = brackets, 0
    while passes < _PEELS:
        shorter = peeled.replace(b"[]", b"")
        if len(shorter) == len(peeled):
            break
        peeled, passes = shorter, passes + 1
    found = _max_prefix(peeled)  # the true depth is in [found, found + passes]
    if found > limit:
        return True
    if found + passes <= limit:
        return False
    return _max_prefix(brackets) > limit

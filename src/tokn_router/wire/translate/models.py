"""Model-id resolution for the agent endpoints.

Clients ask for ids the upstream spells differently: Claude Code sends
Anthropic ids (``claude-sonnet-4-5-20250929``, ``claude-3-5-haiku-latest``)
while Copilot lists ``claude-sonnet-4.5`` / ``claude-3.5-haiku``.
:func:`resolve_model` applies the ``[model_aliases]`` table, then an exact
match, then this normalisation; a miss gets a 404 naming :func:`closest_ids`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping

# trailing snapshot dates: -20250929, -2024-08-06, @20250929 (Vertex style)
_DATE_SUFFIX = re.compile(r"(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2})$")
# Anthropic spells versions with a dash (4-5, 3-5), Copilot with a dot (4.5, 3.5)
_DASH_VERSION = re.compile(r"(?<=-)(\d{1,2})-(\d{1,2})(?=-|$)")


def _strip_suffixes(model: str) -> str:
    prev = None
    while prev != model:
        prev = model
        model = _DATE_SUFFIX.sub("", model)
        model = model.removesuffix("-latest")
    return model


def normalise_model_id(model: str) -> list[str]:
    """Candidate upstream spellings of ``model``, most specific first."""
    out: list[str] = []
    base = _strip_suffixes(model)
    for cand in (model, base):
        if cand.startswith("claude-"):
            out.append(_DASH_VERSION.sub(r"\1.\2", cand))
        out.append(cand)
    return list(dict.fromkeys(c for c in out if c))


def resolve_model(
    requested: str,
    available_ids: Collection[str],
    aliases: Mapping[str, str] | None = None,
) -> str | None:
    """The upstream id to use for ``requested``, or None when nothing matches.

    Order: a ``[model_aliases]`` entry (its target then resolved the same way,
    one level deep), an exact id, the normalised spellings, then a
    case-insensitive match. Provider prefixes (``copilot/…``) are the caller's
    business: strip them before calling.
    """
    if aliases:
        target = aliases.get(requested)
        if target is None:
            low = requested.lower()
            target = next((v for k, v in aliases.items() if k.lower() == low), None)
        if target is not None:
            return _match(target, available_ids)
    return _match(requested, available_ids)


def _match(model: str, available: Collection[str]) -> str | None:
    if model in available:
        return model
    for cand in normalise_model_id(model):
        if cand in available:
            return cand
    lowered = {a.lower(): a for a in available}
    for cand in normalise_model_id(model.lower()):
        if cand in lowered:
            return lowered[cand]
    return None


def closest_ids(requested: str, available: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` available ids that look like ``requested`` (for a 404 message)."""
    ids = sorted(set(available))
    if not ids:
        return []
    probe = normalise_model_id(requested.lower())[0]
    by_lower = {i.lower(): i for i in ids}
    hits = difflib.get_close_matches(probe, list(by_lower), n=n, cutoff=0.4)
    if not hits:
        # same family (the part before the first dash) beats nothing
        family = probe.split("-", 1)[0]
        hits = [i for i in by_lower if i.startswith(family)][:n]
    return [by_lower[h] for h in hits]

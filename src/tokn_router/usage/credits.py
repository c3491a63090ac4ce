"""What a request cost in Copilot AI credits: measured, or estimated from list prices.

Copilot bills usage in AI credits (1 credit = $0.01). When an answer says what
it cost (``copilot_usage.total_nano_aiu``, 1 credit = 1e9 nano-AIU), that is the
*measured* cost. Otherwise the cost is *estimated* from the packaged models.dev
prices (:func:`tokn_router.accounts.models_meta.cost`, USD per million tokens):

    fresh input x input + cache reads x cache_read + cache writes x cache_write
    + output x output  (reasoning tokens are part of output)

where a missing cache price falls back to the input price, and a model's tiered
prices apply (to the whole request, as models.dev describes them) once its input
exceeds the tier's size. Only Copilot accounts are estimated: other providers
do not bill in credits. An estimate is a list-price figure, not a bill:
multipliers, discounts and included allowances are not known here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokn_router.accounts import models_meta

NANO_AIU_PER_CREDIT = 1_000_000_000
CREDITS_PER_USD = 100  # 1 credit = $0.01
# Providers whose usage is billed in AI credits.
CREDIT_PROVIDERS = frozenset({"github-copilot"})
_DIGITS = 6  # a millionth of a credit: far below anything billed


def measured(nano_aiu: int) -> float:
    """Credits of a measured cost."""
    return round(nano_aiu / NANO_AIU_PER_CREDIT, 9)


def _price(table: Mapping[str, Any], key: str, fallback: float) -> float:
    v = table.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else fallback


def _tier(cost: Mapping[str, Any], input_tokens: int) -> Mapping[str, Any]:
    """The prices for a request of ``input_tokens``: the largest tier it exceeds, else base."""
    chosen: Mapping[str, Any] = cost
    best = -1
    tiers = cost.get("tiers")
    for t in tiers if isinstance(tiers, list) else ():
        spec = t.get("tier") if isinstance(t, Mapping) else None
        size = spec.get("size") if isinstance(spec, Mapping) else None
        if isinstance(size, int) and input_tokens > size > best:
            chosen, best = {**cost, **t}, size
    return chosen


def estimate(
    provider_id: str | None,
    model: str | None,
    *,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None = None,
    cache_write: int | None = None,
) -> float | None:
    """Estimated credits of one request, or None (not a Copilot row, no counts, no price)."""
    if provider_id not in CREDIT_PROVIDERS or not model:
        return None
    if input_tokens is None and output_tokens is None:
        return None
    cost = models_meta.cost(provider_id, model)
    if cost is None:
        return None
    inp = max(input_tokens or 0, 0)
    read = min(max(cache_read or 0, 0), inp)
    write = min(max(cache_write or 0, 0), inp - read)
    prices = _tier(cost, inp)
    p_in = _price(prices, "input", 0.0)
    usd_per_million = (
        (inp - read - write) * p_in
        + read * _price(prices, "cache_read", p_in)
        + write * _price(prices, "cache_write", p_in)
        + max(output_tokens or 0, 0) * _price(prices, "output", 0.0)
    )
    return round(usd_per_million / 1_000_000 * CREDITS_PER_USD, _DIGITS)


__all__ = ["CREDITS_PER_USD", "CREDIT_PROVIDERS", "NANO_AIU_PER_CREDIT", "estimate", "measured"]

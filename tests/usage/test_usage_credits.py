"""Credits per request: measured from upstream, or estimated from the packaged prices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokn_router.accounts import models_meta
from tokn_router.usage import RequestRecord, open_db
from tokn_router.usage.credits import estimate, measured
from tokn_router.usage.queries import format_text, query, report_json
from tokn_router.usage.record import to_row
from tokn_router.usage.writer import insert_records


def test_measured_is_nano_aiu_over_a_billion() -> None:
    assert measured(1_000_000_000) == 1.0
    assert measured(2_345_678_901) == 2.345678901
    assert measured(0) == 0.0


def _est(model: str, provider: str = "github-copilot", **counts: Any) -> float | None:
    counts.setdefault("input_tokens", None)
    counts.setdefault("output_tokens", None)
    return estimate(provider, model, **counts)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        # gpt-4.1 lists 2 input / 0.5 cache read / 8 output USD per 1M; 1 credit = $0.01
        ("plain", {"input_tokens": 1_000_000, "output_tokens": 0}, 200.0),
        ("output", {"input_tokens": 0, "output_tokens": 1_000_000}, 800.0),
        (
            "cache reads are part of input, at their own price",
            {"input_tokens": 1_000_000, "output_tokens": 0, "cache_read": 600_000},
            (400_000 * 2 + 600_000 * 0.5) / 1e6 * 100,
        ),
        (
            "no cache_write price: input price",
            {"input_tokens": 1_000_000, "output_tokens": 0, "cache_write": 1_000_000},
            200.0,
        ),
        (
            "a cache count above input is clamped",
            {"input_tokens": 10, "output_tokens": 0, "cache_read": 99},
            10 * 0.5 / 1e6 * 100,
        ),
        ("input unknown, output known", {"output_tokens": 1000}, 0.8),
    ],
)
def test_estimate_from_list_prices(name: str, kwargs: dict[str, Any], expected: float) -> None:
    assert _est("gpt-4.1", **kwargs) == pytest.approx(expected)


def test_estimate_anthropic_cache_write_price_and_spelling() -> None:
    # claude-sonnet-4.5: 3 in / 0.3 read / 3.75 write / 15 out; Anthropic-style id accepted
    got = _est(
        "claude-sonnet-4-5-20250929",
        input_tokens=1110,
        output_tokens=7,
        cache_read=100,
        cache_write=1000,
    )
    assert got == round((10 * 3 + 100 * 0.3 + 1000 * 3.75 + 7 * 15) / 1e6 * 100, 6)


def test_estimate_uses_the_tier_above_its_size() -> None:
    cost = models_meta.cost("github-copilot", "gemini-2.5-pro")
    assert cost is not None and cost["tiers"][0]["tier"]["size"] == 200_000
    small = _est("gemini-2.5-pro", input_tokens=200_000, output_tokens=0)
    large = _est("gemini-2.5-pro", input_tokens=200_001, output_tokens=0)
    assert small == pytest.approx(200_000 * 1.25 / 1e6 * 100)
    assert large == pytest.approx(200_001 * 2.5 / 1e6 * 100)  # the whole request re-priced


@pytest.mark.parametrize(
    ("provider", "model", "counts"),
    [
        ("zai", "glm-4.6", {"input_tokens": 100, "output_tokens": 10}),  # not billed in credits
        (None, "gpt-4.1", {"input_tokens": 100, "output_tokens": 10}),
        ("github-copilot", "no-such-model", {"input_tokens": 100, "output_tokens": 10}),
        ("github-copilot", "claude-sonnet-5", {"input_tokens": 100}),  # listed, no price
        ("github-copilot", "gpt-4.1", {}),  # no token counts: nothing to price
    ],
)
def test_no_estimate(provider: str | None, model: str, counts: dict[str, Any]) -> None:
    counts.setdefault("input_tokens", None)
    counts.setdefault("output_tokens", None)
    assert estimate(provider, model, **counts) is None


def _record(i: int, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "ts": 1_800_000_000 + i,
        "started_at_ms": (1_800_000_000 + i) * 1000,
        "request_id": f"c{i}",
        "endpoint": "/v1/responses",
        "model": "gpt-4.1",
        "account_id": "work",
        "provider_id": "github-copilot",
        "status": 200,
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    fields.update(kw)
    return RequestRecord(**fields)


def test_row_carries_measured_or_estimated_credits_never_both() -> None:
    measured_row = json.loads(to_row(_record(1, nano_aiu=3_000_000_000))[11])
    assert measured_row["nano_aiu"] == 3_000_000_000 and measured_row["credits"] == 3.0
    assert "credits_est" not in measured_row
    est_row = json.loads(to_row(_record(2, upstream_model="gpt-4.1-2025-04-14"))[11])
    assert est_row["credits_est"] == 0.28  # (1000 x 2 + 100 x 8) / 1e6 USD x 100
    assert "credits" not in est_row and "nano_aiu" not in est_row
    bare = json.loads(to_row(_record(3, input_tokens=None, output_tokens=None))[11])
    assert not {"credits", "credits_est", "nano_aiu"} & set(bare)


def test_report_sums_measured_and_estimated_apart(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = open_db(path)
    try:
        insert_records(
            conn,
            [
                _record(1, nano_aiu=2_500_000_000),
                _record(2, nano_aiu=500_000_000, model="claude-sonnet-4.5"),
                _record(3),  # estimated: 0.28
                _record(4, model="claude-sonnet-5"),  # no price: unpriced
                _record(5, account_id="z", provider_id="zai", model="glm-4.6"),  # not credits
            ],
        )
        report = query(conn, path)
    finally:
        conn.close()
    data = report_json(report)
    t = data["totals"]
    assert (t["credits"], t["credits_measured_requests"]) == (3.0, 2)
    assert (t["credits_estimated"], t["credits_estimated_requests"]) == (0.28, 1)
    assert t["credits_unpriced_requests"] == 1
    work = next(a for a in data["by_account"] if a["account_id"] == "work")
    assert work["credits"] == 3.0 and work["credits_estimated"] == 0.28
    by_model = {m["model"]: m for m in data["by_model"]}
    assert by_model["gpt-4.1"]["credits"] == 2.5
    assert by_model["gpt-4.1"]["credits_estimated"] == 0.28
    assert by_model["claude-sonnet-4.5"]["credits"] == 0.5
    assert by_model["claude-sonnet-5"]["credits_unpriced_requests"] == 1
    assert by_model["glm-4.6"]["credits_unpriced_requests"] == 0
    text = format_text(report)
    assert (
        "Credits: 3.00 measured (2 requests) + ~0.28 estimated (1 request); "
        "1 Copilot request not priced"
    ) in text
    assert "By account:" in text and "By model:" in text

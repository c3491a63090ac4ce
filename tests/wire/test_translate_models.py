"""Model-id resolution: aliases, exact ids, Anthropic-style normalisation, 404 hints."""

from __future__ import annotations

import pytest

from tokn_router.wire.translate.models import closest_ids, normalise_model_id, resolve_model

COPILOT_IDS = [
    "claude-sonnet-4",
    "claude-sonnet-4.5",
    "claude-opus-4.1",
    "claude-haiku-4.5",
    "claude-3.5-haiku",
    "claude-3.7-sonnet",
    "gpt-5-mini",
    "gpt-4.1",
    "gpt-4o-2024-11-20",
    "gemini-2.5-pro",
]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4.5"),
        ("claude-sonnet-4-5", "claude-sonnet-4.5"),
        ("claude-sonnet-4-5-latest", "claude-sonnet-4.5"),
        ("claude-sonnet-4.5", "claude-sonnet-4.5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4", "claude-sonnet-4"),
        ("claude-3-5-haiku-20241022", "claude-3.5-haiku"),
        ("claude-3-5-haiku-latest", "claude-3.5-haiku"),
        ("claude-3-7-sonnet-20250219", "claude-3.7-sonnet"),
        ("claude-opus-4-1@20250805", "claude-opus-4.1"),
        ("claude-haiku-4-5", "claude-haiku-4.5"),
        ("Claude-Sonnet-4-5", "claude-sonnet-4.5"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("gpt-4o-2024-11-20", "gpt-4o-2024-11-20"),  # exact wins over stripping
        ("claude-opus-4-5", None),  # normalised id not served: no guess
        ("gpt-5", None),
        ("", None),
    ],
)
def test_resolve_without_aliases(requested: str, expected: str | None) -> None:
    assert resolve_model(requested, set(COPILOT_IDS)) == expected


def test_aliases_come_first_and_are_normalised_too() -> None:
    aliases = {
        "claude-3-5-haiku-latest": "gpt-5-mini",
        "claude-sonnet-4-5": "claude-opus-4-1",
        "x": "nope",
    }
    assert resolve_model("claude-3-5-haiku-latest", COPILOT_IDS, aliases) == "gpt-5-mini"
    assert resolve_model("CLAUDE-3-5-HAIKU-LATEST", COPILOT_IDS, aliases) == "gpt-5-mini"
    assert resolve_model("claude-sonnet-4-5", COPILOT_IDS, aliases) == "claude-opus-4.1"
    # an alias to something unavailable is a miss, not a fall-through
    assert resolve_model("x", [*COPILOT_IDS, "x"], aliases) is None
    # unaliased ids resolve as usual
    assert resolve_model("claude-sonnet-4-5-20250929", COPILOT_IDS, aliases) == "claude-sonnet-4.5"


def test_normalise_candidates() -> None:
    assert normalise_model_id("claude-sonnet-4-5-20250929") == [
        "claude-sonnet-4.5-20250929",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4.5",
        "claude-sonnet-4-5",
    ]
    assert normalise_model_id("gpt-4o") == ["gpt-4o"]


def test_closest_ids() -> None:
    assert closest_ids("claude-sonnet-4-6", COPILOT_IDS)[0] == "claude-sonnet-4.5"
    assert closest_ids("claude-opus-4-5-20251101", COPILOT_IDS, n=1) == ["claude-opus-4.1"]
    assert len(closest_ids("claude-x", COPILOT_IDS, n=3)) <= 3
    assert closest_ids("gpt-6", COPILOT_IDS, n=2)[0].startswith("gpt-")
    assert closest_ids("zzz", []) == []

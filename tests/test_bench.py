"""The benchmark harness runs (``python -m bench --quick``) and reports every figure.

Timings are never asserted here: the bench judges them, the test only keeps the
harness from rotting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

# Figures of one upstream configuration (the TLS one as is, the plain one with the
# prefix "plain_"), classified by hand so that the test checks the report's list.
_TRIO = ("direct", "floor", "router")


def _each(base: str, *suffixes: str) -> tuple[str, ...]:
    return tuple(f"{base}_{s}" for s in suffixes)


# Counts (of failures): present and exactly an int >= 0.
CONFIG_ERROR_FIGURES = (
    "nonstream_errors_floor",
    "nonstream_errors_router",
    "stream_errors_floor",
    "stream_errors_router",
    *_each("c200x2_errors", *_TRIO),
    *_each("c1000_errors", *_TRIO),
    "c1000_listen_overflows",
    "paced300_errors_floor",
    "paced300_errors_router",
    *_each("paced500_errors", *_TRIO),
)

# Measured (a number > 0) on every run.
CONFIG_POSITIVE_FIGURES = (
    "startup_s",
    "startup_cpu_s",
    "idle_rss_mb",
    "floor_idle_rss_mb",
    *(
        key
        for base in (
            "nonstream_p50_ms",
            "nonstream_p99_ms",
            "stream_ttfe_p50_ms",
            "stream_ttfe_p99_ms",
            "stream_total_p50_ms",
            "stream_total_p99_ms",
        )
        for key in _each(base, *_TRIO, "ratio", "vs_floor")
    ),
    "cpu_per_request_ms",
    "cpu_per_request_ms_floor",
    "cpu_per_request_vs_floor",
    "cpu_per_stream_ms_c1",
    "cpu_per_stream_ms_c1_floor",
    "cpu_per_event_us_c1",
    "cpu_per_event_us_c1_floor",
    "cpu_per_event_c1_vs_floor",
    *_each("c200x2_streams_per_s", *_TRIO),
    *_each("c200x2_events_per_s", *_TRIO),
    "c200x2_peak_rss_mb",
    "c200x2_peak_rss_mb_floor",
    "cpu_per_stream_ms_c200",
    "cpu_per_stream_ms_c200_floor",
    "cpu_per_event_us_c200",
    "cpu_per_event_us_c200_floor",
    "cpu_per_event_c200_vs_floor",
    "cpu_per_event_growth",
    "cpu_per_event_growth_floor",
    *_each("c1000_streams_per_s", *_TRIO),
    *_each("c1000_events_per_s", *_TRIO),
    "c1000_peak_rss_mb",
    "c1000_peak_rss_mb_floor",
    *_each("paced1_total_s", *_TRIO),
    "cpu_per_event_us_paced1",
    "cpu_per_event_us_paced1_floor",
    "cpu_per_event_paced1_vs_floor",
    *_each("paced300_wall_s", *_TRIO),
    "paced300_peak_rss_mb",
    "cpu_per_event_us_paced300",
    "cpu_per_event_us_paced300_floor",
    *_each("paced500_gap_p99_ms", *_TRIO),
    *_each("paced500_total_p99_s", *_TRIO),
    "paced500_peak_rss_mb",
    "paced500_peak_rss_mb_floor",
    "cpu_per_event_us_paced500",
    "cpu_per_event_us_paced500_floor",
    "cpu_per_event_paced500_vs_floor",
    "paced_cpu_growth",
    "paced_cpu_growth_floor",
)

# Present and a number, of either sign (a difference of two noisy percentiles).
CONFIG_SIGNED_FIGURES = ("paced500_added_gap_p99_ms", "paced500_added_gap_p99_ms_floor")

# Through the MITM proxy (CONNECT + TLS) of a `serve --with-proxy` daemon (TLS only).
PROXY_POSITIVE_FIGURES = (
    "with_proxy_startup_s",
    "with_proxy_idle_rss_mb",
    *(
        f"proxy_{fig}_{suffix}"
        for fig in (
            "nonstream_p50",
            "nonstream_p99",
            "stream_ttfe_p50",
            "stream_ttfe_p99",
            "stream_total_p50",
            "stream_total_p99",
            "newconn_p50",
            "newconn_p99",
        )
        for suffix in ("ms_direct", "ms_router", "ms_mitm", "ratio", "vs_router")
    ),
    *(
        f"proxy_newhost_{q}_{suffix}"
        for q in ("p50", "p99")
        for suffix in ("ms_mitm", "ratio", "vs_router")
    ),
    "proxy_tls_p50_ms_knownhost",
    "proxy_tls_p50_ms_newhost",
)
PROXY_ERROR_FIGURES = ("proxy_errors_direct", "proxy_errors_router", "proxy_errors_mitm")

# CPU figures of tiny quick runs: possibly 0 when measured in 10 ms clock ticks.
NONNEGATIVE_FIGURES = (
    "proxy_nonstream_cpu_per_request_ms_router",
    "proxy_nonstream_cpu_per_request_ms_mitm",
    "proxy_nonstream_client_cpu_per_request_us_direct",
    "proxy_nonstream_client_cpu_per_request_us_router",
    "proxy_nonstream_client_cpu_per_request_us_mitm",
    "proxy_stream_cpu_per_stream_ms_router",
    "proxy_stream_cpu_per_stream_ms_mitm",
    "proxy_stream_cpu_per_event_us_router",
    "proxy_stream_cpu_per_event_us_mitm",
    "proxy_stream_client_cpu_per_event_us_direct",
    "proxy_stream_client_cpu_per_event_us_router",
    "proxy_stream_client_cpu_per_event_us_mitm",
    "proxy_newconn_cpu_per_request_ms_router",
    "proxy_newconn_cpu_per_request_ms_mitm",
    "proxy_newhost_cpu_per_request_ms_mitm",
)


def _both(keys: tuple[str, ...]) -> tuple[str, ...]:
    return keys + tuple("plain_" + k for k in keys)


ERROR_FIGURES = _both(CONFIG_ERROR_FIGURES) + PROXY_ERROR_FIGURES
POSITIVE_FIGURES = _both(CONFIG_POSITIVE_FIGURES) + PROXY_POSITIVE_FIGURES
SIGNED_FIGURES = _both(CONFIG_SIGNED_FIGURES)

PHASES = ("nonstream", "stream", "c200x2", "c1000", "paced1", "paced300", "paced500")
PROXY_PHASES = {
    "proxy_nonstream": ("direct", "router", "mitm"),
    "proxy_stream": ("direct", "router", "mitm"),
    "proxy_newconn": ("direct", "router", "mitm", "mitm_newhost"),
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "target(s) missed" in proc.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.timeout(150)
def test_quick_run_reports_every_figure(quick_run: dict[str, Any]) -> None:
    from bench.report import FIGURE_KEYS, PLAIN_FIGURE_KEYS, PROXY_FIGURE_KEYS

    figs = quick_run["figures"]
    expected = (
        set(ERROR_FIGURES) | set(POSITIVE_FIGURES) | set(SIGNED_FIGURES) | set(NONNEGATIVE_FIGURES)
    )
    assert expected == set(FIGURE_KEYS) | set(PLAIN_FIGURE_KEYS) | set(PROXY_FIGURE_KEYS)
    assert set(figs) == expected
    for key in ERROR_FIGURES:
        assert isinstance(figs[key], int) and figs[key] >= 0, (key, figs[key])
    for key in POSITIVE_FIGURES:
        value = figs[key]
        assert isinstance(value, int | float) and value > 0, (key, value)
    for key in SIGNED_FIGURES:
        assert isinstance(figs[key], int | float), (key, figs[key])
    for key in NONNEGATIVE_FIGURES:
        value = figs[key]
        assert isinstance(value, int | float) and value >= 0, (key, value)


@pytest.mark.timeout(150)
def test_quick_run_phases_and_targets(quick_run: dict[str, Any]) -> None:
    # both upstream configurations ran: HTTPS (as Copilot is reached) and plain HTTP
    assert quick_run["meta"]["configs"] == ["tls", "plain"]
    phases = quick_run["phases"]
    for config_phases in (phases, quick_run["phases_plain"]):
        for name in PHASES:
            phase = config_phases[name]
            for target in _TRIO:
                s = phase[target]
                assert s["requests"] > 0
                # every request either completed or was counted as an error
                assert s["completed"] + s["errors"] == s["requests"], (name, target, s)
                assert s["wall_s"] > 0
                assert s["client_cpu_s"] >= 0 and s["fake_cpu_s"] >= 0
            # the relays' CPU is measured, DIRECT has none
            assert phase["router"]["proxy_cpu_s"] > 0 and phase["floor"]["proxy_cpu_s"] > 0
            assert phase["direct"]["proxy_cpu_s"] is None
            if phase["load"]["stream"]:
                per_stream = phase["load"]["chunks"] + 4
                for target in _TRIO:
                    s = phase[target]
                    if s["errors"] == 0:
                        assert s["events"] == s["completed"] * per_stream, (name, target)
    assert not any(name.startswith("proxy_") for name in quick_run["phases_plain"])
    # the MITM-proxy phases ran (the daemon has --with-proxy), every target without errors
    assert quick_run["meta"]["daemon_has_with_proxy"] is True
    for name, targets in PROXY_PHASES.items():
        phase = phases[name]
        assert "skipped" not in phase, phase
        for target in targets:
            s = phase[target]
            assert s["requests"] > 0 and s["errors"] == 0, (name, target, s)
            assert s["completed"] == s["requests"]
            if target == "direct":
                assert s["proxy_cpu_s"] is None
            else:
                assert s["proxy_cpu_s"] >= 0
        if phase["load"]["stream"]:
            per_stream = phase["load"]["chunks"] + 4
            for target in targets:
                assert phase[target]["events"] == phase[target]["completed"] * per_stream
    # one TLS handshake per tunnel: one warm tunnel per run, one per request on new ones
    assert phases["proxy_nonstream"]["mitm"]["tunnels"] == phases["proxy_nonstream"]["rounds"]
    assert phases["proxy_nonstream"]["router"]["tunnels"] == 0
    newconn = phases["proxy_newconn"]
    for target in ("mitm", "mitm_newhost"):
        assert newconn[target]["tunnels"] == newconn[target]["requests"]
        assert newconn[target]["connect_p50_ms"] > 0 and newconn[target]["tls_p50_ms"] > 0
    assert newconn["router"]["tls_p50_ms"] is None
    assert [t["name"] for t in quick_run["targets"]]
    for t in quick_run["targets"]:
        assert t["met"] in (True, False), t
    meta = quick_run["meta"]
    assert meta["quick"] is True
    assert meta["nproc"] >= 1 and meta["python"]
    startup = quick_run["startup"]
    assert startup["startup_runs_s"] and all(x > 0 for x in startup["startup_runs_s"])

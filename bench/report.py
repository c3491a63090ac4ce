"""Statistics, the flat figures, the targets of issue 6 and the printed table."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------- stats


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), None for no values."""
    if not values:
        return None
    s = sorted(values)
    if len(s) == 1:
        return float(s[0])
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclass
class RunResult:
    """One target in one round of one phase (workers merged)."""

    target: str
    round: int
    requests: int
    completed: int = 0
    events: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    first_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    gaps_us: list[int] = field(default_factory=list)
    connect_ms: list[float] = field(default_factory=list)  # tunnels: TCP connect -> CONNECT 200
    tls_ms: list[float] = field(default_factory=list)  # tunnels: CONNECT 200 -> handshake done
    daemon_cpu_s: float | None = None
    daemon_sys_s: float | None = None  # the kernel's part of daemon_cpu_s
    fake_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_busy_s: float = 0.0  # every CPU of the machine, during the measurement window
    window_s: float = 0.0
    listen_overflows: int = 0  # machine-wide TcpExt ListenOverflows during the window
    peak_rss_mb: float | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def brief(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "round": self.round,
            "requests": self.requests,
            "completed": self.completed,
            "errors": self.error_count,
            "error_kinds": self.errors,
            "events": self.events,
            "wall_s": _r(self.wall_s, 4),
            "daemon_cpu_s": _r(self.daemon_cpu_s, 3),
            "daemon_sys_s": _r(self.daemon_sys_s, 3),
            "fake_cpu_s": _r(self.fake_cpu_s, 3),
            "client_cpu_s": _r(self.client_cpu_s, 3),
            "machine_busy_s": _r(self.machine_busy_s, 3),
            "window_s": _r(self.window_s, 3),
            "listen_overflows": self.listen_overflows,
            "peak_rss_mb": _r(self.peak_rss_mb, 1),
        }


def summarize(runs: list[RunResult]) -> dict[str, Any]:
    """Pool the rounds of one target of one phase."""
    first = [x for r in runs for x in r.first_ms]
    total = [x for r in runs for x in r.total_ms]
    gaps = [x for r in runs for x in r.gaps_us]
    connect = [x for r in runs for x in r.connect_ms]
    tls = [x for r in runs for x in r.tls_ms]
    requests = sum(r.requests for r in runs)
    completed = sum(r.completed for r in runs)
    events = sum(r.events for r in runs)
    wall = sum(r.wall_s for r in runs)
    errors: dict[str, int] = {}
    for r in runs:
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    cpus = [r.daemon_cpu_s for r in runs if r.daemon_cpu_s is not None]
    cpu = sum(cpus) if cpus else None
    sys_s = sum(r.daemon_sys_s or 0.0 for r in runs) if cpus else None
    client_cpu = sum(r.client_cpu_s for r in runs)
    fake_cpu = sum(r.fake_cpu_s for r in runs)
    busy = sum(r.machine_busy_s for r in runs)
    rss = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    ours = client_cpu + fake_cpu + (cpu or 0.0)
    gp50, gp99 = percentile(gaps, 50), percentile(gaps, 99)
    return {
        "rounds": len(runs),
        "requests": requests,
        "completed": completed,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "events": events,
        "wall_s": _r(wall, 4),
        "wall_per_round_s": [_r(r.wall_s, 3) for r in runs],
        "wall_median_s": _r(median([r.wall_s for r in runs]), 3),
        "requests_per_s": _r(_div(completed, wall), 1),
        "events_per_s": _r(_div(events, wall), 0),
        "first_p50_ms": _r(percentile(first, 50)),
        "first_p99_ms": _r(percentile(first, 99)),
        "total_p50_ms": _r(percentile(total, 50)),
        "total_p99_ms": _r(percentile(total, 99)),
        "total_max_ms": _r(max(total) if total else None),
        "tunnels": len(tls),
        "connect_p50_ms": _r(percentile(connect, 50)),
        "tls_p50_ms": _r(percentile(tls, 50)),
        "tls_p99_ms": _r(percentile(tls, 99)),
        "gap_p50_ms": _r(None if gp50 is None else gp50 / 1000),
        "gap_p99_ms": _r(None if gp99 is None else gp99 / 1000),
        "gap_max_ms": _r(max(gaps) / 1000 if gaps else None),
        "proxy_cpu_s": _r(cpu),
        "proxy_sys_share": _r(_div(sys_s, cpu), 3),
        "cpu_per_request_ms": _r(_div(cpu, requests / 1000.0)),
        "cpu_per_event_us": _r(_div(cpu, events / 1e6) if events else None, 2),
        "client_cpu_s": _r(client_cpu),
        "client_cpu_per_event_us": _r(_div(client_cpu, events / 1e6) if events else None, 2),
        "client_cpu_per_request_us": _r(_div(client_cpu, requests / 1e6), 1),
        "fake_cpu_s": _r(fake_cpu),
        "other_cpu_s": _r(max(0.0, busy - ours)),
        "window_s": _r(sum(r.window_s for r in runs), 3),
        "listen_overflows": sum(r.listen_overflows for r in runs),
        "peak_rss_mb": _r(max(rss) if rss else None, 1),
    }


# -------------------------------------------------------------------------- figures

# The figures of one upstream configuration, in table order. The TLS
# configuration's keys are these; the plain one's carry the prefix ``plain_``.
# ``_direct`` / ``_floor`` / ``_router``: the target measured; ``_ratio`` =
# router ÷ DIRECT, ``_vs_floor`` = router ÷ floor; a CPU figure without a target
# suffix is tokn-router's.
TRIO = ("direct", "floor", "router")


def _trio(base: str, *, ratio: bool = True, vs_floor: bool = True) -> tuple[str, ...]:
    keys = tuple(f"{base}_{t}" for t in TRIO)
    return (
        keys + ((f"{base}_ratio",) if ratio else ()) + ((f"{base}_vs_floor",) if vs_floor else ())
    )


CONFIG_FIGURE_KEYS: tuple[str, ...] = (
    "startup_s",
    "startup_cpu_s",
    "idle_rss_mb",
    "floor_idle_rss_mb",
    *_trio("nonstream_p50_ms"),
    *_trio("nonstream_p99_ms"),
    "nonstream_errors_floor",
    "nonstream_errors_router",
    "cpu_per_request_ms",
    "cpu_per_request_ms_floor",
    "cpu_per_request_vs_floor",
    *_trio("stream_ttfe_p50_ms"),
    *_trio("stream_ttfe_p99_ms"),
    *_trio("stream_total_p50_ms"),
    *_trio("stream_total_p99_ms"),
    "stream_errors_floor",
    "stream_errors_router",
    "cpu_per_stream_ms_c1",
    "cpu_per_stream_ms_c1_floor",
    "cpu_per_event_us_c1",
    "cpu_per_event_us_c1_floor",
    "cpu_per_event_c1_vs_floor",
    *_trio("c200x2_streams_per_s", ratio=False, vs_floor=False),
    *_trio("c200x2_events_per_s", ratio=False, vs_floor=False),
    *_trio("c200x2_errors", ratio=False, vs_floor=False),
    "c200x2_peak_rss_mb",
    "c200x2_peak_rss_mb_floor",
    "cpu_per_stream_ms_c200",
    "cpu_per_stream_ms_c200_floor",
    "cpu_per_event_us_c200",
    "cpu_per_event_us_c200_floor",
    "cpu_per_event_c200_vs_floor",
    "cpu_per_event_growth",
    "cpu_per_event_growth_floor",
    *_trio("c1000_streams_per_s", ratio=False, vs_floor=False),
    *_trio("c1000_events_per_s", ratio=False, vs_floor=False),
    *_trio("c1000_errors", ratio=False, vs_floor=False),
    "c1000_peak_rss_mb",
    "c1000_peak_rss_mb_floor",
    "c1000_listen_overflows",
    *_trio("paced1_total_s", ratio=False, vs_floor=False),
    "cpu_per_event_us_paced1",
    "cpu_per_event_us_paced1_floor",
    "cpu_per_event_paced1_vs_floor",
    *_trio("paced300_wall_s", ratio=False, vs_floor=False),
    "paced300_errors_floor",
    "paced300_errors_router",
    "paced300_peak_rss_mb",
    "cpu_per_event_us_paced300",
    "cpu_per_event_us_paced300_floor",
    *_trio("paced500_errors", ratio=False, vs_floor=False),
    *_trio("paced500_gap_p99_ms", ratio=False, vs_floor=False),
    "paced500_added_gap_p99_ms",
    "paced500_added_gap_p99_ms_floor",
    *_trio("paced500_total_p99_s", ratio=False, vs_floor=False),
    "paced500_peak_rss_mb",
    "paced500_peak_rss_mb_floor",
    "cpu_per_event_us_paced500",
    "cpu_per_event_us_paced500_floor",
    "cpu_per_event_paced500_vs_floor",
    "paced_cpu_growth",
    "paced_cpu_growth_floor",
)

FIGURE_KEYS: tuple[str, ...] = CONFIG_FIGURE_KEYS
PLAIN_FIGURE_KEYS: tuple[str, ...] = tuple("plain_" + k for k in CONFIG_FIGURE_KEYS)

# Through the MITM proxy (a daemon started with --with-proxy). Targets: ``direct``,
# ``router`` (that daemon's API listener), ``mitm`` (CONNECT + TLS to api.openai.com)
# and, in proxy_newconn, ``mitm_newhost`` (a never-seen host per tunnel: leaf minted).
# ``*_ratio`` = MITM / DIRECT, ``*_vs_router`` = MITM / API listener.
PROXY_FIGURE_KEYS: tuple[str, ...] = (
    "with_proxy_startup_s",
    "with_proxy_idle_rss_mb",
    "proxy_nonstream_p50_ms_direct",
    "proxy_nonstream_p50_ms_router",
    "proxy_nonstream_p50_ms_mitm",
    "proxy_nonstream_p50_ratio",
    "proxy_nonstream_p50_vs_router",
    "proxy_nonstream_p99_ms_direct",
    "proxy_nonstream_p99_ms_router",
    "proxy_nonstream_p99_ms_mitm",
    "proxy_nonstream_p99_ratio",
    "proxy_nonstream_p99_vs_router",
    "proxy_nonstream_cpu_per_request_ms_router",
    "proxy_nonstream_cpu_per_request_ms_mitm",
    "proxy_nonstream_client_cpu_per_request_us_direct",
    "proxy_nonstream_client_cpu_per_request_us_router",
    "proxy_nonstream_client_cpu_per_request_us_mitm",
    "proxy_stream_ttfe_p50_ms_direct",
    "proxy_stream_ttfe_p50_ms_router",
    "proxy_stream_ttfe_p50_ms_mitm",
    "proxy_stream_ttfe_p50_ratio",
    "proxy_stream_ttfe_p50_vs_router",
    "proxy_stream_ttfe_p99_ms_direct",
    "proxy_stream_ttfe_p99_ms_router",
    "proxy_stream_ttfe_p99_ms_mitm",
    "proxy_stream_ttfe_p99_ratio",
    "proxy_stream_ttfe_p99_vs_router",
    "proxy_stream_total_p50_ms_direct",
    "proxy_stream_total_p50_ms_router",
    "proxy_stream_total_p50_ms_mitm",
    "proxy_stream_total_p50_ratio",
    "proxy_stream_total_p50_vs_router",
    "proxy_stream_total_p99_ms_direct",
    "proxy_stream_total_p99_ms_router",
    "proxy_stream_total_p99_ms_mitm",
    "proxy_stream_total_p99_ratio",
    "proxy_stream_total_p99_vs_router",
    "proxy_stream_cpu_per_stream_ms_router",
    "proxy_stream_cpu_per_stream_ms_mitm",
    "proxy_stream_cpu_per_event_us_router",
    "proxy_stream_cpu_per_event_us_mitm",
    "proxy_stream_client_cpu_per_event_us_direct",
    "proxy_stream_client_cpu_per_event_us_router",
    "proxy_stream_client_cpu_per_event_us_mitm",
    "proxy_newconn_p50_ms_direct",
    "proxy_newconn_p50_ms_router",
    "proxy_newconn_p50_ms_mitm",
    "proxy_newconn_p50_ratio",
    "proxy_newconn_p50_vs_router",
    "proxy_newconn_p99_ms_direct",
    "proxy_newconn_p99_ms_router",
    "proxy_newconn_p99_ms_mitm",
    "proxy_newconn_p99_ratio",
    "proxy_newconn_p99_vs_router",
    "proxy_newhost_p50_ms_mitm",
    "proxy_newhost_p50_ratio",
    "proxy_newhost_p50_vs_router",
    "proxy_newhost_p99_ms_mitm",
    "proxy_newhost_p99_ratio",
    "proxy_newhost_p99_vs_router",
    "proxy_tls_p50_ms_knownhost",
    "proxy_tls_p50_ms_newhost",
    "proxy_newconn_cpu_per_request_ms_router",
    "proxy_newconn_cpu_per_request_ms_mitm",
    "proxy_newhost_cpu_per_request_ms_mitm",
    "proxy_errors_direct",
    "proxy_errors_router",
    "proxy_errors_mitm",
)


def config_figures(
    startup: dict[str, Any], phases: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, float | int | None]:
    """The figures of one configuration (None where a phase did not run)."""
    f: dict[str, float | int | None] = dict.fromkeys(CONFIG_FIGURE_KEYS)
    f["startup_s"] = startup.get("startup_s")
    f["startup_cpu_s"] = startup.get("startup_cpu_s")
    f["idle_rss_mb"] = startup.get("idle_rss_mb")
    f["floor_idle_rss_mb"] = startup.get("floor_idle_rss_mb")

    def get(phase: str, target: str, key: str) -> Any:
        return phases.get(phase, {}).get(target, {}).get(key)

    def trio(base: str, phase: str, key: str, scale: float = 1.0) -> None:
        for t in TRIO:
            v = get(phase, t, key)
            f[f"{base}_{t}"] = _r(v * scale) if v is not None and scale != 1.0 else v
        r, d, fl = f[f"{base}_router"], f[f"{base}_direct"], f[f"{base}_floor"]
        if f"{base}_ratio" in f:
            f[f"{base}_ratio"] = _r(_div(r, d), 2)
        if f"{base}_vs_floor" in f:
            f[f"{base}_vs_floor"] = _r(_div(r, fl), 2)

    def cpu(key: str, phase: str, what: str) -> None:
        """``key`` (tokn-router), ``key_floor``."""
        f[key] = get(phase, "router", what)
        f[f"{key}_floor"] = get(phase, "floor", what)

    trio("nonstream_p50_ms", "nonstream", "total_p50_ms")
    trio("nonstream_p99_ms", "nonstream", "total_p99_ms")
    for t in ("floor", "router"):
        f[f"nonstream_errors_{t}"] = get("nonstream", t, "errors")
        f[f"stream_errors_{t}"] = get("stream", t, "errors")
        f[f"paced300_errors_{t}"] = get("paced300", t, "errors")
    cpu("cpu_per_request_ms", "nonstream", "cpu_per_request_ms")
    f["cpu_per_request_vs_floor"] = _r(
        _div(f["cpu_per_request_ms"], f["cpu_per_request_ms_floor"]), 2
    )
    trio("stream_ttfe_p50_ms", "stream", "first_p50_ms")
    trio("stream_ttfe_p99_ms", "stream", "first_p99_ms")
    trio("stream_total_p50_ms", "stream", "total_p50_ms")
    trio("stream_total_p99_ms", "stream", "total_p99_ms")
    cpu("cpu_per_stream_ms_c1", "stream", "cpu_per_request_ms")
    cpu("cpu_per_event_us_c1", "stream", "cpu_per_event_us")
    for ph in ("c200x2", "c1000"):
        trio(f"{ph}_streams_per_s", ph, "requests_per_s")
        trio(f"{ph}_events_per_s", ph, "events_per_s")
        trio(f"{ph}_errors", ph, "errors")
        cpu(f"{ph}_peak_rss_mb", ph, "peak_rss_mb")
    f["c1000_listen_overflows"] = get("c1000", "router", "listen_overflows")
    cpu("cpu_per_stream_ms_c200", "c200x2", "cpu_per_request_ms")
    cpu("cpu_per_event_us_c200", "c200x2", "cpu_per_event_us")
    for suffix in ("", "_floor"):
        f[f"cpu_per_event_growth{suffix}"] = _r(
            _div(f[f"cpu_per_event_us_c200{suffix}"], f[f"cpu_per_event_us_c1{suffix}"]), 2
        )
    trio("paced1_total_s", "paced1", "total_p50_ms", scale=0.001)
    cpu("cpu_per_event_us_paced1", "paced1", "cpu_per_event_us")
    trio("paced300_wall_s", "paced300", "wall_median_s")
    f["paced300_peak_rss_mb"] = get("paced300", "router", "peak_rss_mb")
    cpu("cpu_per_event_us_paced300", "paced300", "cpu_per_event_us")
    trio("paced500_errors", "paced500", "errors")
    trio("paced500_gap_p99_ms", "paced500", "gap_p99_ms")
    trio("paced500_total_p99_s", "paced500", "total_p99_ms", scale=0.001)
    gd = f["paced500_gap_p99_ms_direct"]
    for t, key in (
        ("router", "paced500_added_gap_p99_ms"),
        ("floor", "paced500_added_gap_p99_ms_floor"),
    ):
        g = f[f"paced500_gap_p99_ms_{t}"]
        f[key] = _r(g - gd) if g is not None and gd is not None else None  # type: ignore[operator]
    cpu("paced500_peak_rss_mb", "paced500", "peak_rss_mb")
    cpu("cpu_per_event_us_paced500", "paced500", "cpu_per_event_us")
    for name in ("c1", "c200", "paced1", "paced500"):
        f[f"cpu_per_event_{name}_vs_floor"] = _r(
            _div(f[f"cpu_per_event_us_{name}"], f[f"cpu_per_event_us_{name}_floor"]), 2
        )
    for suffix in ("", "_floor"):
        f[f"paced_cpu_growth{suffix}"] = _r(
            _div(f[f"cpu_per_event_us_paced500{suffix}"], f[f"cpu_per_event_us_paced1{suffix}"]), 2
        )
    return f


def all_figures(
    startup: dict[str, Any],
    phases: dict[str, dict[str, dict[str, Any]]],
    plain_startup: dict[str, Any],
    plain_phases: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, float | int | None]:
    """Every flat figure: TLS configuration, MITM proxy (TLS), plain configuration."""
    f = config_figures(startup, phases)
    f.update(dict.fromkeys(PROXY_FIGURE_KEYS))

    def get(phase: str, target: str, key: str) -> Any:
        return phases.get(phase, {}).get(target, {}).get(key)

    _proxy_figures(f, startup, get)
    f.update({"plain_" + k: v for k, v in config_figures(plain_startup, plain_phases).items()})
    return f


def _proxy_figures(
    f: dict[str, float | int | None], startup: dict[str, Any], get: Callable[[str, str, str], Any]
) -> None:
    f["with_proxy_startup_s"] = startup.get("with_proxy_startup_s")
    f["with_proxy_idle_rss_mb"] = startup.get("with_proxy_idle_rss_mb")

    def triple(base: str, phase: str, key: str, mitm: str = "mitm", out: str = "") -> None:
        """``{base}_ms_{direct,router,mitm}``, ``{base}_ratio`` and ``{base}_vs_router``."""
        d, r, m = get(phase, "direct", key), get(phase, "router", key), get(phase, mitm, key)
        if not out:
            f[f"{base}_ms_direct"] = d
            f[f"{base}_ms_router"] = r
        f[f"{out or base}_ms_mitm"] = m
        f[f"{out or base}_ratio"] = _r(_div(m, d), 2)
        f[f"{out or base}_vs_router"] = _r(_div(m, r), 2)

    for q in ("p50", "p99"):
        triple(f"proxy_nonstream_{q}", "proxy_nonstream", f"total_{q}_ms")
        triple(f"proxy_stream_ttfe_{q}", "proxy_stream", f"first_{q}_ms")
        triple(f"proxy_stream_total_{q}", "proxy_stream", f"total_{q}_ms")
        triple(f"proxy_newconn_{q}", "proxy_newconn", f"total_{q}_ms")
        triple(
            f"proxy_newconn_{q}",
            "proxy_newconn",
            f"total_{q}_ms",
            mitm="mitm_newhost",
            out=f"proxy_newhost_{q}",
        )
    for t in ("router", "mitm"):
        f[f"proxy_nonstream_cpu_per_request_ms_{t}"] = get(
            "proxy_nonstream", t, "cpu_per_request_ms"
        )
        f[f"proxy_stream_cpu_per_stream_ms_{t}"] = get("proxy_stream", t, "cpu_per_request_ms")
        f[f"proxy_stream_cpu_per_event_us_{t}"] = get("proxy_stream", t, "cpu_per_event_us")
        f[f"proxy_newconn_cpu_per_request_ms_{t}"] = get("proxy_newconn", t, "cpu_per_request_ms")
    f["proxy_newhost_cpu_per_request_ms_mitm"] = get(
        "proxy_newconn", "mitm_newhost", "cpu_per_request_ms"
    )
    for t in ("direct", "router", "mitm"):
        f[f"proxy_nonstream_client_cpu_per_request_us_{t}"] = get(
            "proxy_nonstream", t, "client_cpu_per_request_us"
        )
        f[f"proxy_stream_client_cpu_per_event_us_{t}"] = get(
            "proxy_stream", t, "client_cpu_per_event_us"
        )
    f["proxy_tls_p50_ms_knownhost"] = get("proxy_newconn", "mitm", "tls_p50_ms")
    f["proxy_tls_p50_ms_newhost"] = get("proxy_newconn", "mitm_newhost", "tls_p50_ms")
    phases = ("proxy_nonstream", "proxy_stream", "proxy_newconn")
    targets = {"direct": ("direct",), "router": ("router",), "mitm": ("mitm", "mitm_newhost")}
    for name, ts in targets.items():
        counts = [get(ph, t, "errors") for ph in phases for t in ts]
        ran = [c for c in counts if c is not None]
        f[f"proxy_errors_{name}"] = sum(ran) if ran else None


# -------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    name: str
    text: str
    keys: tuple[str, ...]

    def check(self, f: dict[str, Any]) -> bool | None:
        vals = [f.get(k) for k in self.keys]
        if any(v is None for v in vals):
            return None
        return bool(_CHECKS[self.name](*vals))


_CHECKS: dict[str, Any] = {
    "cpu_event_c1": lambda v: v <= 1.5,
    "cpu_event_c200": lambda v: v <= 1.5,
    "cpu_event_paced": lambda v: v <= 1.5,
    "paced_flat": lambda v: v <= 1.2,
    "paced300": lambda v: v <= 4.7,
    "paced500": lambda e, d, r: e == 0 and r <= d + 3.0,
    "cpu_request": lambda v: v <= 2.0,
    "startup": lambda v: v <= 0.5,
    "idle_rss": lambda v: v <= 50,
    "c1000": lambda e, rss: e == 0 and rss <= 150,
}

# Issue 17's targets, on the TLS configuration (how Copilot is reached).
TARGETS: tuple[Target, ...] = (
    Target(
        "cpu_event_c1",
        "CPU / event <= 1.5x floor, bursts, 1 stream",
        ("cpu_per_event_c1_vs_floor",),
    ),
    Target(
        "cpu_event_c200",
        "CPU / event <= 1.5x floor, bursts, 200 streams",
        ("cpu_per_event_c200_vs_floor",),
    ),
    Target(
        "cpu_event_paced",
        "CPU / event <= 1.5x floor, 500 paced streams",
        ("cpu_per_event_paced500_vs_floor",),
    ),
    Target(
        "paced_flat",
        "CPU / paced event flat from 1 to 500 streams (<= 1.2x)",
        ("paced_cpu_growth",),
    ),
    Target("paced300", "300 paced streams within 4.7 s", ("paced300_wall_s_router",)),
    Target(
        "paced500",
        "500 paced: 0 errors, total p99 <= DIRECT + 3 s",
        ("paced500_errors_router", "paced500_total_p99_s_direct", "paced500_total_p99_s_router"),
    ),
    Target("cpu_request", "CPU / non-stream request <= 2x floor", ("cpu_per_request_vs_floor",)),
    Target("startup", "start-up <= 0.5 s (TLS upstream)", ("startup_s",)),
    Target("idle_rss", "idle RSS <= 50 MB", ("idle_rss_mb",)),
    Target(
        "c1000",
        "1000 concurrent: 0 errors, peak RSS <= 150 MB",
        ("c1000_errors_router", "c1000_peak_rss_mb"),
    ),
)


def check_targets(f: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "target": t.text,
            "values": {k: f.get(k) for k in t.keys},
            "met": t.check(f),
        }
        for t in TARGETS
    ]


# ---------------------------------------------------------------------------- table

# (label, DIRECT key, floor key, tokn-router key, target name); the plain
# configuration's cells use the same keys with the prefix ``plain_``.
ROWS: tuple[tuple[str, str | None, str | None, str | None, str | None], ...] = (
    ("non-stream p50 (ms)", "nonstream_p50_ms_direct", "nonstream_p50_ms_floor", "nonstream_p50_ms_router", None),
    ("non-stream p99 (ms)", "nonstream_p99_ms_direct", "nonstream_p99_ms_floor", "nonstream_p99_ms_router", None),
    ("CPU / non-stream request (ms)", None, "cpu_per_request_ms_floor", "cpu_per_request_ms", "cpu_request"),
    ("200-chunk stream: first event p50 (ms)", "stream_ttfe_p50_ms_direct", "stream_ttfe_p50_ms_floor", "stream_ttfe_p50_ms_router", None),
    ("200-chunk stream: first event p99 (ms)", "stream_ttfe_p99_ms_direct", "stream_ttfe_p99_ms_floor", "stream_ttfe_p99_ms_router", None),
    ("200-chunk stream: total p50 (ms)", "stream_total_p50_ms_direct", "stream_total_p50_ms_floor", "stream_total_p50_ms_router", None),
    ("200-chunk stream: total p99 (ms)", "stream_total_p99_ms_direct", "stream_total_p99_ms_floor", "stream_total_p99_ms_router", None),
    ("CPU / stream, 1 concurrent (ms)", None, "cpu_per_stream_ms_c1_floor", "cpu_per_stream_ms_c1", None),
    ("CPU / event, bursts, 1 concurrent (us)", None, "cpu_per_event_us_c1_floor", "cpu_per_event_us_c1", "cpu_event_c1"),
    ("200x2: streams/s", "c200x2_streams_per_s_direct", "c200x2_streams_per_s_floor", "c200x2_streams_per_s_router", None),
    ("200x2: events/s", "c200x2_events_per_s_direct", "c200x2_events_per_s_floor", "c200x2_events_per_s_router", None),
    ("200x2: errors", "c200x2_errors_direct", "c200x2_errors_floor", "c200x2_errors_router", None),
    ("200x2: peak RSS (MB)", None, "c200x2_peak_rss_mb_floor", "c200x2_peak_rss_mb", None),
    ("CPU / event, bursts, 200 concurrent (us)", None, "cpu_per_event_us_c200_floor", "cpu_per_event_us_c200", "cpu_event_c200"),
    ("CPU / event growth, 200 vs 1 concurrent (x)", None, "cpu_per_event_growth_floor", "cpu_per_event_growth", None),
    ("1000x1: streams/s", "c1000_streams_per_s_direct", "c1000_streams_per_s_floor", "c1000_streams_per_s_router", None),
    ("1000x1: errors", "c1000_errors_direct", "c1000_errors_floor", "c1000_errors_router", None),
    ("1000x1: peak RSS (MB)", None, "c1000_peak_rss_mb_floor", "c1000_peak_rss_mb", "c1000"),
    ("1000x1: connects the full accept queue turned away", None, None, "c1000_listen_overflows", None),
    ("1 paced stream: total (s, ideal 4.2)", "paced1_total_s_direct", "paced1_total_s_floor", "paced1_total_s_router", None),
    ("1 paced stream: CPU / event (us)", None, "cpu_per_event_us_paced1_floor", "cpu_per_event_us_paced1", None),
    ("300 paced streams: wall (s, ideal 4.2)", "paced300_wall_s_direct", "paced300_wall_s_floor", "paced300_wall_s_router", "paced300"),
    ("300 paced streams: CPU / event (us)", None, "cpu_per_event_us_paced300_floor", "cpu_per_event_us_paced300", None),
    ("500 paced streams: errors", "paced500_errors_direct", "paced500_errors_floor", "paced500_errors_router", None),
    ("500 paced: inter-chunk gap p99 (ms)", "paced500_gap_p99_ms_direct", "paced500_gap_p99_ms_floor", "paced500_gap_p99_ms_router", None),
    ("500 paced: stream total p99 (s)", "paced500_total_p99_s_direct", "paced500_total_p99_s_floor", "paced500_total_p99_s_router", "paced500"),
    ("500 paced: peak RSS (MB)", None, "paced500_peak_rss_mb_floor", "paced500_peak_rss_mb", None),
    ("500 paced: CPU / event (us)", None, "cpu_per_event_us_paced500_floor", "cpu_per_event_us_paced500", "cpu_event_paced"),
    ("CPU / paced event, 500 vs 1 stream (x)", None, "paced_cpu_growth_floor", "paced_cpu_growth", "paced_flat"),
    ("start-up to first 200 on /v1/models (s)", None, None, "startup_s", "startup"),
    ("start-up: daemon CPU to that 200 (s)", None, None, "startup_cpu_s", None),
    ("idle RSS (MB)", None, "floor_idle_rss_mb", "idle_rss_mb", "idle_rss"),
)  # fmt: skip

# Ratios that are counts or already ratios are not divided again.
_NO_RATIO = ("errors", "growth", "turned away", "500 vs 1")


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


# (label, DIRECT key, API-listener key, MITM key); ratios are computed from the cells
PROXY_ROWS: tuple[tuple[str, str | None, str | None, str | None], ...] = (
    ("non-stream p50, one warm tunnel (ms)", "proxy_nonstream_p50_ms_direct", "proxy_nonstream_p50_ms_router", "proxy_nonstream_p50_ms_mitm"),
    ("non-stream p99, one warm tunnel (ms)", "proxy_nonstream_p99_ms_direct", "proxy_nonstream_p99_ms_router", "proxy_nonstream_p99_ms_mitm"),
    ("daemon CPU / non-stream request (ms)", None, "proxy_nonstream_cpu_per_request_ms_router", "proxy_nonstream_cpu_per_request_ms_mitm"),
    ("200-chunk stream: first event p50 (ms)", "proxy_stream_ttfe_p50_ms_direct", "proxy_stream_ttfe_p50_ms_router", "proxy_stream_ttfe_p50_ms_mitm"),
    ("200-chunk stream: first event p99 (ms)", "proxy_stream_ttfe_p99_ms_direct", "proxy_stream_ttfe_p99_ms_router", "proxy_stream_ttfe_p99_ms_mitm"),
    ("200-chunk stream: total p50 (ms)", "proxy_stream_total_p50_ms_direct", "proxy_stream_total_p50_ms_router", "proxy_stream_total_p50_ms_mitm"),
    ("200-chunk stream: total p99 (ms)", "proxy_stream_total_p99_ms_direct", "proxy_stream_total_p99_ms_router", "proxy_stream_total_p99_ms_mitm"),
    ("daemon CPU / stream (ms)", None, "proxy_stream_cpu_per_stream_ms_router", "proxy_stream_cpu_per_stream_ms_mitm"),
    ("daemon CPU / event (us)", None, "proxy_stream_cpu_per_event_us_router", "proxy_stream_cpu_per_event_us_mitm"),
    ("new connection + 1 request p50 (ms; MITM: tunnel + TLS, known host)", "proxy_newconn_p50_ms_direct", "proxy_newconn_p50_ms_router", "proxy_newconn_p50_ms_mitm"),
    ("new connection + 1 request p99 (ms)", "proxy_newconn_p99_ms_direct", "proxy_newconn_p99_ms_router", "proxy_newconn_p99_ms_mitm"),
    ("first request to a new host p50 (ms; MITM: + leaf minted)", "proxy_newconn_p50_ms_direct", "proxy_newconn_p50_ms_router", "proxy_newhost_p50_ms_mitm"),
    ("first request to a new host p99 (ms)", "proxy_newconn_p99_ms_direct", "proxy_newconn_p99_ms_router", "proxy_newhost_p99_ms_mitm"),
    ("TLS handshake p50 as the client sees it, known host (ms)", None, None, "proxy_tls_p50_ms_knownhost"),
    ("TLS handshake p50 as the client sees it, new host (ms)", None, None, "proxy_tls_p50_ms_newhost"),
    ("daemon CPU / request on a new connection, known host (ms)", None, "proxy_newconn_cpu_per_request_ms_router", "proxy_newconn_cpu_per_request_ms_mitm"),
    ("daemon CPU / first request to a new host (ms)", None, "proxy_newconn_cpu_per_request_ms_router", "proxy_newhost_cpu_per_request_ms_mitm"),
    ("errors (all three phases)", "proxy_errors_direct", "proxy_errors_router", "proxy_errors_mitm"),
    ("load client CPU / non-stream request (us)", "proxy_nonstream_client_cpu_per_request_us_direct", "proxy_nonstream_client_cpu_per_request_us_router", "proxy_nonstream_client_cpu_per_request_us_mitm"),
    ("load client CPU / stream event (us)", "proxy_stream_client_cpu_per_event_us_direct", "proxy_stream_client_cpu_per_event_us_router", "proxy_stream_client_cpu_per_event_us_mitm"),
    ("start-up to first 200 (s; API: serve, MITM: serve --with-proxy, CA created)", None, "startup_s", "with_proxy_startup_s"),
    ("idle RSS (MB; API: serve, MITM: serve --with-proxy)", None, "idle_rss_mb", "with_proxy_idle_rss_mb"),
)  # fmt: skip

PROXY_HEAD = ["through the MITM proxy", "DIRECT", "API listener", "MITM proxy", "÷ DIRECT", "÷ API"]


def _ratio_cell(a: Any, b: Any) -> str:
    q = _div(a, b)
    return "" if q is None else _fmt(q) + "x"


def proxy_table(f: dict[str, Any], *, markdown: bool = True) -> str:
    """DIRECT, the API listener and the MITM proxy of the --with-proxy daemon, side by side."""
    rows = []
    for label, dk, rk, mk in PROXY_ROWS:
        d, r, m = (f.get(k) if k else None for k in (dk, rk, mk))
        rows.append(
            [
                label,
                _fmt(d) if dk else "",
                _fmt(r) if rk else "",
                _fmt(m) if mk else "",
                _ratio_cell(m, d) if "errors" not in label else "",
                _ratio_cell(m, r) if "errors" not in label else "",
            ]
        )
    return _render(PROXY_HEAD, rows, markdown)


def _render(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(lines)


def table(f: dict[str, Any], targets: list[dict[str, Any]], *, markdown: bool = True) -> str:
    """TLS upstream first (DIRECT, floor, tokn-router, ratios), plain beside, then the target."""
    by_name = {t["name"]: t for t in targets}
    head = [
        "figure",
        "TLS: DIRECT",
        "floor",
        "tokn-router",
        "÷ floor",
        "÷ DIRECT",
        "plain: DIRECT",
        "floor",
        "tokn-router",
        "÷ floor",
        "target (TLS)",
    ]
    rows = []
    for label, dk, fk, rk, tn in ROWS:
        verdict = ""
        if tn is not None:
            t = by_name[tn]
            mark = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            verdict = f"{mark}: {t['target']}"
        ratios = not any(w in label for w in _NO_RATIO)
        row = [label]
        for prefix in ("", "plain_"):
            d, fl, r = (f.get(prefix + k) if k else None for k in (dk, fk, rk))
            row += [_fmt(d) if dk else "", _fmt(fl) if fk else "", _fmt(r) if rk else ""]
            row.append(_ratio_cell(r, fl) if ratios and fk and rk else "")
            if not prefix:
                row.append(_ratio_cell(r, d) if ratios and dk and rk else "")
        row.append(verdict)
        rows.append(row)
    return _render(head, rows, markdown)

"""``GET /metrics``: the daemon's numbers in the Prometheus text format.

Built on ``prometheus_client`` with a registry of our own (never the process-wide
default, so nothing else leaks in and two daemons in one test process stay apart).
Request numbers come from the ledger rows as they are reported (one
:meth:`Metrics.observe` per row, so they match ``tokn-router usage``) plus the
gate's refusals, which have no row; the accounts and the ledger are read at scrape
time by collectors. Labels are bounded: endpoints outside the endpoint table read
``other``, models past :data:`MAX_MODELS` distinct values read ``other``, and the
key label is a key name from the store or ``-`` (anonymous). No label or value
ever holds a credential.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tokn_router.accounts.pool import Pool
from tokn_router.usage.record import RequestRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ANONYMOUS = "-"  # the key label of a request without a key (no key name starts with "-")
OTHER = "other"
MAX_MODELS = 200
ACCOUNT_STATES = ("healthy", "cooling_down", "disabled", "no_credential")

# Seconds; requests to a model run from ~100 ms to many minutes for a long stream.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


def status_class(status: int) -> str:
    """``2xx``, ``4xx``, ``5xx``…, or ``none`` when no status was sent."""
    return f"{status // 100}xx" if 100 <= status < 600 else "none"


def key_label(name: str | None) -> str:
    return name if name else ANONYMOUS


class _PoolCollector(Collector):
    """Per-account state, cooldown and windows, read from the pool at scrape time."""

    def __init__(self, pool: Callable[[], Pool]) -> None:
        self._pool = pool

    def collect(self) -> Iterable[Metric]:
        now = time.time()
        state = GaugeMetricFamily(
            "tokn_router_account_state",
            "1 for the state each account is in (healthy, cooling_down, disabled, no_credential)",
            labels=["account", "provider", "state"],
        )
        cooldown = GaugeMetricFamily(
            "tokn_router_account_cooldown_remaining_seconds",
            "Seconds until a cooling-down account is tried again (0 when it is not cooling down)",
            labels=["account"],
        )
        models = GaugeMetricFamily(
            "tokn_router_account_models", "Models the account's upstream lists", labels=["account"]
        )
        remaining = GaugeMetricFamily(
            "tokn_router_account_window_remaining",
            "What the upstream says is left in each of the account's usage windows",
            labels=["account", "window"],
        )
        resets = GaugeMetricFamily(
            "tokn_router_account_window_reset_timestamp_seconds",
            "When each of the account's usage windows resets (unix seconds)",
            labels=["account", "window"],
        )
        for st in self._pool().states:
            h = st.health(now)
            for s in ACCOUNT_STATES:
                state.add_metric([st.id, st.provider.id, s], 1.0 if h.get("state") == s else 0.0)
            cooldown.add_metric([st.id], float(h.get("retry_after_secs") or 0))
            models.add_metric([st.id], float(h.get("models") or 0))
            for window, left, reset in _windows(h.get("windows")):
                remaining.add_metric([st.id, window], left)
                if reset is not None:
                    resets.add_metric([st.id, window], reset)
        return [state, cooldown, models, remaining, resets]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _windows(raw: Any) -> Iterator[tuple[str, float, float | None]]:
    """``(name, remaining, reset)`` of the windows an account's health reports, if any.

    Accepts ``{name: {"remaining": n, "reset": ts}}`` or a list of such objects
    with a ``name`` (or ``window``); a window without a numeric remaining is skipped.
    """
    items: Iterable[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        items = raw.items()
    elif isinstance(raw, list):
        items = ((w.get("name") or w.get("window"), w) for w in raw if isinstance(w, Mapping))
    else:
        return
    for name, w in items:
        if not isinstance(name, str) or not isinstance(w, Mapping):
            continue
        left = _num(w.get("remaining"))
        if left is None:
            continue
        reset = next(
            (r for k in ("reset", "resets_at", "reset_at") if (r := _num(w.get(k))) is not None),
            None,
        )
        yield name, left, reset


class _LedgerCollector(Collector):
    """The usage ledger's queue and counters, read at scrape time."""

    def __init__(self, health: Callable[[], Mapping[str, Any]], depth: Callable[[], int]) -> None:
        self._health = health
        self._depth = depth

    def collect(self) -> Iterable[Metric]:
        h = self._health()
        out: list[Metric] = [
            GaugeMetricFamily(
                "tokn_router_ledger_queue_depth",
                "Rows waiting to be written to the usage ledger",
                value=float(self._depth()),
            ),
            GaugeMetricFamily(
                "tokn_router_ledger_ok",
                "1 while the usage ledger is being written, 0 after a write failed",
                value=1.0 if h.get("ok", True) else 0.0,
            ),
        ]
        for name, doc in (
            ("rows_written", "Rows written to the usage ledger"),
            ("rows_dropped", "Rows dropped because the ledger's queue was full or closed"),
            ("rows_failed", "Rows the ledger's database could not take"),
        ):
            out.append(
                CounterMetricFamily(
                    f"tokn_router_ledger_{name}", doc, value=float(h.get(name) or 0)
                )
            )
        return out


class Metrics:
    """The registry and the instruments; one per daemon."""

    def __init__(
        self,
        *,
        pool: Callable[[], Pool],
        endpoints: Iterable[str],
        ledger_health: Callable[[], Mapping[str, Any]] = dict,
        ledger_depth: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = CollectorRegistry()
        self._endpoints = frozenset(endpoints)
        self._models: set[str] = set()
        r = self.registry
        self.requests = Counter(
            "tokn_router_requests",
            "Model requests answered (one per ledger row, plus those the gate refused)",
            ["endpoint", "status_class", "key"],
            registry=r,
        )
        self.errors = Counter(
            "tokn_router_request_errors",
            "Model requests that failed: status 0 or >= 400, or an error recorded "
            "(a stream that broke after its 200 counts under 2xx)",
            ["endpoint", "status_class", "key"],
            registry=r,
        )
        self.refused = Counter(
            "tokn_router_client_refusals",
            "Requests refused by the client-key gate, by reason "
            "(missing_key, invalid_key, or the limit that was reached)",
            ["listener", "reason", "key"],
            registry=r,
        )
        self.streams = Gauge(
            "tokn_router_streams_in_flight",
            "Streamed answers still being sent",
            ["key"],
            registry=r,
        )
        self.tokens = Counter(
            "tokn_router_tokens",
            "Tokens the upstreams reported (input includes cache_read and cache_write)",
            ["kind", "key", "model"],
            registry=r,
        )
        self.credits = Counter(
            "tokn_router_credits",
            "Credits of the requests whose ledger row has them (measured, or estimated)",
            ["key", "model"],
            registry=r,
        )
        self.latency = Histogram(
            "tokn_router_upstream_latency_seconds",
            "From a request's arrival to the last byte of the upstream's answer",
            ["endpoint", "account"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tokn_router_time_to_first_token_seconds",
            "From a request's arrival to the first token of the answer",
            ["endpoint", "account"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        r.register(_PoolCollector(pool))
        r.register(_LedgerCollector(ledger_health, ledger_depth))

    # ------------------------------------------------------------------ labels

    def endpoint_label(self, path: str) -> str:
        return path if path in self._endpoints else OTHER

    def _model_label(self, model: str | None) -> str:
        if not model:
            return ANONYMOUS
        if model not in self._models:
            if len(self._models) >= MAX_MODELS:
                return OTHER
            self._models.add(model)
        return model

    # --------------------------------------------------------------- observing

    def observe(self, record: RequestRecord, credits: float | None) -> None:
        """One finished request, as its ledger row says."""
        endpoint = self.endpoint_label(record.endpoint)
        cls = status_class(record.status)
        key = key_label(record.key)
        self.requests.labels(endpoint, cls, key).inc()
        if record.error is not None or record.status == 0 or record.status >= 400:
            self.errors.labels(endpoint, cls, key).inc()
        # only models an account served: a client's made-up id never becomes a label
        model = self._model_label(record.upstream_model if record.account_id else None)
        for kind, n in (
            ("input", record.input_tokens),
            ("output", record.output_tokens),
            ("cache_read", record.cached_tokens),
            ("cache_write", record.cache_write_tokens),
            ("reasoning", record.reasoning_tokens),
        ):
            if n:
                self.tokens.labels(kind, key, model).inc(n)
        if credits:
            self.credits.labels(key, model).inc(credits)
        if record.account_id is not None:
            if record.latency_ms is not None:
                self.latency.labels(endpoint, record.account_id).observe(record.latency_ms / 1000)
            if record.ttft_ms is not None:
                self.ttft.labels(endpoint, record.account_id).observe(record.ttft_ms / 1000)

    def refusal(
        self, listener: str, reason: str, key: str | None, endpoint: str | None, status: int
    ) -> None:
        """A request the gate refused (no ledger row): counted as a request and an error."""
        self.refused.labels(listener, reason, key_label(key)).inc()
        if endpoint is not None:
            ep, cls, k = self.endpoint_label(endpoint), status_class(status), key_label(key)
            self.requests.labels(ep, cls, k).inc()
            self.errors.labels(ep, cls, k).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["ANONYMOUS", "CONTENT_TYPE", "Metrics", "key_label", "status_class"]

"""The phases of a benchmark run and their sizes (full and ``--quick``).

A phase is a :class:`Load` that the load client puts on each target (DIRECT =
client → fake upstream; FLOOR = client → the floor relay (``bench/floor.py``) →
fake upstream; ROUTER = client → tokn-router → fake upstream), in ``rounds``
rounds that alternate the order of the targets. To add a phase, add a
:class:`Phase` to :data:`PHASES` and, if it has figures of its own, a few lines
to :func:`bench.report.figures` and the table rows there.

Phases with ``needs="proxy"`` run only when ``tokn-router serve --help`` lists
``--with-proxy``, against a second daemon started with ``--with-proxy`` (so the
start-up and idle figures of the first stay those of a plain ``serve``). Their
targets: ``direct`` and ``router`` (that daemon's API listener) as everywhere, and
through the MITM proxy (``CONNECT`` + TLS): ``mitm`` (``api.openai.com``; one
tunnel reused when the load keeps connections, a new tunnel and TLS handshake per
request with ``new_conn_each``) and ``mitm_newhost`` (a new tunnel per request to
a host the proxy has never seen, so it also mints a leaf certificate).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

STREAM_CHUNKS = 200  # content chunks of a "200-chunk stream"
PACED_CHUNKS = 210  # 210 chunks x 20 ms = 4.2 s, the ideal of the paced targets
PACED_DELAY_MS = 20.0


@dataclass(frozen=True)
class Load:
    """What the load client does against one target in one round."""

    stream: bool
    connections: int  # opened at once (or spread over ``stagger_s``)
    per_conn: int  # requests sent one after the other on each connection
    chunks: int = STREAM_CHUNKS
    delay_ms: float = 0.0
    record_gaps: bool = False
    stagger_s: float = 0.0
    deadline_s: float = 120.0
    new_conn_each: bool = False  # each request on a new connection, sequentially

    @property
    def requests(self) -> int:
        return self.connections * self.per_conn

    @property
    def events_per_stream(self) -> int:
        # prelude + content chunks + finish + usage-only chunk + [DONE]
        return self.chunks + 4


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    full: Load
    quick: Load
    rounds: int = 2
    quick_rounds: int = 1
    needs: str | None = None
    targets: tuple[str, ...] = ("direct", "floor", "router")
    warmup: int = 0  # requests per target before the measured rounds (not in the figures)

    def load(self, quick: bool) -> Load:
        return self.quick if quick else self.full

    def n_rounds(self, quick: bool) -> int:
        return self.quick_rounds if quick else self.rounds


_stream = Load(stream=True, connections=1, per_conn=100)
_paced = Load(
    stream=True,
    connections=300,
    per_conn=1,
    chunks=PACED_CHUNKS,
    delay_ms=PACED_DELAY_MS,
    record_gaps=True,
    stagger_s=PACED_DELAY_MS / 1000.0,  # one period: chunks of different streams interleave
)

PHASES: list[Phase] = [
    Phase(
        "nonstream",
        "non-stream latency, sequential",
        full=Load(stream=False, connections=1, per_conn=1250),
        quick=Load(stream=False, connections=1, per_conn=60),
        warmup=50,
    ),
    Phase(
        "stream",
        f"{STREAM_CHUNKS}-chunk streams, sequential (1 concurrent)",
        full=_stream,
        quick=replace(_stream, per_conn=8),
        warmup=5,
    ),
    Phase(
        "c200x2",
        "200 connections x 2 streams",
        full=Load(stream=True, connections=200, per_conn=2),
        quick=Load(stream=True, connections=20, per_conn=2),
    ),
    Phase(
        "c1000",
        "1000 concurrent streams",
        # a stream not done within 60 s counts as an error ("timeout")
        full=Load(stream=True, connections=1000, per_conn=1, deadline_s=60.0),
        quick=Load(stream=True, connections=50, per_conn=1),
        rounds=1,
    ),
    Phase(
        "paced1",
        f"1 stream paced at {PACED_DELAY_MS:g} ms/chunk (the per-event cost alone)",
        full=replace(_paced, connections=1, stagger_s=0.0),
        quick=replace(_paced, connections=1, chunks=10, delay_ms=5.0, stagger_s=0.0),
        rounds=1,
    ),
    Phase(
        "paced300",
        f"300 streams paced at {PACED_DELAY_MS:g} ms/chunk",
        full=_paced,
        quick=replace(_paced, connections=20, chunks=10, delay_ms=5.0, stagger_s=0.005),
    ),
    Phase(
        "paced500",
        f"500 streams paced at {PACED_DELAY_MS:g} ms/chunk",
        full=replace(_paced, connections=500),
        quick=replace(_paced, connections=30, chunks=10, delay_ms=5.0, stagger_s=0.005),
    ),
    # Through the MITM proxy (CONNECT + TLS), against a daemon started with --with-proxy.
    Phase(
        "proxy_nonstream",
        "non-stream latency, sequential, through the MITM proxy (one warm tunnel)",
        full=Load(stream=False, connections=1, per_conn=1000),
        quick=Load(stream=False, connections=1, per_conn=30),
        needs="proxy",
        targets=("direct", "router", "mitm"),
        warmup=50,
    ),
    Phase(
        "proxy_stream",
        f"{STREAM_CHUNKS}-chunk streams, sequential, through the MITM proxy (one warm tunnel)",
        full=_stream,
        quick=replace(_stream, per_conn=5),
        needs="proxy",
        targets=("direct", "router", "mitm"),
        warmup=5,
    ),
    Phase(
        "proxy_newconn",
        "one non-stream request per new connection, sequential: TCP (direct, router), "
        "CONNECT + TLS to a known host (mitm), to a new host (mitm_newhost)",
        full=Load(stream=False, connections=1, per_conn=100, new_conn_each=True),
        quick=Load(stream=False, connections=1, per_conn=10, new_conn_each=True),
        needs="proxy",
        targets=("direct", "router", "mitm", "mitm_newhost"),
        warmup=5,
    ),
]

BY_NAME = {p.name: p for p in PHASES}

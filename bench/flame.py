"""Summarise a ``py-spy record -f raw`` profile: where the daemon's CPU goes.

``python -m bench --only c200x2 --profile /tmp/c200.txt`` records the measured
daemon (start-up and warm-up included); then::

    python -m bench.flame /tmp/c200.txt [--top 25] [--grep PATTERN]

prints the share of samples per library (the file of the innermost frame), the top
functions by self time and by inclusive time (a function counted once per stack).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")

# innermost-frame file → library, first match wins
_LIBS = (
    ("tokn_router/", "tokn_router"),
    ("httpcore/", "httpcore"),
    ("httpx2/", "httpx2"),
    ("httpx/", "httpx"),
    ("hypercorn/", "hypercorn"),
    ("quart_trio/", "quart-trio"),
    ("quart/", "quart"),
    ("werkzeug/", "werkzeug"),
    ("h11/", "h11"),
    ("trio/", "trio"),
    ("anyio/", "anyio"),
    ("msgspec", "msgspec"),
    ("sqlite3", "sqlite3"),
    ("logging/", "logging"),
    ("ssl.py", "ssl"),
    ("socket.py", "socket"),
    ("selectors.py", "selectors"),
    ("asyncio/", "asyncio"),
    ("<frozen", "import machinery"),
)


# A sample belongs to the layer of the innermost frame whose file matches one of
# these (scanning outward), so h11, trio sockets and stdlib calls are charged to
# whoever called them.
_LAYERS = (
    ("hypercorn/", "hypercorn: client connections (h11, socket send/recv)"),
    ("tokn_router/net/streams.py", "upstream TLS + socket reads (net/streams.py)"),
    ("tokn_router/net/transport.py", "upstream transport (net/transport.py, h1client.py)"),
    ("tokn_router/net/h1client.py", "upstream transport (net/transport.py, h1client.py)"),
    ("httpcore", "httpx client API (httpx2/httpcore)"),
    ("httpx2/", "httpx client API (httpx2/httpcore)"),
    ("tokn_router/serve/pump.py", "stream relay (serve/pump.py, wire/sse.py)"),
    ("tokn_router/wire/sse.py", "stream relay (serve/pump.py, wire/sse.py)"),
    ("tokn_router/edges/proxy/", "MITM proxy listener (edges/proxy/)"),
    ("tokn_router/usage/", "usage ledger (SQLite, worker thread)"),
    ("trio/_core/_thread_cache.py", "usage ledger (SQLite, worker thread)"),
    ("trio/_threads.py", "usage ledger (SQLite, worker thread)"),
    ("tokn_router/", "tokn_router request handling (api, relay, pool)"),
    ("quart_trio/", "Quart / werkzeug (ASGI app)"),
    ("quart/", "Quart / werkzeug (ASGI app)"),
    ("werkzeug/", "Quart / werkzeug (ASGI app)"),
    ("trio/_core/_run.py", "trio scheduler + epoll"),
    ("trio/_core/_io_epoll.py", "trio scheduler + epoll"),
)


def layer(frames: list[str]) -> str:
    for frame in reversed(frames):
        m = _FRAME.match(frame)
        file = m.group("file") if m else frame
        for needle, name in _LAYERS:
            if needle in file:
                return name
    return "other"


def library(file: str) -> str:
    for needle, name in _LIBS:
        if needle in file:
            return name
    if "/lib/python3" in file:
        return "stdlib"
    return "other"


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/", "/lib/python3.12/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({file})"


def load(path: Path) -> list[tuple[str, list[str], int]]:
    """(thread, frames outermost first, samples) per line; thread is "" without --threads."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        thread = next((f for f in frames if f.startswith("thread ")), "")
        frames = [f for f in frames if not f.startswith("thread ")]
        stacks.append((thread, frames, int(count)))
    return stacks


def _thread_name(thread: str) -> str:
    return thread.removeprefix("thread ").strip()


def summary(path: Path, top: int = 25, grep: str | None = None) -> str:
    stacks = load(path)
    if grep:
        rx = re.compile(grep)
        stacks = [(t, f, n) for t, f, n in stacks if any(rx.search(x) for x in f)]
    total = sum(n for _, _, n in stacks) or 1
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    libs: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for thread, frames, n in stacks:
        if not frames:
            continue
        threads[_thread_name(thread) if thread else "all threads"] += n
        layers[layer(frames)] += n
        inner = frames[-1]
        m = _FRAME.match(inner)
        libs[library(m.group("file") if m else inner)] += n
        self_t[short(inner)] += n
        for f in {short(x) for x in frames}:
            incl[f] += n
    out = [f"{path}: {total} samples" + (f" (stacks matching {grep!r})" if grep else "")]
    out.append("\nby thread:")
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in threads.most_common(12)]
    out.append("\nby layer (innermost frame of a known layer):")
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in layers.most_common()]
    out.append("\nby library (innermost frame):")
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in libs.most_common()]
    out.append(f"\ntop {top} by self time:")
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in self_t.most_common(top)]
    out.append(f"\ntop {top} by inclusive time:")
    out += [f"  {100 * n / total:5.1f}%  {k}" for k, n in incl.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.flame")
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--grep", help="only stacks with a frame matching this regex")
    args = ap.parse_args(argv)
    print(summary(args.profile, args.top, args.grep))


if __name__ == "__main__":
    main()

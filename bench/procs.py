"""Child processes of the benchmark and what ``/proc`` says about them.

Every child runs in its own session (process group) and is registered in
:data:`CHILDREN`; :func:`kill_all` SIGKILLs every group and runs at exit, on
SIGTERM/SIGHUP and on Ctrl-C, so no daemon, fake or client outlives a run. Each
child also gets ``PR_SET_PDEATHSIG = SIGKILL``: if the benchmark itself is
SIGKILLed (e.g. by a test timeout), the kernel kills its children.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent

CHILDREN: list[subprocess.Popen[Any]] = []

_prctl: Any = None
with contextlib.suppress(OSError, AttributeError):  # resolved before any fork
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the benchmark dies, even by SIGKILL."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_all() -> None:
    for p in CHILDREN:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
    CHILDREN.clear()


def _on_signal(signum: int, frame: Any) -> None:
    kill_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(kill_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    # Ctrl-C raises KeyboardInterrupt even when started from a shell that ignores
    # SIGINT for background jobs; `finally` blocks then kill every child.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: no proxies, the repo importable, quiet logs."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith("TOKN_ROUTER_")
    }
    env["NO_PROXY"] = env["no_proxy"] = "*"
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + pp if pp else "")
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def spawn(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = subprocess.PIPE,
    stderr: Any = None,
) -> subprocess.Popen[Any]:
    p = subprocess.Popen(
        args,
        env=env or child_env(),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=str(REPO),
        start_new_session=True,
        preexec_fn=_die_with_parent,  # only a C call: safe enough with threads
    )
    CHILDREN.append(p)
    return p


def stop(p: subprocess.Popen[Any], *, graceful: float = 0.0) -> int | None:
    """SIGTERM (if ``graceful``) and wait that long, then SIGKILL the group."""
    if p.poll() is None and graceful > 0:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=graceful)
    # always: the group may hold grandchildren (forked fakes, a profiled daemon)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=5)
    if p in CHILDREN:
        CHILDREN.remove(p)
    return p.returncode


class LineReader:
    """Drains a child's stdout in a thread (a full pipe must never block it)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._t = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._t.start()

    def _run(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise RuntimeError(
                        f"no line matching {pattern!r} within {timeout}s; output:\n"
                        + "\n".join(self.lines[-20:])
                    )
                self._cond.wait(left)


# -- /proc ---------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds (all its threads, dead ones included)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0, 0.0
    fields = data[data.rindex(b")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    return sum(cpu_times(pid))


@dataclass(frozen=True)
class CpuMark:
    """A process's CPU at one instant, two ways (see :func:`cpu_between`)."""

    stat: tuple[float, float]  # (utime, stime) from /proc/PID/stat, 10 ms ticks
    threads: dict[int, int]  # tid -> ns on CPU, from /proc/PID/task/TID/schedstat


def cpu_mark(pid: int) -> CpuMark:
    threads: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                threads[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return CpuMark(cpu_times(pid), threads)


def cpu_between(a: CpuMark, b: CpuMark) -> float:
    """CPU seconds the process used between two marks.

    schedstat counts nanoseconds (the stat ticks are 10 ms: too coarse for a paced
    stream that costs a few tens of ms), but only for threads still alive. When no
    thread of mark ``a`` has exited by ``b`` (threads born in between are counted
    whole, which is right: all their time is in the window) the schedstat sum is
    exact; otherwise fall back to the ticks, which include dead threads.
    """
    if a.threads and set(a.threads) <= set(b.threads):
        return (sum(b.threads.values()) - sum(a.threads.values())) / 1e9
    return sum(b.stat) - sum(a.stat)


def status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM), 0 when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat): user to softirq.

    irq/softirq count: a process's stime includes the packet processing done in
    its context, which /proc/stat files under softirq.
    """
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    return (vals[0] + vals[1] + vals[2] + vals[5] + vals[6]) / CLK_TCK


def listen_overflows() -> int:
    """TcpExt ListenOverflows since boot: connections a full accept queue turned away."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(row.get("ListenOverflows", 0))
    return 0


@dataclass
class RssSampler:
    """Samples VmRSS every ``interval`` seconds in a thread; ``peak_kb`` is the max seen."""

    pid: int
    interval: float = 0.02
    peak_kb: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _t: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.peak_kb = status_kb(self.pid, "VmRSS")
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._t is not None:
            self._t.join()
        self.peak_kb = max(self.peak_kb, status_kb(self.pid, "VmRSS"))


@contextlib.contextmanager
def interrupt_cleanup() -> Iterator[None]:
    """Kill every child on the way out, whatever ends the block (Ctrl-C included)."""
    try:
        yield
    finally:
        kill_all()


def python() -> str:
    return sys.executable


class ClientPool:
    """Load client processes (``python -m bench.client --serve``) kept for the whole run.

    A run hands one JSON spec line to each of the first N workers and reads one
    result line back from each; no process start-up lies between two runs.
    """

    def __init__(self, n: int) -> None:
        self.workers = [
            spawn([python(), "-m", "bench.client", "--serve"], stdin=subprocess.PIPE)
            for _ in range(max(1, n))
        ]

    def run(self, specs: list[str], timeout: float) -> list[dict[str, Any]]:
        import json

        if len(specs) > len(self.workers):
            raise ValueError("more specs than client workers")
        busy = self.workers[: len(specs)]
        for w, spec in zip(busy, specs, strict=True):
            assert w.stdin is not None
            w.stdin.write(spec.encode() + b"\n")
            w.stdin.flush()
        out = []
        for w in busy:
            assert w.stdout is not None
            line = _readline(w.stdout, timeout)
            if not line:
                raise RuntimeError(f"load client failed (exit {w.poll()})")
            out.append(json.loads(line))
        return out

    def close(self) -> None:
        for w in self.workers:
            stop(w)


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a child's stdout, or b"" if none comes within ``timeout``."""
    result: list[bytes] = []
    t = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else b""

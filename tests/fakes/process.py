"""Subprocess helpers: run the real ``tokn-router`` console script, and a ``Daemon`` wrapper."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

CLI = Path(sys.executable).parent / "tokn-router"

# `listening on URL` but not `proxy listening on URL`
LISTENING_RE = re.compile(r"(?<!proxy )listening on (https?://\S+)")
PROXY_LISTENING_RE = re.compile(r"proxy listening on (https?://\S+)")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Raises ``TimeoutError`` after ``timeout`` seconds. The only place where tests poll.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s: {predicate!r}")
        time.sleep(interval)


def merge_env(base: Mapping[str, str], extra: Mapping[str, str | None] | None) -> dict[str, str]:
    """``base`` updated with ``extra``; a ``None`` value removes the variable."""
    env = dict(base)
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    input: str | None = None,
    timeout: float = 30.0,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tokn-router *args``; stdin is closed unless ``input`` is given."""
    return subprocess.run(
        [str(CLI), *args],
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        cwd=cwd,
    )


class _Pump(threading.Thread):
    def __init__(self, stream: Any, sink: list[str], cond: threading.Condition, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stream = stream
        self.sink = sink
        self.cond = cond

    def run(self) -> None:
        try:
            for line in iter(self.stream.readline, ""):
                with self.cond:
                    self.sink.append(line)
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self.cond:
                self.cond.notify_all()


class Daemon:
    """A ``tokn-router`` subprocess with stdout/stderr captured by background threads.

    ``Daemon([...args], env=...).start()`` spawns it; ``wait_ready()`` waits until
    stdout shows ``listening on URL`` (and ``proxy listening on URL`` when
    ``--with-proxy`` is among the args) and fills ``url`` / ``proxy_url``.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str] | None = None,
        exe: Sequence[str] | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.exe = [str(e) for e in exe] if exe is not None else [str(CLI)]
        self.env = dict(env)
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self.proxy_url: str | None = None
        self._out: list[str] = []
        self._err: list[str] = []
        self._cond = threading.Condition()
        self._pumps: list[_Pump] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Daemon:
        self.proc = subprocess.Popen(
            [*self.exe, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [
            _Pump(self.proc.stdout, self._out, self._cond, "daemon-stdout"),
            _Pump(self.proc.stderr, self._err, self._cond, "daemon-stderr"),
        ]
        for p in self._pumps:
            p.start()
        return self

    def wait_ready(self, timeout: float = 20.0) -> Daemon:
        m = self.wait_output(LISTENING_RE, timeout)
        self.url = m.group(1).rstrip("/")
        if "--with-proxy" in self.args:
            m = self.wait_output(PROXY_LISTENING_RE, timeout)
            self.proxy_url = m.group(1).rstrip("/")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit; returns its exit code (TimeoutError if it doesn't)."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise TimeoutError(f"daemon still running after {timeout}s\n{self._describe()}") from e
        for p in self._pumps:
            p.join(5)
        return rc

    def kill(self) -> None:
        """Kill the process (and its process group) if it is still running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        for p in self._pumps:
            p.join(5)
        for s in (self.proc.stdout, self.proc.stderr):
            if s is not None:
                s.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- output ------------------------------------------------------------------------
    @property
    def stdout_text(self) -> str:
        with self._cond:
            return "".join(self._out)

    @property
    def stderr_text(self) -> str:
        with self._cond:
            return "".join(self._err)

    def output_pos(self, stream: str = "stdout") -> int:
        """Current length of a stream's text; pass as ``start=`` to only see newer output."""
        return len(self.stdout_text if stream == "stdout" else self.stderr_text)

    def wait_output(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 10.0,
        *,
        stream: str = "stdout",
        start: int = 0,
    ) -> re.Match[str]:
        """Wait until ``pattern`` matches in ``stream`` ("stdout", "stderr" or "any").

        Searches the whole captured text from offset ``start``. Raises ``TimeoutError``
        (or ``RuntimeError`` if the process exits first) with the captured output.
        """
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                texts = {
                    "stdout": ["".join(self._out)],
                    "stderr": ["".join(self._err)],
                    "any": ["".join(self._out), "".join(self._err)],
                }[stream]
                for t in texts:
                    m = rx.search(t, start)
                    if m:
                        return m
                exited = self.proc is not None and self.proc.poll() is not None
                pumps_done = all(not p.is_alive() for p in self._pumps)
                if exited and pumps_done:
                    raise RuntimeError(
                        f"daemon exited (rc={self.proc.returncode if self.proc else None}) "
                        f"before {rx.pattern!r} appeared\n{self._describe_locked()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{rx.pattern!r} not seen on {stream} within {timeout}s\n{self._describe_locked()}"
                    )
                self._cond.wait(min(left, 0.1))

    def _describe_locked(self) -> str:
        return (
            f"argv: {' '.join([*self.exe, *self.args])}\n"
            f"--- stdout ---\n{''.join(self._out)}\n--- stderr ---\n{''.join(self._err)}"
        )

    def _describe(self) -> str:
        with self._cond:
            return self._describe_locked()

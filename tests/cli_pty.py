"""Run the real ``tokn-router`` with a terminal on stdin (prompts, hidden input, Ctrl-C)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import termios
import time
from collections.abc import Sequence

from tests.fakes.process import CLI


def spawn_on_pty(args: Sequence[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``tokn-router *args`` with stdin/stdout/stderr on a new pty; returns (proc, master)."""
    master, slave = pty.openpty()

    def make_controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [str(CLI), *args],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=make_controlling_tty,  # getpass talks to /dev/tty
    )
    os.close(slave)
    return proc, master


def read_until(master: int, needle: bytes, timeout: float = 15) -> bytes:
    """Read the terminal until ``needle`` appears (TimeoutError with what was seen)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{needle!r} not seen; got {buf!r}")
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def drain(master: int, proc: subprocess.Popen[bytes]) -> bytes:
    """Everything left on the terminal until the process exits; closes ``master``."""
    buf = b""
    while True:
        ready, _, _ = select.select([master], [], [], 10)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    proc.wait(timeout=15)
    os.close(master)
    return buf

"""Reset requests: how ``tokn-router account reset ID`` reaches a running daemon.

Cooldowns and errors live only in a daemon's memory. The command stamps the
account id with the current time in ``account-resets.json`` in the state
directory; every daemon using that config already polls the state directory
for config edits, sees the file change within a second, and resets each
account stamped after it started. A file (rather than an admin endpoint)
needs no listener, no credentials and reaches every daemon of the config
(``serve`` and ``proxy start`` alike); stamps are never consumed, so no daemon
can take one away from another.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tokn_router._fs import atomic_write

FILE_NAME = "account-resets.json"


def path_for(config_path: Path) -> Path:
    return config_path.parent / FILE_NAME


def read(path: Path) -> dict[str, float]:
    """Account id -> reset time (unix seconds); ``{}`` for a missing or foreign file."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        k: float(v)
        for k, v in data.items()
        if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def request(config_path: Path, account_id: str, now: float | None = None) -> float:
    """Stamp ``account_id`` for a reset; returns the stamp."""
    path = path_for(config_path)
    stamps = read(path)
    stamp = time.time() if now is None else now
    # strictly later than the previous stamp, even with a coarse clock
    stamp = max(stamp, stamps.get(account_id, 0.0) + 0.001)
    stamps[account_id] = stamp
    atomic_write(path, json.dumps(stamps, indent=1, sort_keys=True).encode() + b"\n")
    return stamp


def due(stamps: dict[str, float], seen: dict[str, float], since: float) -> list[str]:
    """Ids stamped after ``since`` and after the stamp last acted on (in ``seen``)."""
    return [
        account_id
        for account_id, stamp in stamps.items()
        if stamp > since and stamp > seen.get(account_id, 0.0)
    ]

"""``windows.json`` in the state directory: the accounts' rate windows across restarts.

The daemon saves :meth:`~tokn_router.accounts.pool.Pool.windows_snapshot` here
when a window changes, and restores it at start-up, so an account locked out
for the week is not asked again just because the daemon restarted.
``tokn-router account show`` / ``account list --json`` read it to show the
windows without a running daemon. A missing or damaged file is "nothing
known", never an error.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from tokn_router._fs import atomic_write
from tokn_router.accounts.config import state_dir

log = logging.getLogger("tokn_router.pool")

FILE_NAME = "windows.json"
VERSION = 1


def path_for(config_path: Path) -> Path:
    return state_dir(config_path) / FILE_NAME


def load(path: Path) -> tuple[dict[str, Any], float | None]:
    """(account id -> saved windows, when saved); empty when nothing usable is there."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as e:
        log.warning("%s: ignoring the saved rate windows (%s)", path, e)
        return {}, None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}, None
    accounts = data.get("accounts")
    saved_at = data.get("saved_at")
    return (
        accounts if isinstance(accounts, dict) else {},
        float(saved_at) if isinstance(saved_at, (int, float)) else None,
    )


def save(path: Path, accounts: dict[str, Any]) -> None:
    """Write the snapshot atomically (readers never see half a file)."""
    doc = {"version": VERSION, "saved_at": int(time.time()), "accounts": accounts}
    atomic_write(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


__all__ = ["FILE_NAME", "load", "path_for", "save"]

"""Small helpers shared by the daemon-level tests."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any


def ledger_rows(state_dir: Path) -> list[dict[str, Any]]:
    """Every row of the usage ledger in ``state_dir``, oldest first (read-only)."""
    conn = sqlite3.connect(f"file:{Path(state_dir) / 'usage.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        conn.close()


def stop(daemon: Any) -> None:
    """SIGTERM the daemon and require a clean exit (the ledger is flushed then)."""
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(20) == 0

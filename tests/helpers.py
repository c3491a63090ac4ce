"""Small helpers shared by the daemon-level tests."""

from __future__ import annotations

import json
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


# Anthropic usage with prompt-cache reads and writes: its input_tokens leaves the
# cached tokens out; the ledger's input counts every prompt token the model
# processed (see tokn_router.wire.usage).
CACHED_USAGE = {
    "input_tokens": 10,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 1000,
    "output_tokens": 7,
}
CACHED_LEDGER = {"input": 1110, "output": 7, "cache_read": 100, "cache_write": 1000}


def cached_usage_of(row: dict[str, Any]) -> dict[str, Any]:
    """The ``CACHED_LEDGER`` keys of a row's usage_json."""
    u = json.loads(row["usage_json"])
    return {k: u.get(k) for k in CACHED_LEDGER}


# Every variable `tokn-router proxy env` exports, as a user's tools read them.
PROXY_ENV_NAMES = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "https_proxy",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)

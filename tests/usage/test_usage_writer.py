"""The usage writer and Ledger: batching, flushing, drops, disk errors, disabled.

Each test drives real trio code with ``trio.run`` inside a plain test, against
real SQLite files in ``tmp_path``. Synchronisation uses channel hand-offs
(an unbuffered channel's ``send`` returns only once the writer has taken the
item), never sleeps.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tokn_router.accounts import config
from tokn_router.usage import (
    Attempt,
    Ledger,
    RequestRecord,
    UsageHealth,
    open_ledger,
    run_writer,
)

LOGGER = "tokn_router.usage"


def record(i: int, **kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "ts": 1_800_000_000 + i,
        "started_at_ms": 1_800_000_000_000 + i * 1000,
        "request_id": f"req-{i}",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4.1",
        "account_id": "personal",
        "provider_id": "github-copilot",
        "status": 200,
        "input_tokens": 10,
        "output_tokens": 2,
        "latency_ms": 100.0 + i,
    }
    fields.update(kw)
    return RequestRecord(**fields)


def rows(path: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM requests ORDER BY id").fetchall()
    finally:
        conn.close()


def errors_logged(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_writer_batches_and_flushes_everything_on_close(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    health = UsageHealth(enabled=True, path=str(path))
    full = record(
        0,
        upstream_model="gpt-4.1-2025-04-14",
        initiator="agent",
        stream=True,
        route_mode="switch",
        source="proxy",
        status=200,
        error="client disconnected",
        input_tokens=1200,
        output_tokens=80,
        cached_tokens=1024,
        reasoning_tokens=16,
        latency_ms=812.5,
        ttft_ms=95.25,
        attempts=[Attempt(account_id="work", status=429, error="rate limited")],
        session_id="s-1",
        project_id="p-1",
        endpoint="/v1/responses",
        extra={"native": True},
    )

    async def main() -> None:
        send, receive = trio.open_memory_channel[RequestRecord](2000)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_writer(
                    path, receive, health=health, task_status=task_status
                )
            )
            assert path.exists() and health.ok  # opened before reporting started
            send.send_nowait(full)
            for i in range(1, 1200):
                send.send_nowait(record(i))
            send.close()  # the writer drains, commits and returns

    trio.run(main)
    assert health.rows_written == 1200
    assert health.batches_written == 3  # 500 + 500 + 200: receive_nowait until 500
    assert health.rows_failed == health.rows_dropped == 0
    stored = rows(path)
    assert len(stored) == 1200
    (
        _id,
        ts,
        session_id,
        request_id,
        project_id,
        ver,
        request_error,
        endpoint,
        account_id,
        provider_id,
        model,
        params_json,
        usage_json,
        ctx_json,
        status,
    ) = stored[0]
    assert (ts, session_id, request_id, project_id, ver) == (
        1_800_000_000,
        "s-1",
        "req-0",
        "p-1",
        "v0.2.0",
    )
    assert (request_error, endpoint, account_id, provider_id, model, status) == (
        "client disconnected",
        "/v1/responses",
        "personal",
        "github-copilot",
        "gpt-4.1",
        200,
    )
    assert json.loads(str(params_json)) == {
        "initiator": "agent",
        "stream": True,
        "route_mode": "switch",
        "source": "proxy",
    }
    assert json.loads(str(usage_json)) == {
        "input": 1200,
        "output": 80,
        "cache_read": 1024,
        "reasoning": 16,
        # no measured cost: gpt-4.1's list price (2 / 0.5 cached / 8 USD per 1M) in
        # credits: (176 x 2 + 1024 x 0.5 + 80 x 8) / 1e6 USD x 100
        "credits_est": 0.1504,
    }
    assert json.loads(str(ctx_json)) == {
        "native": True,
        "started_at_ms": 1_800_000_000_000,
        "latency_ms": 812.5,
        "ttft_ms": 95.25,
        "upstream_model": "gpt-4.1-2025-04-14",
        "attempts": [{"account_id": "work", "status": 429, "error": "rate limited"}],
    }
    assert [r[3] for r in stored] == [f"req-{i}" for i in range(1200)]


def test_ledger_from_config_end_to_end(tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.toml"
    ledger = open_ledger(config.Config(), cfg_path)
    assert ledger.path == tmp_path / "usage.db"

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            for i in range(5):
                assert ledger.submit(record(i))
            await ledger.aclose()  # returns once everything is committed
            assert len(rows(tmp_path / "usage.db")) == 5
        assert not ledger.submit(record(99))  # after close: dropped, counted, no raise

    trio.run(main)
    health = ledger.health.as_dict()
    assert health["rows_written"] == 5 and health["rows_dropped"] == 1
    assert set(health) == {
        "enabled",
        "path",
        "ok",
        "last_error",
        "last_error_at",
        "rows_written",
        "rows_dropped",
        "rows_failed",
        "batches_written",
    }


def test_disabled_ledger_writes_nothing(tmp_path: Path) -> None:
    cfg = config.Config(usage=config.UsageConfig(enabled=False))
    ledger = open_ledger(cfg, tmp_path / "config.toml")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            for i in range(3):
                assert ledger.submit(record(i))
            await ledger.aclose()

    trio.run(main)
    assert list(tmp_path.iterdir()) == []
    assert ledger.health.enabled is False and ledger.health.rows_written == 0


def test_full_queue_drops_count_and_log_without_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    ledger = Ledger(tmp_path / "usage.db", capacity=2)

    async def main() -> None:
        # No writer yet: the queue fills after two records.
        results = [ledger.submit(record(i)) for i in range(6)]
        assert results == [True, True, False, False, False, False]
        ledger.close()
        assert ledger.submit(record(7)) is False
        await ledger.run()  # a closed ledger still writes what was queued, then returns

    trio.run(main)
    assert ledger.health.rows_dropped == 5
    assert ledger.health.rows_written == 2
    drops = errors_logged(caplog, logging.WARNING)
    assert len(drops) == 1  # rate-limited: one line per 10 s
    assert "not recorded" in drops[0]


def _unwritable_ledger(tmp_path: Path) -> Ledger:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state dir should be\n")
    # batch_max=1 and retry_interval=0: every record is a batch that retries the
    # database, so the test sees repeated failures that must be logged once.
    return Ledger(blocker / "usage.db", batch_max=1, retry_interval=0)


def test_unwritable_state_dir_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    ledger = _unwritable_ledger(tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            assert ledger.health.ok is False  # known at start-up, for /healthz
            for i in range(4):
                assert ledger.submit(record(i))  # queued; the request path is unaffected
            await ledger.aclose()

    trio.run(main)
    h = ledger.health
    assert h.rows_failed == 4 and h.rows_written == 0 and h.rows_dropped == 0
    assert h.last_error is not None and str(tmp_path / "state") in h.last_error
    logged = errors_logged(caplog, logging.ERROR)
    assert len(logged) == 1
    assert "still served" in logged[0]


def test_write_failure_is_logged_once_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write lock held elsewhere past the busy timeout: fail, fail, then recover."""
    caplog.set_level(logging.WARNING, LOGGER)
    path = tmp_path / "usage.db"
    health = UsageHealth(enabled=True, path=str(path))

    async def main() -> None:
        # Unbuffered and batch_max=1: when send(x) returns, the writer has
        # taken x, so it has finished with every earlier record.
        send, receive = trio.open_memory_channel[RequestRecord](0)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_writer(
                    path,
                    receive,
                    health=health,
                    task_status=task_status,
                    batch_max=1,
                    busy_timeout_ms=50,
                    retry_interval=0,
                )
            )
            locker = sqlite3.connect(path, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")  # holds the write lock
            await send.send(record(1))
            await send.send(record(2))  # record 1 failed: the insert was busy
            assert (health.ok, health.rows_failed) == (False, 1)
            assert health.last_error is not None and "locked" in health.last_error
            await send.send(record(3))  # record 2 failed: reopening was busy
            assert health.rows_failed == 2
            locker.execute("COMMIT")
            locker.close()
            await send.send(record(4))  # record 3 written: recovered
            assert (health.ok, health.rows_written) == (True, 1)
            send.close()

    trio.run(main)
    assert health.rows_written == 2 and health.rows_failed == 2
    assert [r[3] for r in rows(path)] == ["req-3", "req-4"]
    assert len(errors_logged(caplog, logging.ERROR)) == 1
    recovered = errors_logged(caplog, logging.WARNING)
    assert len(recovered) == 1 and "again" in recovered[0] and "2 row(s)" in recovered[0]


def test_cancelled_writer_still_writes_what_it_was_given(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    health = UsageHealth(enabled=True, path=str(path))

    async def main() -> None:
        send, receive = trio.open_memory_channel[RequestRecord](100)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: run_writer(
                    path, receive, health=health, task_status=task_status
                )
            )
            for i in range(3):
                send.send_nowait(record(i))
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert health.rows_written == 3
    assert len(rows(path)) == 3


def test_duplicate_request_id_skips_only_that_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    ledger = Ledger(tmp_path / "usage.db")

    async def main() -> None:
        for r in (record(1), record(1), record(2)):
            ledger.submit(r)
        ledger.close()
        await ledger.run()

    trio.run(main)
    assert ledger.health.rows_written == 2 and ledger.health.rows_failed == 1
    assert any("already recorded" in m for m in errors_logged(caplog, logging.WARNING))


def test_newer_database_is_reported_not_written(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY, ts INTEGER, model TEXT)")
    conn.execute("PRAGMA user_version = 10000")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    ledger = Ledger(path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            ledger.submit(record(1))
            await ledger.aclose()

    trio.run(main)
    assert path.read_bytes() == before
    assert ledger.health.last_error is not None and "v1.0.0" in ledger.health.last_error
    assert ledger.health.rows_failed == 1


FULL_DISK_SCRIPT = """
import json, logging, resource, signal, sys, trio
from pathlib import Path
from typing import Any
from tokn_router.usage import Ledger, RequestRecord

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
# A file size limit makes write() fail with EFBIG, as a full disk fails with ENOSPC.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
ledger = Ledger(Path(sys.argv[1]), batch_max=50)

async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
        for i in range(2000):
            ledger.submit(RequestRecord(ts=1, started_at_ms=1000, request_id=f"r{i}",
                                        endpoint="/v1/chat/completions", model="m",
                                        error="x" * 500))
        await ledger.aclose()

trio.run(main)
print(json.dumps(ledger.health.as_dict()))
"""


def test_full_disk_is_logged_once_and_leaves_a_sound_database(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    res = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    health = json.loads(res.stdout)
    assert health["ok"] is False and "cannot write" in health["last_error"]
    assert health["rows_written"] > 0 and health["rows_failed"] > 0
    assert health["rows_written"] + health["rows_failed"] == 2000
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")] == [
        f"ERROR {LOGGER} usage ledger: {health['last_error']}; requests are still served "
        "but not recorded (retrying every 30s; see /healthz)"
    ]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == health["rows_written"]
    finally:
        conn.close()


def test_malformed_records_are_skipped_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug on the request path loses that record, not the batch or the writer."""
    caplog.set_level(logging.WARNING, LOGGER)
    ledger = Ledger(tmp_path / "usage.db")
    bad_json = record(2, extra={"x": object()})  # msgspec cannot encode it
    bad_bind = record(3, model=["not", "a", "string"])  # sqlite3 cannot bind it

    async def main() -> None:
        for r in (record(1), bad_json, bad_bind, record(4, request_id=None)):
            ledger.submit(r)
        ledger.close()
        await ledger.run()

    trio.run(main)
    assert ledger.health.rows_written == 2 and ledger.health.rows_failed == 2
    assert ledger.health.ok
    assert [r[3] for r in rows(tmp_path / "usage.db")] == ["req-1", None]
    warnings = errors_logged(caplog, logging.WARNING)
    assert any("'req-2' cannot be stored" in m for m in warnings)
    assert any("'req-3' cannot be stored" in m for m in warnings)


def test_rows_arriving_one_by_one_share_a_batch(tmp_path: Path) -> None:
    """Sequential requests report a row each: the writer lingers to batch them."""
    ledger = Ledger(tmp_path / "usage.db")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run)
            for i in range(5):
                ledger.submit(record(i))
                await trio.sleep(0.005)  # virtual time: requests a few ms apart
            await ledger.aclose()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert ledger.health.rows_written == 5
    assert ledger.health.batches_written == 1

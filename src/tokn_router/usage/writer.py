"""The usage-writer task, the request path's non-blocking submit, and the Ledger.

Data flow: request handlers call :meth:`Ledger.submit` (``send_nowait`` on a
bounded trio memory channel, never waits, never raises); one writer task
(:func:`run_writer`, started in the daemon's nursery) takes everything the
channel holds, up to :data:`BATCH_MAX` rows, and inserts it in one transaction
through ``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``. When every
send side is closed the writer drains the channel, commits and returns.

Failures are contained: a full channel drops the row and counts it
(``rows_dropped``); an unwritable database (read-only or full state dir, a
schema newer than the code, a lock held too long) drops the batch and counts
it (``rows_failed``). Each failure episode is logged once on the
``tokn_router.usage`` logger and shown in :class:`UsageHealth` (``/healthz``);
the writer retries the database every ``retry_interval`` seconds and logs
when it writes again. Serving never stops because of the ledger.

It is one module of over 400 lines because the writer task, its batching and its failure
accounting share one loop's state.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from tokn_router.accounts import config as _config
from tokn_router.usage.record import INSERT_SQL, RequestRecord, Row, to_row
from tokn_router.usage.schema import DEFAULT_BUSY_TIMEOUT_MS, UsageDbError, open_db

log = logging.getLogger("tokn_router.usage")

BATCH_MAX = 500  # rows per transaction: one commit per flush, with bounded latency
# How long the writer waits for more rows after the first one. Sequential
# requests would otherwise cost one thread hop and one commit each (the bench
# measured a third of the daemon's CPU per request there); 50 ms is invisible
# in a usage report and bounded by the flush at shutdown.
LINGER_SECS = 0.05
CHANNEL_CAPACITY = 10_000  # rows the request path may get ahead of the disk
RETRY_INTERVAL = 30.0  # seconds between attempts at a database that failed
DROP_LOG_INTERVAL = 10.0  # seconds between two "dropped rows" log lines


@dataclasses.dataclass
class UsageHealth:
    """The ledger's state, for ``/healthz`` (see :meth:`as_dict`).

    Counters are only touched from trio tasks (never from the writer's thread),
    so they need no lock.
    """

    enabled: bool
    path: str
    ok: bool = True  # False while rows cannot be written
    last_error: str | None = None  # the latest failure, kept after a recovery
    last_error_at: float | None = None  # unix seconds
    rows_written: int = 0
    rows_dropped: int = 0  # the channel was full or closed: the request path never waits
    rows_failed: int = 0  # the database could not take them (or refused a duplicate)
    batches_written: int = 0
    # Rate limiting of the "dropped" log line; not part of the public state.
    _drops_unlogged: int = dataclasses.field(default=0, repr=False)
    _drop_logged_at: float | None = dataclasses.field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}

    def note_drop(self, reason: str) -> None:
        """Count one row the request path could not queue; log, at most every 10 s."""
        self.rows_dropped += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if self._drop_logged_at is None or now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            log.warning(
                "usage ledger: %s, %d row(s) not recorded (%d dropped in total)",
                reason,
                self._drops_unlogged,
                self.rows_dropped,
            )
            self._drop_logged_at = now
            self._drops_unlogged = 0


def submit(
    send_channel: trio.MemorySendChannel[RequestRecord],
    record: RequestRecord,
    health: UsageHealth,
) -> bool:
    """Queue a record without waiting; False (counted and logged) if it was dropped."""
    try:
        send_channel.send_nowait(record)
    except trio.WouldBlock:
        health.note_drop("the usage queue is full (the disk is slower than the requests)")
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        health.note_drop("the usage writer has stopped")
    else:
        return True
    return False


# A record the database cannot take as it is (a value msgspec cannot encode, a
# value sqlite3 cannot bind): a bug on the request path, not a disk problem, so
# only that record is lost and the ledger keeps going.
_BAD_RECORD_ERRORS = (
    TypeError,
    ValueError,
    OverflowError,
    msgspec.MsgspecError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
)


def insert_records(conn: sqlite3.Connection, records: Sequence[RequestRecord]) -> int:
    """Insert records in one transaction; returns how many rows were added.

    Blocking: runs in a worker thread. A record whose ``request_id`` is
    already stored is skipped (``INSERT OR IGNORE``) rather than failing the
    whole batch, and so is a malformed record (logged); the caller counts
    the difference. Disk errors raise ``sqlite3.Error`` with nothing written.
    """
    rows: list[Row] = []
    for r in records:
        try:
            rows.append(to_row(r))
        except _BAD_RECORD_ERRORS as e:
            log.warning("usage ledger: record %r cannot be stored: %s", r.request_id, e)
    added = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("SAVEPOINT batch")
        try:
            # rowcount, not total_changes: the latter also counts rows that a
            # ROLLBACK TO undid. Ignored duplicates count 0.
            added = conn.executemany(INSERT_SQL, rows).rowcount
        except (sqlite3.InterfaceError, sqlite3.ProgrammingError):
            # One value could not be bound and executemany stopped part-way:
            # undo its rows, then insert one by one skipping the bad ones.
            conn.execute("ROLLBACK TO batch")
            added = 0
            for row in rows:
                try:
                    added += conn.execute(INSERT_SQL, row).rowcount
                except (sqlite3.InterfaceError, sqlite3.ProgrammingError) as e:
                    log.warning("usage ledger: record %r cannot be stored: %s", row[2], e)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return added


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as e:  # e.g. the final WAL checkpoint hit a full disk
        log.debug("usage ledger: closing the database: %s", e)


class _Sink:
    """The writer's database connection, its failure state and the health counters."""

    def __init__(
        self, path: Path, health: UsageHealth, busy_timeout_ms: int, retry_interval: float
    ) -> None:
        self.path = path
        self.health = health
        self.busy_timeout_ms = busy_timeout_ms
        self.retry_interval = retry_interval
        self.conn: sqlite3.Connection | None = None
        self.retry_at: float | None = None  # trio clock; None = try at once
        self.failing = False
        self.failed_in_episode = 0
        # One connection, used by one thread at a time.
        self.limiter = trio.CapacityLimiter(1)

    async def open(self) -> bool:
        if self.conn is not None:
            return True
        if self.retry_at is not None and trio.current_time() < self.retry_at:
            return False
        try:
            self.conn = await trio.to_thread.run_sync(
                lambda: open_db(self.path, busy_timeout_ms=self.busy_timeout_ms),
                limiter=self.limiter,
            )
        except UsageDbError as e:
            self._failed(str(e))
            return False
        return True

    async def write(self, batch: list[RequestRecord]) -> None:
        if not await self.open():
            self._lost(len(batch))
            return
        conn = self.conn
        assert conn is not None
        try:
            added = await trio.to_thread.run_sync(insert_records, conn, batch, limiter=self.limiter)
        except (sqlite3.Error, OSError) as e:
            self._failed(f"cannot write to the usage database {self.path}: {e}")
            self._lost(len(batch))
            # Start afresh at the next attempt: after an I/O error the
            # connection may be unusable, and reopening re-checks the schema.
            self.conn = None
            await trio.to_thread.run_sync(_close_quietly, conn, limiter=self.limiter)
            return
        self._recovered()
        self.health.rows_written += added
        self.health.batches_written += 1
        if added < len(batch):
            skipped = len(batch) - added
            self.health.rows_failed += skipped
            log.warning(
                "usage ledger: %d row(s) skipped: request_id already recorded, "
                "or the record is malformed",
                skipped,
            )

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await trio.to_thread.run_sync(_close_quietly, conn, limiter=self.limiter)

    def _failed(self, message: str) -> None:
        self.health.ok = False
        self.health.last_error = message
        self.health.last_error_at = time.time()
        self.retry_at = trio.current_time() + self.retry_interval
        if not self.failing:
            # Once per episode: a full disk must not flood the log line per batch.
            log.error(
                "usage ledger: %s; requests are still served but not recorded "
                "(retrying every %gs; see /healthz)",
                message,
                self.retry_interval,
            )
            self.failing = True
            self.failed_in_episode = 0

    def _lost(self, n: int) -> None:
        self.health.rows_failed += n
        self.failed_in_episode += n

    def _recovered(self) -> None:
        if self.failing:
            log.warning(
                "usage ledger: writing to %s again; %d row(s) were not recorded meanwhile",
                self.path,
                self.failed_in_episode,
            )
            self.failing = False
        self.health.ok = True
        self.retry_at = None


def _drain(
    receive_channel: trio.MemoryReceiveChannel[RequestRecord], limit: int
) -> list[RequestRecord]:
    batch: list[RequestRecord] = []
    while len(batch) < limit:
        try:
            batch.append(receive_channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    return batch


async def run_writer(
    path: Path,
    receive_channel: trio.MemoryReceiveChannel[RequestRecord],
    *,
    health: UsageHealth,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    batch_max: int = BATCH_MAX,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    retry_interval: float = RETRY_INTERVAL,
    linger: float = LINGER_SECS,
) -> None:
    """Write every record received to the database at ``path`` until the channel ends.

    Opens (creating or migrating) the database before reporting started, so
    ``await nursery.start(run_writer, ...)`` returns with ``health`` already
    telling whether the ledger is writable. Returns once every send side is
    closed and everything received is committed. If cancelled, the batch in
    hand and whatever the channel still holds are written first (shielded;
    each batch is a few milliseconds).
    """
    sink = _Sink(path, health, busy_timeout_ms, retry_interval)
    with trio.CancelScope(shield=True):
        await sink.open()
    task_status.started()
    try:
        async for first in receive_channel:
            batch = [first]
            try:
                with trio.move_on_after(linger):
                    while len(batch) < batch_max:
                        batch.append(await receive_channel.receive())
            except trio.EndOfChannel:
                pass
            finally:
                # written even when cancelled while lingering
                batch.extend(_drain(receive_channel, batch_max - len(batch)))
                with trio.CancelScope(shield=True):
                    await sink.write(batch)
    finally:
        # Drain before closing the receive side: closing it discards what is
        # buffered. After a normal end of channel this finds nothing.
        with trio.CancelScope(shield=True):
            while leftover := _drain(receive_channel, batch_max):
                await sink.write(leftover)
            await sink.close()
        receive_channel.close()


class Ledger:
    """The usage ledger as the daemon uses it.

    ``submit`` is for the request path; ``run`` is the writer task for the
    daemon's nursery; ``close`` (or ``aclose``, which also waits for the final
    flush) ends it. A disabled ledger accepts and ignores everything.
    """

    def __init__(
        self,
        path: Path,
        *,
        enabled: bool = True,
        capacity: int = CHANNEL_CAPACITY,
        batch_max: int = BATCH_MAX,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.enabled = enabled
        self.path = path
        self.health = UsageHealth(enabled=enabled, path=str(path))
        self._send, self._receive = trio.open_memory_channel[RequestRecord](capacity)
        self._batch_max = batch_max
        self._busy_timeout_ms = busy_timeout_ms
        self._retry_interval = retry_interval
        self._running = False
        self._finished = trio.Event()

    def submit(self, record: RequestRecord) -> bool:
        """Queue a record for writing; never waits, never raises.

        The record belongs to the ledger from then on (it is read in the
        writer's thread): do not change it after submitting.

        Returns False when the record was dropped (full queue, ledger closed);
        the drop is counted in ``health.rows_dropped`` and logged (rate-limited).
        A disabled ledger returns True and keeps nothing.
        """
        if not self.enabled:
            return True
        return submit(self._send, record, self.health)

    def queue_depth(self) -> int:
        """Rows submitted and not yet taken by the writer (for ``/metrics``)."""
        return self._send.statistics().current_buffer_used

    def health_dict(self) -> dict[str, Any]:
        """``health.as_dict()``: the ``usage`` block of ``/healthz``."""
        return self.health.as_dict()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: ``await nursery.start(ledger.run)``."""
        if not self.enabled:
            task_status.started()
            self._finished.set()
            return
        self._running = True
        try:
            await run_writer(
                self.path,
                self._receive,
                health=self.health,
                task_status=task_status,
                batch_max=self._batch_max,
                busy_timeout_ms=self._busy_timeout_ms,
                retry_interval=self._retry_interval,
            )
        finally:
            self._finished.set()

    def close(self) -> None:
        """Close the send side: the writer flushes what is queued and ``run`` returns.

        Submits after this are dropped (and counted). Idempotent.
        """
        self._send.close()

    async def aclose(self) -> None:
        """Close, then wait until the writer has committed everything (if it runs)."""
        self.close()
        if self._running:
            await self._finished.wait()


def open_ledger(cfg: _config.Config, config_path: Path, **kwargs: Any) -> Ledger:
    """The ledger configured by ``[usage]``: ``enabled`` and ``path`` (default: state dir).

    Nothing touches the disk until :meth:`Ledger.run`; a disabled ledger never does.
    """
    path = _config.usage_db_path(cfg, config_path)
    return Ledger(path, enabled=cfg.usage.enabled, **kwargs)


__all__ = [
    "BATCH_MAX",
    "CHANNEL_CAPACITY",
    "Ledger",
    "UsageHealth",
    "insert_records",
    "open_ledger",
    "run_writer",
    "submit",
]

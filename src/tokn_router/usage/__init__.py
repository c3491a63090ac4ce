"""The usage ledger: one SQLite row per request served, and the reports on it.

How the daemon plugs it in (one ``trio.run``, one nursery)::

    from tokn_router.usage import open_ledger, RequestRecord

    ledger = open_ledger(cfg, config_path)      # [usage] enabled / path; no I/O yet
    async with trio.open_nursery() as nursery:
        await nursery.start(ledger.run)          # opens/creates/migrates usage.db
        ...                                      # serve; /healthz shows ledger.health_dict()
        # request path, when a request ends (API listener or proxy):
        ledger.submit(RequestRecord(ts=..., started_at_ms=..., request_id=..., ...))
        # graceful shutdown, after in-flight streams had their grace period:
        await ledger.aclose()                    # close the send side, wait for the flush

- :meth:`Ledger.submit` never waits and never raises: a full queue or a
  closed ledger drops the row, counts it in ``health.rows_dropped`` and logs
  (rate-limited) on the ``tokn_router.usage`` logger.
- :meth:`Ledger.run` (and :func:`run_writer` under it) batches up to 500 rows
  per transaction through ``trio.to_thread`` and ends, having flushed
  everything, when the send side is closed. A disk error (read-only or full
  state dir, a newer schema) is logged once, shown in :class:`UsageHealth`,
  and never stops serving. ``[usage] enabled = false``: ``run`` returns at
  once and ``submit`` keeps nothing; no file is created.
- Schema: :mod:`tokn_router.usage.schema` (``PRAGMA user_version``, forward
  migrations, files in ``sql/`` mirrored in ``schemas/usage/``).
- Reports: :mod:`tokn_router.usage.queries` (``tokn-router usage``).
"""

from tokn_router.usage.record import Attempt, RequestRecord
from tokn_router.usage.schema import NoDatabaseError, UsageDbError, open_db, open_readonly
from tokn_router.usage.writer import Ledger, UsageHealth, open_ledger, run_writer, submit

__all__ = [
    "Attempt",
    "Ledger",
    "NoDatabaseError",
    "RequestRecord",
    "UsageDbError",
    "UsageHealth",
    "open_db",
    "open_ledger",
    "open_readonly",
    "run_writer",
    "submit",
]

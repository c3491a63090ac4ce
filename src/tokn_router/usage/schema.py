"""The usage database: schema files, version tracking, opening and migrations.

The schema version is kept in ``PRAGMA user_version`` (no meta table, so a file
written by the original tool needs nothing added to be recognised), encoded as
``major * 10000 + minor * 100 + patch``: v0.2.0 is 200. The original tool never
set it, so version 0 means "look at the columns": no table at all is a fresh
file, the v0.0.0 columns are migrated, the v0.2.0 columns are adopted as is.

The SQL lives in files packaged beside this module (``sql/``); the copies in the
repository's ``schemas/usage/`` are the reviewed snapshots and a test keeps the
two identical. Migrations are forward only, named ``vA-to-vB.sql``; opening a
database runs every step it needs inside one ``BEGIN IMMEDIATE`` transaction, so
a failure leaves the file exactly as it was. A database newer than this code is
refused with one clear line and never written to.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from tokn_router.errors import ToknError

# The snapshot files follow the VERSION line: while it is v0.2.x, the current
# schema is the v0.2.0 one (the release line names the snapshot, not each patch).
CURRENT = "v0.2.0"
ORIGINAL = "v0.0.0"
# Forward-only steps: (from, to, file in sql/).
MIGRATIONS: tuple[tuple[str, str, str], ...] = (("v0.0.0", "v0.2.0", "v0.0.0-to-v0.2.0.sql"),)

DEFAULT_BUSY_TIMEOUT_MS = 5000

# What detect() returns besides a version string.
EMPTY = "empty"  # no table at all: a fresh file
UNSTAMPED = "unstamped"  # the current columns but user_version never set


class UsageDbError(ToknError):
    """The usage database cannot be opened, migrated or written (one line)."""

    exit_code = 1


class NoDatabaseError(UsageDbError):
    """There is no usage database yet (nothing has been recorded)."""


def version_int(version: str) -> int:
    m = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    major, minor, patch = (int(g) for g in m.groups())
    return major * 10000 + minor * 100 + patch


def version_str(value: int) -> str:
    return f"v{value // 10000}.{value // 100 % 100}.{value % 100}"


CURRENT_INT = version_int(CURRENT)


def sql_text(name: str) -> str:
    """The text of a packaged SQL file (``v0.2.0.sql``, ``v0.0.0-to-v0.2.0.sql``...)."""
    return resources.files("tokn_router.usage").joinpath("sql", name).read_text(encoding="utf-8")


def split_statements(script: str) -> list[str]:
    """Split a script into statements, one per ``execute()``.

    ``executescript()`` cannot be used inside our transaction: on Python 3.11 it
    COMMITs a pending transaction before running, which would make a migration
    non-atomic. ``sqlite3.complete_statement`` uses SQLite's own tokenizer, so
    comments and strings containing ``;`` are handled; the files keep one
    statement per group of lines.
    """
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise ValueError(f"incomplete SQL statement at end of script: {buf.strip()[:60]!r}")
    return statements


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    for statement in split_statements(script):
        conn.execute(statement)


@functools.cache
def _reference(version: str) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """Columns of ``requests`` and (name, sql) of its indexes in a snapshot."""
    conn = sqlite3.connect(":memory:")
    try:
        _run_script(conn, sql_text(f"{version}.sql"))
        cols = frozenset(r[1] for r in conn.execute("PRAGMA table_info(requests)"))
        indexes = tuple(
            conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "ORDER BY name"
            ).fetchall()
        )
    finally:
        conn.close()
    return cols, indexes


def _user_tables(conn: sqlite3.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]


def detect(conn: sqlite3.Connection) -> str | None:
    """The schema a database is in: a version, :data:`EMPTY`, :data:`UNSTAMPED` or None.

    ``PRAGMA user_version`` decides when it is set; version 0 (never set, as
    the original tool left it) is recognised by the columns of ``requests``.
    None means a foreign file (no ``requests`` table, or unknown columns).
    """
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = _user_tables(conn)
    if "requests" not in tables:
        # Many applications set user_version; without our table it is not ours.
        return EMPTY if not tables and not user_version else None
    if user_version:
        return version_str(user_version)
    cols = frozenset(r[1] for r in conn.execute("PRAGMA table_info(requests)"))
    if cols == _reference(ORIGINAL)[0]:
        return ORIGINAL
    if cols == _reference(CURRENT)[0]:
        return UNSTAMPED
    return None


def _describe(path: Path, exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{path}: {exc.strerror or exc}"
    return f"{path}: {exc}"


def _newer_error(path: Path, found: str) -> UsageDbError:
    return UsageDbError(
        f"{path}: the usage database has schema {found}, newer than this tokn-router "
        f"understands ({CURRENT}); upgrade tokn-router or set [usage] path to another file"
    )


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    """Create, migrate or check the schema, in one write transaction."""
    # IMMEDIATE takes the write lock before we look, so two processes opening
    # a fresh file cannot both create the schema.
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = detect(conn)
        if found is None:
            tables = ", ".join(_user_tables(conn))
            raise UsageDbError(
                f"{path}: not a tokn-router usage database (tables: {tables}); "
                "set [usage] path to another file"
            )
        if found == EMPTY:
            _run_script(conn, sql_text(f"{CURRENT}.sql"))
        elif found == UNSTAMPED:
            # The right columns without a version stamp: add what is missing.
            have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            for name, sql in _reference(CURRENT)[1]:
                if name not in have:
                    conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {CURRENT_INT}")
        else:
            found_int = version_int(found)
            if found_int > CURRENT_INT:
                raise _newer_error(path, found)
            while found_int < CURRENT_INT:
                step = next((m for m in MIGRATIONS if version_int(m[0]) == found_int), None)
                if step is None:
                    raise UsageDbError(
                        f"{path}: unknown usage database schema {version_str(found_int)}; "
                        "set [usage] path to another file"
                    )
                try:
                    _run_script(conn, sql_text(step[2]))
                except sqlite3.Error as e:
                    raise UsageDbError(
                        f"{path}: migrating the usage database from {step[0]} to {step[1]} "
                        f"failed, the file is left as it was: {e}"
                    ) from None
                found_int = conn.execute("PRAGMA user_version").fetchone()[0]
                if found_int != version_int(step[1]):  # a broken migration file
                    raise UsageDbError(f"{path}: migration {step[2]} did not reach {step[1]}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _create_private(path: Path) -> None:
    """Create the file ``0600`` before SQLite does (it would use the umask).

    The WAL and shared-memory files SQLite adds later copy this mode.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UsageDbError(
            f"cannot create the directory of the usage database {_describe(path.parent, e)}"
        ) from None
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))


def open_db(path: Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open the ledger read-write: create it, migrate it in place, or check it.

    The connection is in autocommit mode (transactions are explicit), WAL,
    ``synchronous=NORMAL`` (a crash loses at most the last commits, never the
    file), with a busy timeout, and usable from any thread (trio's thread
    cache runs each call on whichever worker is free; the writer serialises
    calls with a ``CapacityLimiter(1)``). Every failure is a
    :class:`UsageDbError` with a one-line message.
    """
    try:
        _create_private(path)
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    except (OSError, sqlite3.Error) as e:
        raise UsageDbError(f"cannot open the usage database {_describe(path, e)}") from None
    try:
        _prepare(conn, path)
        # After the schema is settled, outside any transaction (a journal mode
        # change cannot run inside one). WAL persists in the file; lets the
        # `usage` command read while the daemon writes.
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    except UsageDbError:
        conn.close()
        raise
    except sqlite3.Error as e:
        conn.close()
        raise UsageDbError(f"cannot open the usage database {_describe(path, e)}") from None
    return conn


def _ro_uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"


def open_readonly(
    path: Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> sqlite3.Connection:
    """Open the ledger for reading, e.g. while a daemon writes to it.

    Raises :class:`NoDatabaseError` when the file does not exist or holds no
    schema yet, :class:`UsageDbError` when it is newer or foreign. A database
    in an older schema is migrated first (in place, as the daemon would),
    so the queries only ever see the current one.
    """
    if not path.exists():
        raise NoDatabaseError(f"{path}: no usage database yet")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            _ro_uri(path),
            uri=True,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )

    try:
        conn = connect()
        try:
            found = detect(conn)
        except BaseException:
            conn.close()
            raise
        if found == CURRENT:
            return conn
        conn.close()
        if found == EMPTY:
            raise NoDatabaseError(f"{path}: the usage database is empty")
        if found is None:
            raise UsageDbError(f"{path}: not a tokn-router usage database")
        if found != UNSTAMPED and version_int(found) > CURRENT_INT:
            raise _newer_error(path, found)
        open_db(path, busy_timeout_ms=busy_timeout_ms).close()
        return connect()
    except sqlite3.Error as e:
        raise UsageDbError(f"cannot read the usage database {_describe(path, e)}") from None


@contextlib.contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One consistent snapshot for several SELECTs (WAL readers never block)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


__all__ = [
    "CURRENT",
    "EMPTY",
    "MIGRATIONS",
    "UNSTAMPED",
    "NoDatabaseError",
    "UsageDbError",
    "detect",
    "open_db",
    "open_readonly",
    "read_transaction",
    "sql_text",
    "version_int",
    "version_str",
]

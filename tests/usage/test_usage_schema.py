"""The usage database schema: snapshots, fresh files, migrations, refusals."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest

from tokn_router.usage import schema
from tokn_router.usage.schema import UsageDbError, open_db, open_readonly

SNAPSHOTS = Path(__file__).resolve().parents[2] / "schemas" / "usage"
PACKAGED = Path(schema.__file__).parent / "sql"

# The columns of the v0.2.0 `requests` table, in order (the original tool's files).
V020_COLUMNS = [
    ("id", "INTEGER", 0, 1),
    ("ts", "INTEGER", 1, 0),
    ("session_id", "TEXT", 0, 0),
    ("request_id", "TEXT", 0, 0),
    ("project_id", "TEXT", 0, 0),
    ("ver", "TEXT", 0, 0),
    ("request_error", "TEXT", 0, 0),
    ("endpoint", "TEXT", 0, 0),
    ("account_id", "TEXT", 0, 0),
    ("provider_id", "TEXT", 0, 0),
    ("model", "TEXT", 1, 0),
    ("params_json", "TEXT", 0, 0),
    ("usage_json", "TEXT", 0, 0),
    ("ctx_json", "TEXT", 0, 0),
    ("status", "INTEGER", 0, 0),
]


def _fold(sql: str) -> str:
    """Drop comments, fold whitespace: the layout of a CREATE statement does not matter."""
    no_comments = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return re.sub(r"\s*([(),])\s*", r"\1", " ".join(no_comments.split()))


def normalised(conn: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    rows = conn.execute(
        "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    return [(t, n, tb, _fold(sql)) for t, n, tb, sql in rows]


def from_snapshot(path: Path, name: str) -> sqlite3.Connection:
    """A database made from a snapshot file with plain sqlite3, not our code."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript((SNAPSHOTS / name).read_text())
    return conn


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_packaged_sql_is_the_snapshot() -> None:
    packaged = sorted(p.name for p in PACKAGED.glob("*.sql"))
    assert packaged == sorted(p.name for p in SNAPSHOTS.glob("*.sql"))
    assert {"v0.0.0.sql", "v0.2.0.sql"} <= set(packaged)
    for name in packaged:
        assert schema.sql_text(name) == (SNAPSHOTS / name).read_text(), name
    for _src, _dst, step in schema.MIGRATIONS:
        assert step in packaged


def test_fresh_database_equals_the_v020_snapshot(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "usage.db")
    ref = from_snapshot(tmp_path / "ref.db", "v0.2.0.sql")
    assert normalised(conn) == normalised(ref)
    assert user_version(conn) == user_version(ref) == schema.version_int("v0.2.0") == 200
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [(r[1], r[2], r[3], r[5]) for r in conn.execute("PRAGMA table_info(requests)")]
    assert cols == V020_COLUMNS
    indexes = {
        r[1]: (r[2], [c[2] for c in conn.execute(f"PRAGMA index_info({r[1]})")])
        for r in conn.execute("PRAGMA index_list(requests)")
    }
    assert sorted(indexes.values()) == [
        (0, ["account_id"]),
        (0, ["project_id"]),
        (0, ["session_id"]),
        (0, ["ts"]),
        (1, ["request_id"]),
    ]
    assert (tmp_path / "usage.db").stat().st_mode & 0o777 == 0o600
    conn.close()


V000_ROWS = [
    # id, ts, account_id, provider_id, model, initiator, prompt_tok, completion_tok,
    # latency_ms, status, stream
    (1, 1700000000, "personal", "github-copilot", "gpt-4.1", "user", 120, 30, 812, 200, 1),
    (2, 1700000060, "work", "github-copilot", "claude-sonnet-4", "agent", 5000, 700, 2400, 200, 0),
    (7, 1700000120, "plan", "zai-coding-plan", "glm-4.6", None, None, None, None, 429, 0),
    (9, 1700000180, "personal", "github-copilot", "modèle-ü", "agent", 0, 0, 15, None, 1),
]


def make_v000(path: Path) -> sqlite3.Connection:
    conn = from_snapshot(path, "v0.0.0.sql")
    conn.executemany("INSERT INTO requests VALUES (?,?,?,?,?,?,?,?,?,?,?)", V000_ROWS)
    return conn


def test_v000_database_is_migrated_in_place_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    make_v000(path).close()
    conn = open_db(path)
    ref = from_snapshot(tmp_path / "ref.db", "v0.2.0.sql")
    assert normalised(conn) == normalised(ref)  # migrated == fresh
    assert user_version(conn) == 200
    rows = conn.execute(
        "SELECT id, ts, account_id, provider_id, model, params_json, usage_json, ctx_json, "
        "status, ver, request_id, session_id, project_id, request_error, endpoint "
        "FROM requests ORDER BY id"
    ).fetchall()
    assert len(rows) == len(V000_ROWS)
    for got, (rid, ts, acc, prov, model, init, p_tok, c_tok, lat, status, stream) in zip(
        rows, V000_ROWS, strict=True
    ):
        assert got[:5] == (rid, ts, acc, prov, model)
        assert json.loads(got[5]) == {
            "initiator": init,
            "stream": bool(stream),
            "route_mode": None,
            "source": None,
        }
        assert json.loads(got[6]) == {
            "input": p_tok,
            "output": c_tok,
            "cache_read": None,
            "reasoning": None,
        }
        assert json.loads(got[7]) == {"latency_ms": lat}
        assert got[8] == status
        assert got[9] == "v0.0.0"
        assert got[10:] == (None, None, None, None, None)
    # New rows continue after the migrated ids.
    conn.execute("INSERT INTO requests (ts, model, request_id) VALUES (1, 'm', 'x')")
    assert conn.execute("SELECT max(id) FROM requests").fetchone()[0] == 10
    conn.close()


def test_opening_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    make_v000(path).close()
    open_db(path).close()  # migrates
    before = digest(path)
    conn = open_db(path)
    conn.close()
    assert digest(path) == before
    fresh = tmp_path / "fresh.db"
    open_db(fresh).close()
    before = digest(fresh)
    open_db(fresh).close()
    assert digest(fresh) == before


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = from_snapshot(path, "v0.2.0.sql")
    conn.execute("INSERT INTO requests (ts, model) VALUES (1, 'gpt-4.1')")
    conn.execute("PRAGMA user_version = 300")  # v0.3.0
    conn.close()
    before = digest(path)
    for opener in (open_db, open_readonly):
        with pytest.raises(UsageDbError) as exc:
            opener(path)
        msg = str(exc.value)
        assert "\n" not in msg
        assert "v0.3.0" in msg and "newer" in msg and str(path) in msg
        assert digest(path) == before
    assert not path.with_name("usage.db-wal").exists()


def test_failed_migration_leaves_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    conn = make_v000(path)
    # Another table owns an index name the migration needs: its last step fails.
    conn.execute("CREATE TABLE sessions (id TEXT)")
    conn.execute("CREATE INDEX idx_requests_project_id ON sessions (id)")
    conn.close()
    before = digest(path)
    with pytest.raises(UsageDbError) as exc:
        open_db(path)
    assert "idx_requests_project_id" in str(exc.value)
    assert "from v0.0.0 to v0.2.0 failed" in str(exc.value) and "\n" not in str(exc.value)
    assert digest(path) == before
    check = sqlite3.connect(path)
    assert {r[1] for r in check.execute("PRAGMA table_info(requests)")} >= {"prompt_tok"}
    assert check.execute("SELECT count(*) FROM requests").fetchone()[0] == len(V000_ROWS)
    check.close()


def test_foreign_and_broken_files_are_refused_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all\n" * 300)
    for path, needle in ((foreign, "not a tokn-router usage database"), (garbage, "not a")):
        before = digest(path)
        with pytest.raises(UsageDbError) as exc:
            open_db(path)
        assert needle in str(exc.value) and "\n" not in str(exc.value)
        assert digest(path) == before


def test_unstamped_v020_database_is_adopted(tmp_path: Path) -> None:
    """A file with the v0.2.0 columns but no version stamp (as the original wrote it)."""
    path = tmp_path / "usage.db"
    conn = sqlite3.connect(path)
    table_sql = next(s for s in schema.split_statements(schema.sql_text("v0.2.0.sql")))
    conn.execute(table_sql)
    conn.execute("INSERT INTO requests (ts, model, request_id) VALUES (5, 'gpt-4.1', 'r1')")
    conn.commit()
    conn.close()
    conn = open_db(path)
    ref = from_snapshot(tmp_path / "ref.db", "v0.2.0.sql")
    assert normalised(conn) == normalised(ref)
    assert user_version(conn) == 200
    assert conn.execute("SELECT ts, model, request_id FROM requests").fetchall() == [
        (5, "gpt-4.1", "r1")
    ]
    conn.close()


def test_readonly_open_of_an_old_database_migrates_it(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    make_v000(path).close()
    conn = open_readonly(path)
    assert user_version(conn) == 200
    assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == len(V000_ROWS)
    with pytest.raises(sqlite3.OperationalError):  # really read-only
        conn.execute("DELETE FROM requests")
    conn.close()


def test_version_encoding() -> None:
    assert schema.version_int("v0.2.0") == 200
    assert schema.version_int("1.3.5") == 10305
    assert schema.version_str(200) == "v0.2.0"
    assert schema.version_str(10305) == "v1.3.5"
    with pytest.raises(ValueError):
        schema.version_int("latest")

"""Client keys: the store (keyed hashes, 0600 files, reload) and ``tokn-router keys``."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.process import CLI
from tokn_router.cli import main
from tokn_router.clients.keys import KEYS_FILE, SECRET_FILE, KeyStore
from tokn_router.clients.limits import Limits
from tokn_router.errors import ConfigError, UsageError

KEY_RE = re.compile(r"^tkr_[A-Za-z0-9_-]{43}$")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------- the store


def test_create_stores_only_a_keyed_hash(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = KeyStore(state)
    key, rec = store.create("alice", limits=Limits(rpm=60))
    assert KEY_RE.match(key)
    assert rec.prefix == key[:8] and rec.limits.rpm == 60
    raw = (state / KEYS_FILE).read_text()
    assert key not in raw and key[8:20] not in raw  # neither the key nor a part past the prefix
    assert rec.digest in raw and rec.digest not in key
    # the digest is keyed: a bare SHA-256 of the key is not what is stored
    assert hashlib.sha256(key.encode()).hexdigest() not in raw
    assert mode(state / KEYS_FILE) == 0o600
    assert mode(state / SECRET_FILE) == 0o600
    assert mode(state) == 0o700
    assert key not in repr(rec) and rec.digest not in repr(rec)


def test_verify_accepts_only_the_exact_active_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    now = time.time()
    key, _ = store.create("alice", expires=int(now) + 3600, now=now)
    other, _ = store.create("bob", now=now)
    alice = store.verify(key)
    assert alice is not None and alice.name == "alice"
    bob = store.verify(other)
    assert bob is not None and bob.name == "bob"
    near_miss = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad in (near_miss, key + "x", key[:-1], key.upper(), "", "sk-" + key[4:], " " + key):
        assert store.verify(bad) is None
    # expiry is checked at verify time
    assert store.verify(key, now=now + 3599) is not None
    assert store.verify(key, now=now + 3600) is None
    assert store.identify(key, now=now + 3600)[1] == "expired"
    # a second store on the same dir (another process) verifies the same keys
    assert KeyStore(tmp_path).load().verify(key) is not None


def test_revoke_and_rotate_take_effect_at_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, created = store.create(
        "alice", limits=Limits(models=["gpt-*"], rpm=5), expires=int(time.time()) + 86400
    )
    new_key, rotated = store.rotate("alice")
    assert new_key != key and KEY_RE.match(new_key)
    assert store.verify(key) is None
    again = store.verify(new_key)
    assert again is not None
    assert (again.name, again.limits, again.expires, again.created) == (
        "alice",
        created.limits,
        created.expires,
        created.created,
    )
    assert rotated.rotated is not None and rotated.prefix == new_key[:8]
    rec, changed = store.revoke("alice")
    assert changed and rec.revoked is not None
    assert store.verify(new_key) is None
    assert store.identify(new_key)[1] == "revoked"
    assert store.revoke("alice")[1] is False  # revoking twice is harmless
    with pytest.raises(UsageError, match="revoked"):
        store.rotate("alice")
    # a revoked name may be taken again, with a new key
    fresh, _ = store.create("alice")
    assert store.verify(fresh) is not None and store.verify(new_key) is None
    assert [r.name for r in store.records()] == ["alice"]


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.create("alice")
    with pytest.raises(UsageError, match="already exists"):
        store.create("alice")
    with pytest.raises(UsageError, match="no key named 'carol' \\(keys: alice\\)"):
        store.revoke("carol")
    with pytest.raises(UsageError, match="no key named"):
        store.rotate("carol")
    for name in ("", "a b", "-x", "x" * 65, "ünï"):
        with pytest.raises(UsageError, match="invalid key name"):
            store.create(name)
    with pytest.raises(UsageError, match="future"):
        store.create("bob", expires=int(time.time()) - 1)
    now = time.time()
    store.create("old", expires=int(now) + 10, now=now)
    with pytest.raises(UsageError, match="expired"):
        store.rotate("old", now=now + 11)


def test_reload_if_changed_follows_other_writers(tmp_path: Path) -> None:
    daemon = KeyStore(tmp_path).load()
    assert daemon.reload_if_changed() is False
    cli = KeyStore(tmp_path)
    key, _ = cli.create("alice")
    assert daemon.verify(key) is None  # not seen before a reload
    assert daemon.reload_if_changed() is True
    assert daemon.verify(key) is not None
    assert daemon.reload_if_changed() is False
    cli.revoke("alice")
    assert daemon.reload_if_changed() is True
    assert daemon.verify(key) is None


def test_a_broken_file_keeps_the_loaded_keys(tmp_path: Path) -> None:
    daemon = KeyStore(tmp_path)
    key, _ = daemon.create("alice")
    (tmp_path / KEYS_FILE).write_text('{"format": 1, "keys": [{"name": 3}]}')
    with pytest.raises(ConfigError, match="invalid key store"):
        daemon.reload_if_changed()
    assert daemon.verify(key) is not None
    (tmp_path / KEYS_FILE).write_text("not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        KeyStore(tmp_path).load()


def test_missing_secret_is_reported_and_rotate_recovers(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, _ = store.create("alice")
    (tmp_path / SECRET_FILE).unlink()
    with pytest.raises(ConfigError, match="keys rotate"):
        KeyStore(tmp_path).load()
    listing = KeyStore(tmp_path).load(strict=False)  # names and limits still listable
    assert [r.name for r in listing.records()] == ["alice"]
    new_key, _ = listing.rotate("alice")
    fresh = KeyStore(tmp_path).load()
    assert fresh.verify(new_key) is not None and fresh.verify(key) is None


def test_a_loose_secret_file_is_tightened(tmp_path: Path) -> None:
    KeyStore(tmp_path).create("alice")
    (tmp_path / SECRET_FILE).chmod(0o644)
    KeyStore(tmp_path).load()
    assert mode(tmp_path / SECRET_FILE) == 0o600


# ------------------------------------------------------------------------ the CLI


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_keys_cli_lifecycle(run_cli: Any, env_home: Any) -> None:
    r = run_cli(
        "keys", "create", "alice", "--expires", "30d", "--models", "gpt-*, claude-*",
        "--budget-credits", "300", "--per", "day", "--rpm", "60", "--max-streams", "4",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert KEY_RE.match(key), r.stdout  # the key alone on stdout, for KEY=$(...)
    assert "only once" in r.stderr and key not in r.stderr
    r = run_cli("keys", "create", "bob", "--budget-tokens", "100000", "--per", "week")
    assert r.returncode == 0, r.stderr
    bob_key = r.stdout.strip()

    r = run_cli("keys", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PREFIX", "STATUS", "CREATED", "LAST", "USED", "EXPIRES", "LIMITS", "USE"]  # fmt: skip
    assert lines[1].startswith("alice") and f"{key[:8]}…" in lines[1] and "active" in lines[1]
    assert "gpt-*,claude-*; 300 credits/day; 60 rpm; 4 streams" in lines[1]
    assert "100,000 tokens/week" in lines[2] and "never" in lines[2]
    assert lines[1].endswith("0/300 credits per day")  # no usage ledger yet: nothing spent

    r = run_cli("keys", "list", "--json")
    data = json.loads(r.stdout)
    assert data["format"] == 1
    alice, bob = data["keys"]
    assert alice["name"] == "alice" and alice["prefix"] == key[:8]
    assert alice["status"] == "active" and alice["last_used"] is None
    assert 29 * 86400 < alice["expires_ts"] - alice["created_ts"] <= 30 * 86400
    assert alice["limits"] == {
        "models": ["gpt-*", "claude-*"],
        "budget_credits": 300.0,
        "budget_tokens": None,
        "per": "day",
        "rpm": 60,
        "max_streams": 4,
    }
    assert bob["expires"] is None
    assert bob["use"] == {
        "per": "week",
        "credits": 0.0,
        "tokens": 0,
        "budget_credits": None,
        "budget_tokens": 100000,
    }
    digests = [rec.digest for rec in KeyStore(env_home.state_dir).load().records()]
    for out in (r.stdout, run_cli("keys", "list").stdout):
        for secret in (key, bob_key, *digests):
            assert secret not in out

    r = run_cli("keys", "rotate", "alice")
    assert r.returncode == 0, r.stderr
    rotated = r.stdout.strip()
    assert KEY_RE.match(rotated) and rotated != key
    store = KeyStore(env_home.state_dir).load()
    assert store.verify(key) is None and store.verify(rotated) is not None

    r = run_cli("keys", "revoke", "bob")
    assert r.returncode == 0 and "Revoked key 'bob'" in r.stdout and bob_key not in r.stdout
    assert KeyStore(env_home.state_dir).load().verify(bob_key) is None
    assert "revoked" in run_cli("keys", "list").stdout.splitlines()[2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "dup"], "already exists"),
        (["revoke", "nobody"], "no key named 'nobody'"),
        (["rotate", "nobody"], "no key named 'nobody'"),
        (["create", "x", "--expires", "3x"], "invalid --expires '3x'"),
        (["create", "x", "--expires", "2001-01-01"], "in the past"),
        (["create", "x", "--rpm", "-5"], "--rpm must be a positive number"),
        (["create", "x", "--max-streams", "0"], "--max-streams must be a positive number"),
        (["create", "x", "--budget-credits", "-1", "--per", "day"], "--budget-credits must be"),
        (["create", "x", "--budget-credits", "10"], "add --per day, week or month"),
        (["create", "x", "--per", "day"], "--per needs --budget-credits"),
        (["create", "x", "--per", "year", "--budget-tokens", "5"], "--per"),
        (["create", "x", "--rpm", "many"], "--rpm"),
        (["create", "x", "--models", ","], "--models needs"),
        (["create", "no good"], "invalid key name"),
    ],
)
def test_keys_cli_bad_input_is_one_line_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    # in-process through main(), the console script's own entry point, to keep this fast
    monkeypatch.setenv("TOKN_ROUTER_CONFIG", str(tmp_path / "config.toml"))
    if args[:2] == ["create", "dup"]:
        assert main(["keys", "create", "dup"]) == 0
        capsys.readouterr()
    code = main(["keys", *args])
    out, err = capsys.readouterr()
    line = one_error_line(subprocess.CompletedProcess([], code, out, err))
    assert line.startswith("tokn-router: error:") and message in line
    assert "tkr_" not in out  # nothing was created


def test_keys_list_empty(run_cli: Any) -> None:
    r = run_cli("keys", "list")
    assert r.returncode == 0 and "No client keys" in r.stdout
    assert json.loads(run_cli("keys", "list", "--json").stdout) == {"format": 1, "keys": []}


def test_concurrent_creates_lose_nothing(cli_env: dict[str, str], env_home: Any) -> None:
    names = [f"user{i}" for i in range(4)]
    procs = [
        subprocess.Popen(
            [str(CLI), "keys", "create", n],
            env=cli_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    keys = {}
    for n, p in zip(names, procs, strict=True):
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        keys[n] = out.strip()
    store = KeyStore(env_home.state_dir).load()
    assert sorted(r.name for r in store.records()) == names
    for n, k in keys.items():
        rec = store.verify(k)
        assert rec is not None and rec.name == n

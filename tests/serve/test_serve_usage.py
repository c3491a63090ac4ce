"""The usage ledger fed by a running daemon: rows, robustness, and `tokn-router usage`."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import sqlite3
import threading
from pathlib import Path

import httpx

from tests.fakes import FakeUpstream
from tests.helpers import ledger_rows, stop

CHAT = "/chat/completions"


def chat(url: str, **extra: object) -> httpx.Response:
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "count me"}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def test_rows_carry_usage_for_plain_and_streamed_requests(
    fake: FakeUpstream, write_config, daemon, env_home, run_cli
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    assert chat(d.url).status_code == 200
    plain_usage = fake.last(CHAT).usage
    with httpx.stream(
        "POST",
        d.url + "/v1/chat/completions",
        timeout=30,
        json={
            "model": "gpt-5-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "stream me please"}],
        },
    ) as r:
        r.read()
    stream_usage = fake.last(CHAT).usage
    assert chat(d.url, model="nope").status_code == 404
    stop(d)

    got = ledger_rows(env_home.state_dir)
    assert len(got) == 3
    plain, streamed, missing = got
    assert plain["endpoint"] == "/v1/chat/completions"
    assert plain["account_id"] == "alice" and plain["provider_id"] == "github-copilot"
    assert plain["model"] == "gpt-4.1" and plain["status"] == 200
    u = json.loads(plain["usage_json"])
    assert u["input"] == plain_usage["prompt_tokens"]
    assert u["output"] == plain_usage["completion_tokens"]
    assert u["cache_read"] == plain_usage["prompt_tokens_details"]["cached_tokens"]
    params = json.loads(plain["params_json"])
    assert params == {"initiator": "user", "stream": False, "route_mode": "route", "source": "api"}
    ctx = json.loads(plain["ctx_json"])
    assert ctx["latency_ms"] > 0 and ctx["upstream_model"] == "gpt-4.1"
    assert ctx["attempts"][0]["account_id"] == "alice"

    su = json.loads(streamed["usage_json"])  # streams are metered even without include_usage
    assert su["input"] == stream_usage["prompt_tokens"]
    assert su["output"] == stream_usage["completion_tokens"]
    assert su["reasoning"] == stream_usage["completion_tokens_details"]["reasoning_tokens"] == 2
    assert json.loads(streamed["params_json"])["stream"] is True
    assert json.loads(streamed["ctx_json"])["ttft_ms"] is not None

    assert missing["status"] == 404 and missing["request_error"]
    assert len({r["request_id"] for r in got}) == 3

    out = run_cli("usage", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["totals"]["requests"] == 3 and report["totals"]["errors"] == 1
    assert (
        report["totals"]["input_tokens"]
        == plain_usage["prompt_tokens"] + stream_usage["prompt_tokens"]
    )
    text = run_cli("usage", "--since", "1h").stdout
    assert "alice" in text and "gpt-4.1" in text


def test_failover_attempts_are_recorded(fake: FakeUpstream, write_config, daemon, env_home) -> None:
    write_config(
        {
            "accounts": [
                fake.copilot_account("alice", "gho_alice"),
                fake.copilot_account("bob", "gho_bob"),
            ]
        }
    )
    d = daemon()
    fake.script(CHAT, status=500, text="boom")
    assert chat(d.url).status_code == 200
    stop(d)
    (row,) = ledger_rows(env_home.state_dir)
    attempts = json.loads(row["ctx_json"])["attempts"]
    assert [a["status"] for a in attempts] == [500, 200]
    assert attempts[0]["account_id"] != attempts[1]["account_id"]
    assert "boom" in attempts[0]["error"]


def test_sigterm_under_load_keeps_every_completed_row(
    fake: FakeUpstream, write_config, daemon, env_home
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    done: list[int] = []
    stop_flag = threading.Event()

    def worker() -> None:
        while not stop_flag.is_set():
            try:
                r = chat(d.url)
            except httpx.HTTPError:
                return
            if r.status_code == 200:
                done.append(1)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(worker) for _ in range(6)]
        fake.wait_for(lambda: len(fake.requests_to(CHAT)) >= 60, timeout=30)
        d.send_signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        stop_flag.set()
        for f in futures:
            f.result()
    got = ledger_rows(env_home.state_dir)
    ok = [r for r in got if r["status"] == 200]
    assert len(ok) >= len(done)


def test_sigkill_mid_load_leaves_a_sound_database(
    fake: FakeUpstream, write_config, daemon, env_home
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    stop_flag = threading.Event()

    def worker() -> None:
        while not stop_flag.is_set():
            try:
                chat(d.url)
            except httpx.HTTPError:
                return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    db = env_home.state_dir / "usage.db"
    fake.wait_for(lambda: len(fake.requests_to(CHAT)) >= 40, timeout=30)
    d.send_signal(signal.SIGKILL)
    d.wait_exit(10)
    stop_flag.set()
    for t in threads:
        t.join(10)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("SELECT count(*) FROM requests").fetchone()
    finally:
        conn.close()


def test_unwritable_ledger_path_keeps_serving(
    fake: FakeUpstream, write_config, daemon, tmp_path: Path, wait_for
) -> None:
    # a path under a regular file can never be created, even by root
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    write_config(
        {
            "usage": {"path": str(blocker / "usage.db")},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon()
    for _ in range(3):
        assert chat(d.url).status_code == 200
    health = httpx.get(d.url + "/healthz").json()
    assert health["status"] == "ok"
    assert health["usage"]["last_error"]
    assert d.stderr_text.count("usage") >= 1
    stop(d)


def test_disabled_ledger_writes_nothing(fake: FakeUpstream, write_config, daemon, env_home) -> None:
    write_config(
        {"usage": {"enabled": False}, "accounts": [fake.copilot_account("alice", "gho_alice")]}
    )
    d = daemon()
    assert chat(d.url).status_code == 200
    stop(d)
    assert not (env_home.state_dir / "usage.db").exists()

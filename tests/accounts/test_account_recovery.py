"""Accounts coming back: failed token exchanges, restarts, edits and `account reset`.

A real daemon against the fake GitHub/Copilot upstream, plus in-process tests of
the pool and the refresher (their back-off constants injected so they run fast).
"""

from __future__ import annotations

import functools
import time

import httpx
import httpx2
import pytest
import tomlkit
import trio

from tests.fakes import FakeUpstream
from tests.helpers import ledger_rows, stop
from tokn_router.accounts.pool import Pool
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.refresher import (
    REQUEST_RETRY_SECS,
    RETRY_CAP_SECS,
    RETRY_FIRST_SECS,
    Refresher,
    backoff_delay,
)
from tokn_router.accounts.schema import Account, AccountSettings, Config

CHAT = "/chat/completions"


def chat(url: str, account: str | None = None) -> httpx.Response:
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-Tokn-Account": account} if account else {}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def health(url: str) -> dict[str, dict]:
    return {a["id"]: a for a in httpx.get(url + "/healthz", timeout=10).json()["accounts"]}


# ------------------------------------------------------------- token exchange


def test_backoff_is_capped_and_starts_within_30s() -> None:
    delays = [backoff_delay(n, RETRY_FIRST_SECS, RETRY_CAP_SECS) for n in range(1, 12)]
    assert delays[0] <= 30
    assert delays == sorted(delays)
    assert max(delays) == RETRY_CAP_SECS == 300
    assert REQUEST_RETRY_SECS <= 30
    assert backoff_delay(10_000, 1.0, 5.0) == 5.0  # no overflow deep into an outage


def test_failed_exchange_comes_back(fake: FakeUpstream, write_config, daemon, wait_for) -> None:
    gh_a = fake.github_account("gho_a")
    gh_a.exchange_failure = 500
    write_config(
        {
            # upstream failures cool down for long: the exchange's recovery must not wait for it
            "pool": {"failure_cooldown_secs": 600},
            "accounts": [
                fake.copilot_account("acct-a", "gho_a"),
                fake.copilot_account("acct-b", "gho_b"),
            ],
        }
    )
    d = daemon()
    assert chat(d.url).status_code == 200  # acct-b serves meanwhile
    r = chat(d.url, "acct-a")
    assert r.status_code == 503
    assert "acct-a: Copilot token exchange failed: HTTP 500" in r.json()["error"]["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 30  # first retry within 30 s
    before = health(d.url)["acct-a"]
    exchanges = fake.exchange_count("gho_a")
    # pinned requests while it is held back: no exchange each, no longer cooldown
    for _ in range(5):
        again = chat(d.url, "acct-a")
        assert again.status_code == 503
        assert "Copilot token exchange failed: HTTP 500" in again.json()["error"]["message"]
    after = health(d.url)["acct-a"]
    assert after["cooldown_until"] == before["cooldown_until"]
    assert fake.exchange_count("gho_a") == exchanges
    assert "Copilot token exchange failed: HTTP 500" in after["last_error"]

    gh_a.exchange_failure = None  # GitHub is back
    wait_for(lambda: chat(d.url, "acct-a").status_code == 200, timeout=60)
    assert fake.last(CHAT).login == "a"
    state = health(d.url)["acct-a"]
    assert state["state"] == "healthy" and "last_error" not in state


def test_refresher_retries_with_injected_backoff(fake: FakeUpstream) -> None:
    gh = fake.github_account("gho_fast")
    gh.exchange_failure = 503
    acc = Account(
        id="fast", refresh_token="gho_fast", refresh_url=fake.url + "/copilot_internal/v2/token"
    )
    pool = Pool(Config(accounts=[acc]))
    st = pool.states[0]
    persisted: list[Credential] = []

    async def persist(_id: str, cred: Credential) -> None:
        persisted.append(cred)

    async def until(cond, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        with trio.fail_after(limit):
            # the fake runs in another thread: nothing here to wait on but its state
            while not cond():  # noqa: ASYNC110
                await trio.sleep(0.01)

    async def go() -> None:
        async with httpx2.AsyncClient() as client, trio.open_nursery() as n:
            ref = Refresher(pool, client, Config().github, persist, retry_first=0.05, retry_cap=0.2)
            n.start_soon(ref.run_account, st)
            await until(lambda: fake.exchange_count("gho_fast") >= 4)
            # (whether it is usable right now depends on where in its short hold we look)
            assert st.credential is None and st.exchange_failures >= 3
            assert st.last_error and "token exchange failed: HTTP 503" in st.last_error
            assert st.credential_hold_until - time.time() <= 0.2  # held no longer than the cap
            gh.exchange_failure = None
            await until(lambda: st.credential is not None)
            assert st.usable(time.time()) and st.last_error is None
            assert st.exchange_failures == 0
            assert persisted and persisted[-1].api_base == fake.url
            n.cancel_scope.cancel()

    trio.run(go)


# ------------------------------------------------------------------- restart


def _offline_proxy() -> dict:
    # anything not on 127.0.0.1 goes to a dead proxy: a guessed API base fails fast,
    # and nothing leaves the machine
    return {"url": "http://127.0.0.1:9", "no_proxy": ["127.0.0.1"]}


def test_restart_uses_the_endpoint_the_exchange_named(
    fake: FakeUpstream, write_config, daemon, env_home, wait_for
) -> None:
    write_config(
        {"proxy": _offline_proxy(), "accounts": [fake.copilot_account("alice", "gho_alice")]}
    )
    d = daemon()
    assert chat(d.url).status_code == 200

    def stored() -> dict:
        doc = tomlkit.parse(env_home.config_path.read_text()).unwrap()
        return doc["accounts"][0]

    wait_for(lambda: stored().get("api_base_url") == fake.url, timeout=15)
    assert stored()["access_token"]
    d.kill()  # SIGKILL: nothing else is written on the way out
    d2 = daemon()
    for _ in range(3):
        r = chat(d2.url)
        assert r.status_code == 200, r.text
    assert fake.exchange_count("gho_alice") == 1  # the stored token and endpoint were used
    assert [x.status for x in fake.requests_to(CHAT)] == [200] * 4


def test_stored_token_without_endpoint_is_exchanged_at_start(
    fake: FakeUpstream, write_config, daemon
) -> None:
    # a token persisted by an older version: its proxy-ep names a host that is not
    # where this account's API lives
    token, exp = fake.issue_copilot_token("gho_alice")
    acc = fake.copilot_account(
        "alice", "gho_alice", access_token=token, access_token_expires_at=exp
    )
    write_config({"proxy": _offline_proxy(), "accounts": [acc]})
    d = daemon()
    r = chat(d.url)
    assert r.status_code == 200, r.text
    assert fake.exchange_count("gho_alice") == 1


# --------------------------------------------------------- edits and reset


def _cool_down_alice(fake: FakeUpstream, url: str) -> None:
    fake.script(
        CHAT,
        status=429,
        headers={"Retry-After": "600"},
        json={"error": {"message": "slow down"}},
    )
    assert chat(url).status_code == 503
    state = health(url)["alice"]
    assert state["state"] == "cooling_down" and "slow down" in state["last_error"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("base_url", None), ("settings.editor_version", "vscode/1.99.9")],
    ids=["credential", "other-field"],
)
def test_editing_an_account_clears_its_cooldown(
    fake: FakeUpstream, write_config, daemon, run_cli, wait_for, key: str, value: str | None
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    _cool_down_alice(fake, d.url)
    pos = d.output_pos("stderr")
    r = run_cli("config", "set", "--account", "alice", key, value or fake.url)
    assert r.returncode == 0, r.stderr
    d.wait_output(r"config reloaded", stream="stderr", start=pos)
    state = wait_for(lambda: (s := health(d.url)["alice"])["state"] == "healthy" and s)
    assert "last_error" not in state
    assert chat(d.url).status_code == 200


def test_daemon_own_token_writes_keep_the_cooldown() -> None:
    acc = Account(id="alice", refresh_token="gho_alice")
    pool = Pool(Config(accounts=[acc]))
    st = pool.states[0]
    st.set_credential(Credential(token="tok-2", expires_at=2_000_000_000, api_base="https://x"))
    pool.cool_down(st, 600, "HTTP 429: slow down")
    until = st.cooldown_until
    # what Daemon._persist writes back after an exchange
    minted = Account(
        id="alice",
        refresh_token="gho_alice",
        access_token="tok-2",
        access_token_expires_at=2_000_000_000,
        api_base_url="https://x",
    )
    pool.apply_config(Config(accounts=[minted]))
    assert st.cooldown_until == until and st.last_error == "HTTP 429: slow down"
    edited = Account(
        id="alice",
        refresh_token="gho_alice",
        access_token="tok-2",
        settings=AccountSettings(editor_version="vscode/1.99.9"),
    )
    pool.apply_config(Config(accounts=[edited]))
    assert pool.states[0] is st
    assert st.cooldown_until == 0 and st.last_error is None and st.usable(time.time())


def test_account_reset_clears_a_running_daemons_cooldown(
    fake: FakeUpstream, write_config, daemon, run_cli, wait_for
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    _cool_down_alice(fake, d.url)
    pos = d.output_pos("stderr")
    r = run_cli("account", "reset", "alice")
    assert r.returncode == 0, r.stderr
    assert "alice" in r.stdout
    d.wait_output(r"account alice reset", stream="stderr", start=pos)
    assert health(d.url)["alice"]["state"] == "healthy"
    assert chat(d.url).status_code == 200
    # a second reset is seen too (stamps only grow)
    _cool_down_alice(fake, d.url)
    pos = d.output_pos("stderr")
    assert run_cli("account", "reset", "alice").returncode == 0
    d.wait_output(r"account alice reset", stream="stderr", start=pos)
    assert chat(d.url).status_code == 200


def test_account_reset_unknown_id_is_one_line(fake: FakeUpstream, write_config, run_cli) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    r = run_cli("account", "reset", "nobody")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "nobody" in lines[0] and "alice" in lines[0]
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------- attribution


def test_503_rows_name_the_account_tried(
    fake: FakeUpstream, write_config, daemon, env_home
) -> None:
    fake.github_account("gho_a").exchange_failure = 500
    write_config(
        {
            "accounts": [
                fake.copilot_account("acct-a", "gho_a"),
                fake.copilot_account("bob", "gho_bob"),
            ]
        }
    )
    d = daemon()
    fake.script(CHAT, status=502, text="gateway exploded", times=1)
    assert chat(d.url).status_code == 503  # bob (the only one with a token) failed
    assert chat(d.url, "acct-a").status_code == 503  # pinned to an account held back
    stop(d)
    rows = ledger_rows(env_home.state_dir)
    assert [(r["status"], r["account_id"]) for r in rows] == [(503, "bob"), (503, "acct-a")]


def test_usage_for_an_unknown_account_says_so(
    fake: FakeUpstream, write_config, daemon, run_cli, env_home
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    r = run_cli("usage", "--account", "nobody")  # no ledger yet
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no account 'nobody'" in lines[0]
    d = daemon()
    assert chat(d.url).status_code == 200
    stop(d)
    r = run_cli("usage", "--account", "nobody")
    assert r.returncode == 2 and "no account 'nobody'" in r.stderr
    assert r.stdout == ""
    # an account that left the config still has its history
    write_config({"accounts": []})
    r = run_cli("usage", "--account", "alice")
    assert r.returncode == 0, r.stderr
    assert "alice" in r.stdout


def test_a_silent_github_does_not_hold_the_exchange_for_the_read_timeout() -> None:
    """The token exchange is a control-plane call: it gives up after its own short timeout."""

    async def go() -> None:
        async def silent(stream: trio.SocketStream) -> None:
            await trio.sleep_forever()  # accepts the connection, never answers

        async with trio.open_nursery() as n:
            listeners = await n.start(
                functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            acc = Account(
                id="slow",
                refresh_token="gho_slow",
                refresh_url=f"http://127.0.0.1:{port}/copilot_internal/v2/token",
            )
            pool = Pool(Config(accounts=[acc]))
            st = pool.states[0]

            async def persist(_id: str, cred: Credential) -> None:
                raise AssertionError("nothing to persist")

            # the daemon's client reads streams for minutes; the exchange must not
            async with httpx2.AsyncClient(timeout=300) as client:
                ref = Refresher(pool, client, Config().github, persist, control_timeout=0.3)
                with trio.fail_after(10):
                    assert await ref.refresh(st) is False
            assert st.last_error and "token exchange failed" in st.last_error
            n.cancel_scope.cancel()

    trio.run(go)

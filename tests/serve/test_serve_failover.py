"""Pool behaviour of a running daemon: round robin, failover, cooldown, refresh,
rate windows and quotas, quota-aware order, reserves, sticky sessions."""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import httpx
import pytest

from tests.fakes import FakeUpstream, http_date
from tests.helpers import ledger_rows, stop

CHAT = "/chat/completions"


def chat(url: str, **extra: object) -> httpx.Response:
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=20)


def logins(fake: FakeUpstream) -> list[str | None]:
    return [r.login for r in fake.requests_to(CHAT)]


@pytest.fixture
def two_accounts(fake: FakeUpstream, write_config) -> None:
    write_config(
        {
            "pool": {"failure_cooldown_secs": 60},
            "accounts": [
                fake.copilot_account("alice", "gho_alice"),
                fake.copilot_account("bob", "gho_bob"),
            ],
        }
    )


def test_round_robin_order(fake: FakeUpstream, two_accounts: None, daemon) -> None:
    d = daemon()
    for _ in range(4):
        assert chat(d.url).status_code == 200
    seen = logins(fake)
    assert sorted(seen[:2]) == ["alice", "bob"]
    assert seen[2:] == seen[:2]  # alternates in a fixed order


def test_429_retry_after_fails_over_and_cools_down(
    fake: FakeUpstream, two_accounts: None, daemon
) -> None:
    d = daemon()
    fake.script(
        CHAT,
        token="gho_alice",
        status=429,
        headers={"Retry-After": "120"},
        json={"error": {"message": "rate limited", "code": "rate_limited"}},
    )
    for _ in range(4):
        assert chat(d.url).status_code == 200
    # alice was tried once (429), then left alone while cooling down
    alice = [r for r in fake.requests_to(CHAT) if r.login == "alice"]
    assert len(alice) == 1 and alice[0].status == 429
    health = httpx.get(d.url + "/healthz").json()
    state = {a["id"]: a for a in health["accounts"]}
    assert state["alice"]["state"] == "cooling_down"
    assert 100 <= state["alice"]["retry_after_secs"] <= 120
    assert state["bob"]["state"] == "healthy"


def test_retry_after_http_date(fake: FakeUpstream, two_accounts: None, daemon) -> None:
    d = daemon()
    fake.script(
        CHAT,
        token="gho_alice",
        status=429,
        headers={"Retry-After": http_date(300)},
        json={"error": {"message": "slow down"}},
    )
    fake.script(
        CHAT,
        token="gho_bob",
        status=429,
        headers={"Retry-After": http_date(300)},
        json={"error": {"message": "slow down"}},
    )
    r = chat(d.url)
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "all_accounts_unavailable"
    assert "slow down" in err["message"] and "429" in err["message"]
    assert 250 <= int(r.headers["retry-after"]) <= 301
    # every candidate now cools down: immediate 503 without touching upstream
    before = len(fake.requests_to(CHAT))
    r2 = chat(d.url)
    assert r2.status_code == 503 and int(r2.headers["retry-after"]) > 200
    assert len(fake.requests_to(CHAT)) == before


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_fails_over(fake: FakeUpstream, two_accounts: None, daemon, status: int) -> None:
    d = daemon()
    fake.script(CHAT, status=status, text="upstream broke")
    r = chat(d.url)
    assert r.status_code == 200
    first, second = fake.requests_to(CHAT)
    assert first.status == status and second.status == 200
    assert first.login != second.login


def test_connect_error_fails_over(fake: FakeUpstream, write_config, daemon) -> None:
    dead = fake.copilot_account("dead", "gho_dead", base_url="http://127.0.0.1:9")
    write_config({"accounts": [dead, fake.copilot_account("bob", "gho_bob")]})
    d = daemon()
    for _ in range(2):
        assert chat(d.url).status_code == 200
    health = {a["id"]: a for a in httpx.get(d.url + "/healthz").json()["accounts"]}
    assert health["dead"]["state"] == "cooling_down"
    assert "cannot reach" in health["dead"]["last_error"]


def test_timeout_before_headers_fails_over(fake: FakeUpstream, write_config, daemon) -> None:
    write_config(
        {
            "upstream": {"read_timeout_secs": 1.0},
            "accounts": [
                fake.copilot_account("alice", "gho_alice"),
                fake.copilot_account("bob", "gho_bob"),
            ],
        }
    )
    d = daemon()
    fake.script(CHAT, hang=True)
    r = chat(d.url)
    assert r.status_code == 200
    assert len(fake.requests_to(CHAT)) == 2
    fake.wait_disconnect(1)  # the hung request was abandoned


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_client_errors_relayed_untouched(
    fake: FakeUpstream, two_accounts: None, daemon, status: int
) -> None:
    d = daemon()
    body = {
        "error": {
            "message": "bad thing",
            "code": "bad",
            "type": "invalid_request_error",
            "param": None,
        }
    }
    fake.script(CHAT, status=status, json=body)
    r = chat(d.url)
    assert r.status_code == status
    assert r.json() == body
    assert len(fake.requests_to(CHAT)) == 1  # no failover


def test_401_refreshes_once_and_retries_same_account(
    fake: FakeUpstream, write_config, daemon
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    assert chat(d.url).status_code == 200
    assert fake.exchange_count("gho_alice") == 1
    fake.revoke_copilot_tokens("gho_alice")
    r = chat(d.url)
    assert r.status_code == 200
    assert fake.exchange_count("gho_alice") == 2
    statuses = [x.status for x in fake.requests_to(CHAT)]
    assert statuses == [200, 401, 200]


def test_concurrent_401s_refresh_single_flight(fake: FakeUpstream, write_config, daemon) -> None:
    import concurrent.futures

    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    assert chat(d.url).status_code == 200
    fake.revoke_copilot_tokens("gho_alice")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: chat(d.url).status_code, range(8)))
    assert results == [200] * 8
    assert fake.exchange_count("gho_alice") == 2  # one refresh for all eight


def test_403_html_twice_cools_down_with_hint(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    page = "<html><head><title>Forbidden</title></head><body>Access denied</body></html>"
    fake.script(CHAT, status=403, html=page, times=2)
    r = chat(d.url)
    assert r.status_code == 503
    msg = r.json()["error"]["message"]
    assert "403" in msg and "identity headers" in msg
    assert fake.exchange_count("gho_alice") == 2  # refreshed once in between


def test_403_html_relayed_as_openai_error_when_not_account_fault(
    fake: FakeUpstream, write_config, daemon
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    fake.script(CHAT, status=400, html="<html><title>Bad</title>nope</html>")
    r = chat(d.url)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "upstream_error" and "Bad" in err["message"]


def test_cooldown_expires(fake: FakeUpstream, write_config, daemon, wait_for) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    fake.script(CHAT, status=429, headers={"Retry-After": "1"}, json={"error": {"message": "x"}})
    r = chat(d.url)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) <= 2
    wait_for(
        lambda: httpx.get(d.url + "/healthz").json()["accounts"][0]["state"] == "healthy",
        timeout=10,
    )
    assert chat(d.url).status_code == 200


def test_exponential_cooldown_without_retry_after(fake: FakeUpstream, write_config, daemon) -> None:
    write_config(
        {
            "pool": {"failure_cooldown_secs": 10},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon()
    fake.script(CHAT, status=500, text="x")
    assert chat(d.url).status_code == 503
    first = httpx.get(d.url + "/healthz").json()["accounts"][0]["retry_after_secs"]
    assert 8 <= first <= 10


def test_refresh_ahead_of_expiry_persists_token(
    fake: FakeUpstream, write_config, daemon, env_home, wait_for
) -> None:
    acc = fake.github_account("gho_alice")
    acc.expires_in = 302  # refresh is due 5 minutes before expiry: almost at once
    acc.refresh_in = 1500
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    wait_for(lambda: fake.exchange_count("gho_alice") >= 3, timeout=15)
    text = env_home.config_path.read_text()
    assert "access_token = " in text and "access_token_expires_at" in text
    assert chat(d.url).status_code == 200


def test_stored_valid_token_is_used_without_exchange(
    fake: FakeUpstream, write_config, daemon
) -> None:
    token, exp = fake.issue_copilot_token("gho_alice")
    write_config(
        {
            "accounts": [
                fake.copilot_account(
                    "alice",
                    "gho_alice",
                    access_token=token,
                    access_token_expires_at=exp,
                    base_url=fake.url,
                )
            ]
        }
    )
    d = daemon()
    assert chat(d.url).status_code == 200
    assert fake.exchange_count("gho_alice") == 0


def test_revoked_github_token_disables_account(
    fake: FakeUpstream, write_config, daemon, wait_for
) -> None:
    fake.github_account("gho_gone").exchange_failure = 401
    write_config(
        {
            "accounts": [
                fake.copilot_account("gone", "gho_gone"),
                fake.copilot_account("bob", "gho_bob"),
            ]
        }
    )
    d = daemon()
    assert chat(d.url).status_code == 200
    health = {a["id"]: a for a in httpx.get(d.url + "/healthz").json()["accounts"]}
    assert health["gone"]["state"] == "disabled"
    assert "401" in health["gone"]["disabled_reason"]
    for _ in range(3):
        chat(d.url)
    d.wait_output(r"account gone disabled", stream="stderr")
    assert d.stderr_text.count("account gone disabled") == 1
    assert {r.login for r in fake.requests_to(CHAT)} == {"bob"}


def test_all_unavailable_names_last_error(fake: FakeUpstream, two_accounts: None, daemon) -> None:
    d = daemon()
    fake.script(CHAT, status=502, text="gateway exploded", times=2)
    r = chat(d.url)
    assert r.status_code == 503
    assert "gateway exploded" in r.json()["error"]["message"]
    assert r.headers["retry-after"]


def test_unreachable_token_exchange_is_not_retried_per_request(
    fake: FakeUpstream, two_accounts: None, daemon
) -> None:
    fake.github_account("gho_alice").exchange_failure = 500  # GitHub having a bad day
    d = daemon()
    for _ in range(4):
        assert chat(d.url).status_code == 200
    assert {r.login for r in fake.requests_to(CHAT)} == {"bob"}
    # start-up attempt + at most one request-time attempt, then the account cools down
    assert fake.exchange_count("gho_alice") <= 2
    health = {a["id"]: a for a in httpx.get(d.url + "/healthz").json()["accounts"]}
    assert health["alice"]["state"] in ("cooling_down", "no_credential")


# ------------------------------------------------------- rate windows and quotas

DAY = 86400
WEEKLY_429 = {
    "status": 429,
    "headers": {"retry-after": str(4 * DAY), "x-ratelimit-exceeded": "global-usage-weekly-key"},
    "json": {"error": {"message": "weekly rate limit", "code": "user_weekly_rate_limited"}},
}


def accounts(d_url: str) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in httpx.get(d_url + "/healthz").json()["accounts"]}


def listed(run_cli: Any) -> dict[str, dict[str, Any]]:
    r = run_cli("account", "list", "--json")
    assert r.returncode == 0, r.stderr
    return {a["id"]: a for a in json.loads(r.stdout)["accounts"]}


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_weekly_429_shuts_the_account_until_reset_across_restarts(
    fake: FakeUpstream, write_config, daemon, run_cli, env_home, wait_for
) -> None:
    # base_url: the restarted daemon reuses the minted tokens without an exchange
    write_config(
        {
            "accounts": [
                fake.copilot_account("alice", "gho_alice", base_url=fake.url),
                fake.copilot_account("bob", "gho_bob", base_url=fake.url),
            ]
        }
    )
    d = daemon()
    fake.script(CHAT, token="gho_alice", **WEEKLY_429)
    for _ in range(5):
        assert chat(d.url).status_code == 200
    alice = [r for r in fake.requests_to(CHAT) if r.login == "alice"]
    assert [r.status for r in alice] == [429]  # asked once, then never hammered
    health = accounts(d.url)
    assert health["alice"]["state"] == "cooling_down"
    assert health["alice"]["cooldown_window"] == "weekly"
    assert 4 * DAY - 120 <= health["alice"]["retry_after_secs"] <= 4 * DAY
    weekly = health["alice"]["windows"]["weekly"]
    assert weekly["remaining_pct"] == 0.0
    assert "global-usage-weekly-key" in weekly["reason"]
    assert health["bob"]["state"] == "healthy"
    # the CLI shows it from the saved windows
    shown = wait_for(lambda: listed(run_cli)["alice"]["windows"].get("weekly"), timeout=15)
    assert shown["exhausted_until"] == weekly["exhausted_until"]
    assert listed(run_cli)["bob"]["windows"].get("weekly") is None
    stop(d)
    rows = ledger_rows(env_home.state_dir)
    failed_over = [json.loads(r["ctx_json"])["attempts"] for r in rows]
    first = next(a for a in failed_over if len(a) == 2)
    assert [(a["account_id"], a["status"]) for a in first] == [("alice", 429), ("bob", 200)]
    assert "weekly window used up" in first[0]["error"]
    assert all(r["status"] == 200 and r["account_id"] == "bob" for r in rows)
    # a restart does not forget the lock-out
    d2 = daemon()
    assert accounts(d2.url)["alice"]["cooldown_window"] == "weekly"
    for _ in range(3):
        r = chat(d2.url)
        assert r.status_code == 200, (r.text, d2.stderr_text)
    assert len([r for r in fake.requests_to(CHAT) if r.login == "alice"]) == 1


def test_burst_429_keeps_the_short_back_off(fake: FakeUpstream, two_accounts: None, daemon) -> None:
    d = daemon()
    fake.script(CHAT, token="gho_alice", status=429, json={"error": {"message": "slow down"}})
    for _ in range(2):
        assert chat(d.url).status_code == 200
    alice = accounts(d.url)["alice"]
    assert alice["state"] == "cooling_down" and 50 <= alice["retry_after_secs"] <= 60
    assert "cooldown_window" not in alice and "windows" not in alice


def premium_chat(url: str) -> httpx.Response:
    return chat(url, model="claude-sonnet-4.5")  # billing.multiplier 1 in the fake


def test_402_quota_shuts_premium_models_until_the_quota_resets(
    fake: FakeUpstream, two_accounts: None, daemon, env_home
) -> None:
    reset = time.time() + 9 * DAY
    for token in ("gho_alice", "gho_bob"):  # both equally full: round robin
        fake.github_account(token).premium_reset = iso(reset)
    d = daemon()
    for _ in range(2):  # both accounts answer once: their quota snapshots are known
        assert chat(d.url).status_code == 200
    fake.script(
        CHAT,
        token="gho_alice",
        status=402,
        json={"code": "quota_exceeded", "message": "You have no quota"},
    )
    for _ in range(4):
        assert premium_chat(d.url).status_code == 200
    premium = [r for r in fake.requests_to(CHAT) if r.json["model"] == "claude-sonnet-4.5"]
    assert [r.status for r in premium if r.login == "alice"] == [402]
    alice = accounts(d.url)["alice"]
    assert alice["state"] == "quota_exhausted"
    assert alice["cooldown_window"] == "premium_interactions"
    assert abs(alice["cooldown_until"] - reset) <= 2  # until the reset it last reported
    assert alice["windows"]["premium_interactions"]["premium_only"] is True
    # free (0x) models do not need premium headroom: alice still serves them
    before = len(fake.requests_to(CHAT))
    for _ in range(4):
        assert chat(d.url).status_code == 200
    free = fake.requests_to(CHAT)[before:]
    assert {r.login for r in free} == {"alice", "bob"}
    stop(d)
    rows = ledger_rows(env_home.state_dir)
    attempts = [json.loads(r["ctx_json"])["attempts"] for r in rows]
    switched = [a for a in attempts if len(a) == 2]
    assert len(switched) == 1
    assert [(a["account_id"], a["status"]) for a in switched[0]] == [("alice", 402), ("bob", 200)]
    assert "quota used up" in switched[0][0]["error"]


def test_window_readings_shown_and_routing_prefers_headroom(
    fake: FakeUpstream, two_accounts: None, daemon, run_cli, wait_for
) -> None:
    reset = int(time.time()) + 3 * 3600
    session = f"ent=0&ov=0.0&ovPerm=false&rem=12.5&rst={urllib.parse.quote(iso(reset))}"
    fake.github_account("gho_alice").rate_windows = {"session": session}
    d = daemon()
    for _ in range(2):  # nothing known yet: round robin
        assert chat(d.url).status_code == 200
    assert sorted(logins(fake)) == ["alice", "bob"]
    windows = accounts(d.url)["alice"]["windows"]
    assert windows["session"]["remaining_pct"] == 12.5
    assert windows["session"]["reset_at"] == reset
    assert windows["premium_interactions"]["remaining_pct"] == 80.0
    for _ in range(4):
        assert chat(d.url).status_code == 200
    assert logins(fake)[2:] == ["bob"] * 4  # bob has more left (unknown: not half used)
    wait_for(lambda: "session" in listed(run_cli)["alice"]["windows"], timeout=15)
    r = run_cli("account", "show", "alice")
    assert r.returncode == 0, r.stderr
    assert "session: 12.5% left, resets" in r.stdout


def test_reserve_keeps_an_account_for_last_resort(fake: FakeUpstream, write_config, daemon) -> None:
    write_config(
        {
            "pool": {"failure_cooldown_secs": 60},
            "accounts": [
                fake.copilot_account("alice", "gho_alice", reserve_percent=50),
                fake.copilot_account("bob", "gho_bob"),
            ],
        }
    )
    fake.github_account("gho_alice").rate_windows = {"weekly": "ent=0&rem=40"}
    fake.github_account("gho_bob").rate_windows = {"weekly": "ent=0&rem=20"}
    d = daemon()
    for _ in range(2):
        assert chat(d.url).status_code == 200
    assert accounts(d.url)["alice"]["reserve_percent"] == 50
    for _ in range(3):
        assert chat(d.url).status_code == 200
    # alice has more left, but below her reserve: out of rotation while bob can serve
    assert logins(fake)[2:] == ["bob"] * 3
    fake.script(CHAT, token="gho_bob", status=500, text="down")
    assert chat(d.url).status_code == 200  # the last resort
    assert logins(fake)[-2:] == ["bob", "alice"]


# ---------------------------------------------------------------- sticky sessions


def conversation(turns: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "plan"}]
    for i in range(turns):
        msgs += [{"role": "assistant", "content": f"step {i}"}, {"role": "user", "content": "go"}]
    return msgs


def test_sticky_sessions_keep_a_conversation_on_its_account(
    fake: FakeUpstream, write_config, daemon, env_home
) -> None:
    write_config(
        {
            "pool": {"failure_cooldown_secs": 0},  # a failed account is usable again at once
            "accounts": [
                fake.copilot_account("alice", "gho_alice"),
                fake.copilot_account("bob", "gho_bob"),
            ],
        }
    )
    d = daemon()
    # a hash of the first messages: every turn of one conversation on one account
    for turns in range(4):
        assert chat(d.url, messages=conversation(turns)).status_code == 200
    hashed = logins(fake)
    assert len(set(hashed)) == 1
    # Claude Code's metadata.user_id (native /v1/messages)
    user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "s-1"})
    for _ in range(3):
        r = httpx.post(
            d.url + "/v1/messages",
            json={
                "model": "claude-sonnet-4.5",
                "max_tokens": 64,
                "metadata": {"user_id": user_id},
                "messages": [{"role": "user", "content": "hello"}],
            },
            timeout=20,
        )
        assert r.status_code == 200
    assert len({x.login for x in fake.requests_to("/v1/messages")}) == 1
    # Codex's prompt_cache_key (/v1/responses)
    for _ in range(3):
        r = httpx.post(
            d.url + "/v1/responses",
            json={"model": "gpt-4.1", "input": "hi", "prompt_cache_key": "codex-1"},
            timeout=20,
        )
        assert r.status_code == 200
    assert len({x.login for x in fake.requests_to("/responses")}) == 1

    # an explicit X-Tokn-Session; it moves only when its account fails
    def tokn(session: str) -> httpx.Response:
        body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
        return httpx.post(
            d.url + "/v1/chat/completions",
            json=body,
            headers={"X-Tokn-Session": session},
            timeout=20,
        )

    start = len(fake.requests_to(CHAT))
    for _ in range(3):
        assert tokn("conv-x").status_code == 200
    pinned = {x.login for x in fake.requests_to(CHAT)[start:]}
    assert len(pinned) == 1
    (first,) = pinned
    other = "bob" if first == "alice" else "alice"
    fake.script(CHAT, token=f"gho_{first}", status=500, text="broken")
    assert tokn("conv-x").status_code == 200
    for _ in range(3):  # the failed account is usable again, yet the conversation stays
        assert tokn("conv-x").status_code == 200
    after = [x.login for x in fake.requests_to(CHAT)[start + 3 :]]
    assert after == [first, other, other, other, other]
    stop(d)
    rows = ledger_rows(env_home.state_dir)
    sessions = [json.loads(r["ctx_json"]).get("session") for r in rows]
    assert all(s and len(s["key"]) == 32 for s in sessions)
    assert {s["source"] for s in sessions} == {"prompt", "claude_code", "codex", "header"}
    moved = [s for s in sessions if "switched_from" in s]
    assert moved == [{**moved[0], "switched_from": first, "switch_reason": "failed"}]
    assert moved[0]["source"] == "header"
    # keys only: neither the prompt nor the client's ids reach the ledger
    ctx = " ".join(r["ctx_json"] for r in rows)
    assert "You are terse" not in ctx and "conv-x" not in ctx and "codex-1" not in ctx

"""Pool behaviour of a running daemon: round robin, failover, cooldown, refresh."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes import FakeUpstream, http_date

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

"""`/v1/models` at start-up: answered at once, then from upstream, after a token refresh if needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import trio

from tests.fakes import FakeUpstream
from tests.helpers import stop
from tokn_router.accounts import config as config_mod
from tokn_router.accounts.pool import Pool
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.providers.copilot import CopilotProvider
from tokn_router.accounts.refresher import Refresher
from tokn_router.net.client import ProxySetting, make_client

EXCHANGE = "/copilot_internal/v2/token"
# in the fake's upstream list, not in the packaged static one: seen only once the
# live list was read
LIVE_ONLY = "text-embedding-3-small"


def _models(url: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/v1/models", timeout=10)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def _openai_shape(entry: dict[str, Any], provider: str = "github-copilot") -> None:
    assert entry["object"] == "model"
    assert entry["created"] == 0
    assert entry["owned_by"] == provider
    assert entry["x_tokn_router"]["provider"] == provider


def test_models_answer_at_once_while_the_first_exchange_hangs(
    fake: FakeUpstream, write_config, daemon
) -> None:
    fake.script(EXCHANGE, hang=True)
    write_config({"accounts": [fake.copilot_account("a1", "gho_alice")]})
    d = daemon()
    fake.wait_for_requests(EXCHANGE)  # under way, and never answered
    # before, the handler waited for every account's first exchange and model
    # read (up to 15 s): the 10 s client timeout would have fired
    data = _models(d.url)
    assert [m["id"] for m in data] == list(CopilotProvider.static_models)
    for entry in data:
        _openai_shape(entry)
        assert entry["x_tokn_router"]["source"] == "static"
    assert "limit" in data[0]["x_tokn_router"]  # gpt-4.1's packaged metadata
    assert fake.requests_to("/models") == []
    # the SDK's own model type takes the static entries
    client = openai.OpenAI(base_url=d.url + "/v1", api_key="x", max_retries=0, timeout=10)
    assert [m.owned_by for m in client.models.list().data] == ["github-copilot"] * len(data)


def test_a_revoked_token_is_refreshed_and_the_live_list_served(
    fake: FakeUpstream, write_config, daemon, wait_for, env_home
) -> None:
    # a token persisted by an earlier run, revoked since: /models answers 401
    token, expires = fake.issue_copilot_token("gho_alice")
    fake.revoke_copilot_tokens("gho_alice")
    write_config(
        {
            "accounts": [
                fake.copilot_account(
                    "a1",
                    "gho_alice",
                    access_token=token,
                    access_token_expires_at=expires,
                    base_url=fake.url,
                )
            ]
        }
    )
    d = daemon()

    def live() -> list[dict[str, Any]] | None:
        data = _models(d.url)
        if data and all(m["x_tokn_router"]["source"] == "upstream" for m in data):
            return data
        return None

    # before, a 401 left the static list in place for ten minutes
    data = wait_for(live)
    by_id = {m["id"]: m for m in data}
    assert LIVE_ONLY in by_id
    for entry in data:
        _openai_shape(entry)
    assert by_id["gpt-4.1"]["capabilities"]["family"]  # upstream's own fields kept
    assert [r.status for r in fake.requests_to("/models")] == [401, 200]
    assert fake.exchange_count("gho_alice") == 1
    new_token = fake.requests_to("/models")[-1].token
    assert new_token and new_token != token
    assert new_token in env_home.config_path.read_text()  # persisted for the next start
    # at the default log level a request leaves no line on stderr
    r = httpx.post(
        d.url + "/v1/chat/completions",
        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 200
    stop(d)  # stderr is complete once the daemon exited
    assert "tokn_router.request" not in d.stderr_text
    assert "/v1/chat/completions" not in d.stderr_text


def test_fetch_models_refreshes_once_on_403(fake: FakeUpstream, tmp_path: Path) -> None:
    token, expires = fake.issue_copilot_token("gho_bob")
    fake.script("/models", status=403, json={"message": "Forbidden"}, times=1)
    path = tmp_path / "config.toml"
    cfg = config_mod.parse(
        "[[accounts]]\n"
        'id = "b1"\n'
        'provider = "github-copilot"\n'
        'refresh_token = "gho_bob"\n'
        f'refresh_url = "{fake.url}{EXCHANGE}"\n'
        f'base_url = "{fake.url}"\n'
        f'access_token = "{token}"\n'
        f"access_token_expires_at = {expires}\n",
        path,
    )
    pool = Pool(cfg)
    (st,) = pool.states
    persisted: list[str] = []

    async def persist(account_id: str, cred: Credential) -> None:
        persisted.append(account_id)

    async def main() -> None:
        async with make_client(ProxySetting()) as client:
            await Refresher(pool, client, cfg.github, persist).fetch_models(st)

    trio.run(main)
    assert LIVE_ONLY in st.models
    assert [r.status for r in fake.requests_to("/models")] == [403, 200]
    assert fake.exchange_count("gho_bob") == 1
    assert persisted == ["b1"]

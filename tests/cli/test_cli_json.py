"""``--json`` on the listing commands: one parseable object on stdout, secrets redacted."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.cli.test_cli_accounts import GHO, ZAI_KEY, setup_accounts
from tests.fakes import FakeUpstream


def as_json(r: Any) -> Any:
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return json.loads(r.stdout)


def no_secrets(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text


def test_account_list_json(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    _, token = setup_accounts(fake, write_config)
    r = run_cli("account", "list", "--json")
    data = as_json(r)
    assert data["format"] == 1
    by_id = {a["id"]: a for a in data["accounts"]}
    assert list(by_id) == ["alice", "cn", "fresh", "old"]
    assert by_id["alice"]["provider"] == "github-copilot" and by_id["alice"]["enabled"] is True
    assert by_id["alice"]["token_state"] == "valid"
    assert by_id["alice"]["token_expires_at"] > time.time()
    assert by_id["cn"] == {
        "id": "cn",
        "provider": "zhipuai",
        "enabled": False,
        "token_state": "static_key",
        "token_expires_at": None,
        "reserve_percent": 0.0,
        "windows": {},  # none seen yet
    }
    assert by_id["fresh"]["token_state"] == "not_minted"
    assert by_id["old"]["token_state"] == "expired"
    no_secrets(r.stdout, GHO, token, ZAI_KEY)
    # no accounts: still an object, not the human sentence
    write_config("")
    assert as_json(run_cli("account", "list", "--json")) == {
        "format": 1,
        "accounts": [],
        "windows_saved_at": None,
    }


def test_account_show_json(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    _, token = setup_accounts(fake, write_config)
    gh = fake.github_account(GHO)
    gh.premium_remaining, gh.premium_entitlement = 120, 300
    r = run_cli("account", "show", "alice", "--json")
    acc = as_json(r)["account"]
    assert acc["id"] == "alice" and acc["provider_display_name"] == "GitHub Copilot"
    assert acc["config"]["refresh_token"] == "gho_al…(redacted)"
    assert acc["config"]["settings"]["user_agent"] == "MyAgent/1.0"
    snap = acc["quota"]["quota_snapshots"]["premium_interactions"]
    assert snap["remaining"] == 120 and snap["entitlement"] == 300
    assert acc["quota_error"] is None
    assert "contacting" not in r.stdout  # stdout is the object alone
    no_secrets(r.stdout, GHO, token)
    # a quota failure is a field, not a crash
    fake.script("/copilot_internal/user", status=500, json={"message": "boom"})
    acc = as_json(run_cli("account", "show", "alice", "--json"))["account"]
    assert acc["quota"] is None and "500" in acc["quota_error"]
    # API-key accounts have no quota fields and make no request
    fake.reset()
    acc = as_json(run_cli("account", "show", "cn", "--json"))["account"]
    assert acc["config"]["api_key"] == "zai-…(redacted)" and "quota" not in acc
    assert fake.requests == []


def test_headers_json(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    _, token = setup_accounts(fake, write_config)
    r = run_cli("headers", "--json")
    data = as_json(r)
    assert data["format"] == 1 and data["account"] == "alice" and data["enabled"] is True
    assert data["provider"] == "github-copilot" and data["base_url"]
    assert data["headers"]["Authorization"] == {"value": "Bearer tid=fa…(redacted)", "source": None}
    assert data["headers"]["User-Agent"] == {"value": "MyAgent/1.0", "source": "account"}
    no_secrets(r.stdout, token, GHO)


def test_config_get_and_list_json(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    setup_accounts(fake, write_config)
    assert as_json(run_cli("config", "get", "server.port", "--json")) == 4141
    assert as_json(run_cli("config", "get", "server.host", "--json")) == "127.0.0.1"
    assert as_json(run_cli("config", "get", "proxy_mode.intercept_hosts", "--json")) == []
    server = as_json(run_cli("config", "get", "server", "--json"))
    assert server["port"] == 4141 and server["route_mode"] == "route"
    secret = as_json(run_cli("config", "get", "refresh_token", "--account", "alice", "--json"))
    assert secret == "gho_al…(redacted)"
    r = run_cli("config", "list", "--json")
    data = as_json(r)
    assert data["server"]["port"] == 4141 and data["pool"]["failure_cooldown_secs"] == 60
    assert [a["id"] for a in data["accounts"]] == ["alice", "cn", "fresh", "old"]
    assert data["accounts"][1]["api_key"] == "zai-…(redacted)"
    no_secrets(r.stdout, GHO, ZAI_KEY)


def test_proxy_ca_show_json(run_cli: Any, env_home: Any) -> None:
    data = as_json(run_cli("proxy", "ca", "show", "--json"))
    text = run_cli("proxy", "ca", "show").stdout
    assert data["format"] == 1
    assert data["certificate"] == str(env_home.state_dir / "ca" / "ca.crt")
    assert data["bundle"] == str(env_home.state_dir / "ca" / "ca-bundle.crt")
    assert f"sha256:       {data['sha256']}" in text
    assert data["pem"].startswith("-----BEGIN CERTIFICATE-----") and data["pem"] in text
    assert data["not_valid_before"] < data["not_valid_after"]
    assert data["not_valid_after"].endswith("+00:00")
    assert "PRIVATE KEY" not in json.dumps(data)

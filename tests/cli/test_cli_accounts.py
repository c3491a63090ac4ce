"""``tokn-router account list|show|remove`` and ``tokn-router headers``."""

from __future__ import annotations

import os
import subprocess
import time
import tomllib
from typing import Any

from tests.fakes import FakeUpstream

GHO = "gho_alice0123456789"
ZAI_KEY = "zai-secret-key-0123456789"


def one_error_line(r: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    assert r.returncode != 0, r.stdout
    if code is not None:
        assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def setup_accounts(fake: FakeUpstream, write_config: Any) -> tuple[Any, str]:
    token, expires = fake.issue_copilot_token(GHO)
    cfg = {
        "accounts": [
            {
                "id": "alice",
                "provider": "github-copilot",
                "refresh_token": GHO,
                "access_token": token,
                "access_token_expires_at": expires,
                "refresh_url": f"{fake.url}/copilot_internal/v2/token",
                "settings": {"user_agent": "MyAgent/1.0", "initiator_mode": "agent"},
            },
            {"id": "cn", "provider": "zhipuai", "api_key": ZAI_KEY, "enabled": False},
            {"id": "fresh", "provider": "github-copilot", "refresh_token": "gho_fresh0123456789"},
            {
                "id": "old",
                "provider": "github-copilot",
                "refresh_token": "gho_old0123456789",
                "access_token": "tid=old;exp=1:mac",
                "access_token_expires_at": int(time.time()) - 7200,
            },
        ]
    }
    return write_config(cfg), token


def no_secrets(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text


def test_account_list(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    _, token = setup_accounts(fake, write_config)
    r = run_cli("account", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "PROVIDER", "ENABLED", "TOKEN", "EXPIRY"]
    assert lines[1].split()[:3] == ["alice", "github-copilot", "yes"] and "(in 29m)" in lines[1]
    assert lines[2].split() == ["cn", "zhipuai", "no", "static", "key"]
    assert lines[3].split()[:3] == ["fresh", "github-copilot", "yes"] and "not minted" in lines[3]
    assert lines[4].split()[0] == "old" and "(expired 2h ago)" in lines[4]
    no_secrets(r.stdout, GHO, token, ZAI_KEY)


def test_no_accounts(run_cli: Any) -> None:
    r = run_cli("account", "list")
    assert r.returncode == 0 and "No accounts" in r.stdout and "tokn-router login" in r.stdout
    assert "no accounts configured" in one_error_line(run_cli("headers"))


def test_account_show_copilot_with_quota(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    _, token = setup_accounts(fake, write_config)
    gh = fake.github_account(GHO)
    gh.premium_remaining, gh.premium_entitlement = 120, 300
    r = run_cli("account", "show", "alice")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "id:            alice" in out and "GitHub Copilot" in out
    assert "refresh_token: gho_al…(redacted)" in out and "access_token:  tid=fa…(redacted)" in out
    assert "user_agent: MyAgent/1.0" in out and "initiator_mode: agent" in out
    assert "quota:" in out and "premium_interactions: 120 of 300" in out and "(40.0%)" in out
    no_secrets(out + r.stderr, GHO, token)
    (req,) = fake.requests_to("/copilot_internal/user")
    assert req.github_token == GHO


def test_account_show_quota_failure_still_shows_the_rest(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    setup_accounts(fake, write_config)
    fake.script("/copilot_internal/user", status=500, json={"message": "boom"})
    r = run_cli("account", "show", "alice")
    assert r.returncode == 0, r.stderr
    assert "id:            alice" in r.stdout
    notes = [ln for ln in r.stdout.splitlines() if ln.startswith("quota:")]
    assert len(notes) == 1 and "unavailable" in notes[0] and "500" in notes[0]
    no_secrets(r.stdout, GHO)


def test_account_show_zai(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    setup_accounts(fake, write_config)
    r = run_cli("account", "show", "cn")
    assert r.returncode == 0, r.stderr
    assert "enabled:       no" in r.stdout and "api_key:       zai-…(redacted)" in r.stdout
    assert "https://open.bigmodel.cn/api/paas/v4 (default)" in r.stdout
    assert "quota" not in r.stdout
    no_secrets(r.stdout, ZAI_KEY)
    assert fake.requests == []  # no network for API-key accounts


def test_account_show_unknown(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    setup_accounts(fake, write_config)
    line = one_error_line(run_cli("account", "show", "bob"))
    assert "no account with id 'bob'" in line and "alice" in line


def test_account_remove(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    path, _ = setup_accounts(fake, write_config)
    path.write_text("# my accounts\n" + path.read_text())
    before = path.read_bytes()
    line = one_error_line(run_cli("account", "remove", "bob"))
    assert "no account with id 'bob'" in line
    assert path.read_bytes() == before
    r = run_cli("account", "remove", "cn", "--yes")
    assert r.returncode == 0 and "Removed account 'cn'" in r.stdout
    text = path.read_text()
    assert text.startswith("# my accounts\n")
    assert [a["id"] for a in tomllib.loads(text)["accounts"]] == ["alice", "fresh", "old"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_headers_default_account(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    _, token = setup_accounts(fake, write_config)
    r = run_cli("headers")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("# account 'alice' (github-copilot)")
    h = dict(ln.split(": ", 1) for ln in lines[1:])
    assert h["Authorization"] == "Bearer tid=fa…(redacted)"
    assert h["User-Agent"] == "MyAgent/1.0"
    assert h["Editor-Version"].startswith("vscode/")
    assert h["Copilot-Integration-Id"] == "vscode-chat"
    assert h["X-Initiator"] == "agent"  # the account's initiator_mode
    assert h["X-Request-Id"] == "<request-id>"
    no_secrets(r.stdout, token, GHO)


def test_headers_other_accounts(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    setup_accounts(fake, write_config)
    r = run_cli("headers", "--account", "cn")
    assert r.returncode == 0, r.stderr
    assert "[disabled]" in r.stdout and "Authorization: Bearer zai-…(redacted)" in r.stdout
    no_secrets(r.stdout, ZAI_KEY)
    r = run_cli("headers", "--account", "fresh")
    assert "Authorization: Bearer <Copilot token, minted at first use>" in r.stdout
    assert "X-Initiator: <user|agent" in r.stdout
    no_secrets(r.stdout, "gho_fresh0123456789")
    assert "no account with id 'zz'" in one_error_line(run_cli("headers", "--account", "zz"))


def test_account_show_quota_gives_up_on_a_silent_github(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    path, _ = setup_accounts(fake, write_config)
    path.write_text("[upstream]\nconnect_timeout_secs = 1\n\n" + path.read_text())
    fake.script("/copilot_internal/user", hang=True)
    started = time.monotonic()
    r = run_cli("account", "show", "alice", timeout=30)
    assert time.monotonic() - started < 10
    assert r.returncode == 0, r.stderr
    assert f"contacting GitHub at {fake.url} for the quota…" in r.stdout
    (quota,) = [ln for ln in r.stdout.splitlines() if ln.startswith("quota:")]
    assert "unavailable" in quota and "did not answer within 1s" in quota


def test_account_remove_asks_first(
    fake: FakeUpstream, run_cli: Any, write_config: Any, cli_env: dict[str, str]
) -> None:
    from tests.cli_pty import drain, read_until, spawn_on_pty

    path, _ = setup_accounts(fake, write_config)
    before = path.read_bytes()
    # no terminal to ask on: refuse rather than delete silently
    line = one_error_line(run_cli("account", "remove", "cn"), code=2)
    assert "without confirmation" in line and "--yes" in line
    assert path.read_bytes() == before
    # on a terminal: "n" keeps it
    proc, master = spawn_on_pty(["account", "remove", "cn"], cli_env)
    try:
        seen = read_until(master, b"[y/N] ")
        assert b"Remove account 'cn' (zhipuai)?" in seen
        os.write(master, b"n\n")
        seen += drain(master, proc)
    finally:
        proc.kill()
    assert proc.returncode == 1 and b"was kept" in seen
    assert path.read_bytes() == before
    # "y" removes it
    proc, master = spawn_on_pty(["account", "remove", "cn"], cli_env)
    try:
        read_until(master, b"[y/N] ")
        os.write(master, b"y\n")
        seen = drain(master, proc)
    finally:
        proc.kill()
    assert proc.returncode == 0 and b"Removed account 'cn'" in seen
    assert [a["id"] for a in tomllib.loads(path.read_text())["accounts"]] == [
        "alice",
        "fresh",
        "old",
    ]

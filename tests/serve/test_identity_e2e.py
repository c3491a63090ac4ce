"""The editor identity as Copilot sees it: a real daemon against the fakes, the config's
[identity] over the packaged set (picked up on reload), per-account device ids that
`tokn-router headers` reports alike, and what a 466 or an HTML 403 tells the user."""

from __future__ import annotations

import json
import signal

import httpx

from tests.fakes import FakeUpstream

CHAT = "/chat/completions"
EXCHANGE = "/copilot_internal/v2/token"
DEVICE = ("vscode-sessionid", "vscode-machineid", "editor-device-id")


def _chat(url: str, account: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "who am I"}]},
        headers={"x-tokn-account": account},
        timeout=30,
    )


def test_identity_layers_device_ids_and_reload(
    fake: FakeUpstream, write_config, daemon, run_cli
) -> None:
    cfg = {
        "identity": {"github_api_version": "2026-09-15", "token_api_version": "2026-01-02"},
        "accounts": [
            fake.copilot_account("alice", "gho_alice"),
            fake.copilot_account("bob", "gho_bob", settings={"user_agent": "BobAgent/1"}),
        ],
    }
    path = write_config(cfg)
    d = daemon()
    for who in ("alice", "alice", "bob"):
        assert _chat(d.url, who).status_code == 200
    a1, a2, b = fake.requests_to(CHAT)
    for rec in (a1, b):
        assert rec.header("x-github-api-version") == "2026-09-15"  # [identity]
        assert rec.header("editor-version") == "vscode/1.140.0"  # packaged
    assert a1.header("user-agent") == "GitHubCopilotChat/0.68.0"
    assert b.header("user-agent") == "BobAgent/1"  # [accounts.settings] win
    assert all(a1.header(h) == a2.header(h) for h in DEVICE)  # stable per account
    assert all(a1.header(h) != b.header(h) for h in DEVICE)  # and per account
    assert a1.header("x-request-id") != a2.header("x-request-id")
    assert a1.header("x-interaction-type") == "conversation-panel"
    # the token exchange presents the same identity, with its own API version
    ex = fake.requests_to(EXCHANGE)[-1]
    assert ex.header("x-github-api-version") == "2026-01-02"
    assert ex.header("editor-version") == "vscode/1.140.0"

    # `tokn-router headers` shows what the daemon sends (same install id) and why
    out = run_cli("headers", "--account", "bob", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)["headers"]
    assert shown["VScode-MachineId"]["value"] == b.header("vscode-machineid")
    assert shown["User-Agent"] == {"value": "BobAgent/1", "source": "account"}
    assert shown["X-GitHub-Api-Version"] == {"value": "2026-09-15", "source": "[identity]"}
    assert shown["Editor-Version"]["source"] == "default"
    text = run_cli("headers", "--account", "bob").stdout
    assert "#   X-GitHub-Api-Version: [identity]" in text and "#   User-Agent: account" in text

    # a newer release without a new tokn-router: edit [identity], reload
    cfg["identity"] = {"github_api_version": "2026-10-01", "editor_version": "vscode/1.141.0"}
    write_config(cfg, path)
    pos = d.output_pos("stderr")
    d.send_signal(signal.SIGHUP)
    d.wait_output("config reloaded", stream="stderr", start=pos)
    assert _chat(d.url, "alice").status_code == 200
    rec = fake.last(CHAT)
    assert rec.header("x-github-api-version") == "2026-10-01"
    assert rec.header("editor-version") == "vscode/1.141.0"
    assert rec.header("vscode-machineid") == a1.header("vscode-machineid")  # ids survive


def test_stale_identity_errors_say_what_to_bump(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    gone = {"error": {"message": "the specified API version is no longer supported"}}
    fake.script(CHAT, status=466, json=gone)
    pos = d.output_pos("stderr")
    r = _chat(d.url, "alice")
    assert r.status_code == 466
    message = r.json()["error"]["message"]
    assert "no longer supported" in message
    assert "tokn-router config set identity.github_api_version" in message
    line = d.wait_output(r"upstream answered 466: .*", stream="stderr", start=pos).group(0)
    assert "identity.github_api_version" in line and "identity.editor_version" in line

    # an HTML page instead of an API answer: the account cools down, the log says why
    page = "<html><head><title>Access denied</title></head><body>Unsupported</body></html>"
    fake.script(CHAT, status=403, html=page, times=None)
    pos = d.output_pos("stderr")
    r = _chat(d.url, "alice")
    assert r.status_code == 503
    line = d.wait_output(r"cooling down.*", stream="stderr", start=pos).group(0)
    assert "HTML page" in line and "config set identity.github_api_version" in line

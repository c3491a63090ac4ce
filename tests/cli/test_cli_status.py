"""``tokn-router status`` and ``tokn-router doctor`` against a real daemon and the fakes."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from typing import Any

import httpx

from tests.fakes import FakeUpstream
from tests.fakes.process import CLI
from tests.helpers import stop
from tokn_router.cli.status import account_detail

CHECK_LINE = re.compile(r"^(OK|INFO|WARN|FAIL) +(?P<name>[^:]+): (?P<detail>.+)$")


def checks(out: str) -> dict[str, list[str]]:
    """doctor's lines by check name; every line must have the documented shape."""
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        m = CHECK_LINE.match(line)
        assert m, f"not a check line: {line!r}\n{out}"
        if line.startswith(("WARN", "FAIL")):
            assert " -> fix: " in line, line
        found.setdefault(m.group("name"), []).append(line)
    return found


# -------------------------------------------------------------------------- status


def test_status_without_a_daemon(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    write_config({"server": {"port": 9}, "accounts": [fake.copilot_account("alice", "gho_alice")]})
    r = run_cli("status")
    assert r.returncode == 1 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith("daemon:    not running: nothing answers at http://127.0.0.1:9")
    assert "`tokn-router serve`" in lines[0]
    assert any(ln.split()[:3] == ["alice", "github-copilot", "yes"] for ln in lines)
    assert lines[-1].startswith("today:     no usage recorded yet")
    data = json.loads(run_cli("status", "--json").stdout)
    assert data["format"] == 1 and data["running"] is False and data["health"] is None
    assert data["url"] == "http://127.0.0.1:9" and "nothing answers" in data["error"]


def test_status_and_doctor_with_a_running_daemon(
    fake: FakeUpstream, run_cli: Any, write_config: Any, daemon: Any, wait_for: Any
) -> None:
    write_config(
        {
            "accounts": [
                fake.copilot_account("alice", "gho_alice", base_url=fake.url),
                fake.copilot_account("bob", "gho_bob", base_url=fake.url),
            ]
        }
    )
    d = daemon("--with-proxy", "--proxy-port", "0")
    # status reads the configured port: point the config at the daemon's
    port = d.url.rsplit(":", 1)[1]
    assert run_cli("config", "set", "server.port", port).returncode == 0
    fake.script(
        "/chat/completions",
        token="gho_bob",
        status=429,
        headers={"Retry-After": "120"},
        json={"error": {"message": "rate limited", "code": "rate_limited"}},
    )
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):  # round robin reaches bob once; he cools down, alice answers
        r = httpx.post(d.url + "/v1/chat/completions", json=body, timeout=20)
        assert r.status_code == 200

    def requests_today() -> Any:
        data = json.loads(run_cli("status", "--json").stdout)
        return data if (data["today"] or {}).get("totals", {}).get("requests") == 3 else None

    data = wait_for(requests_today, timeout=20)
    assert data["running"] is True and data["url"] == d.url
    assert data["health"]["listeners"] == {"api": d.url, "proxy": d.proxy_url}
    states = {a["id"]: a["state"] for a in data["health"]["accounts"]}
    assert states == {"alice": "healthy", "bob": "cooling_down"}

    r = run_cli("status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"daemon:    running at {d.url} (tokn-router v")
    assert lines[1] == f"listeners: api {d.url}, proxy {d.proxy_url}"
    alice = next(ln for ln in lines if ln.split()[:1] == ["alice"])
    bob = next(ln for ln in lines if ln.split()[:1] == ["bob"])
    assert alice.split()[2] == "healthy" and "in " in alice  # token expiry
    assert bob.split()[2] == "cooling_down" and "retry in" in bob and "429" in bob
    assert any(ln.startswith("ledger:    ") and "usage.db" in ln for ln in lines)
    # bob's 429 was failed over inside the request: three answered requests, no error
    assert lines[-1].startswith("today:     3 requests, ") and "error" not in lines[-1]

    # doctor sees the daemon and the cooling account
    r = run_cli("doctor")
    found = checks(r.stdout)
    assert found["daemon"][0].startswith(f"OK    daemon: running at {d.url}")
    assert "cooling_down" in found["account bob"][0]
    stop(d)


# -------------------------------------------------------------------------- doctor


def test_doctor_all_good(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice", base_url=fake.url)]})
    r = run_cli("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    found = checks(r.stdout)
    assert "FAIL" not in r.stdout
    assert found["config"][0].startswith("OK ") and found["file modes"][0].startswith("OK ")
    assert found["GitHub"][0].startswith(f"OK    GitHub: {fake.url} answers (HTTP ")
    assert found["Copilot API"][0].startswith(f"OK    Copilot API: {fake.url} answers")
    assert found["identity"][0].startswith("OK ")
    assert found["daemon"][0].startswith("INFO  daemon: not running")
    # only the configured URLs were contacted, without any credential
    assert {req.path for req in fake.requests} == {"/"}
    assert all(req.token is None for req in fake.requests)
    data = json.loads(run_cli("doctor", "--json").stdout)
    assert data["format"] == 1 and data["ok"] is True
    assert {"level", "check", "detail", "fix"} <= set(data["checks"][0])


def test_doctor_reports_each_problem_with_its_fix(
    fake: FakeUpstream, run_cli: Any, write_config: Any, make_fake: Any
) -> None:
    hanging = make_fake()
    hanging.script("/", hang=True, times=None)
    path = write_config(
        {
            "upstream": {"connect_timeout_secs": 1},
            "accounts": [
                fake.copilot_account(
                    "old",
                    "gho_old",
                    base_url=hanging.url,
                    settings={"editor_version": "vscode/1.80.0"},
                )
            ],
        }
    )
    path.chmod(0o644)
    r = run_cli("doctor", env={"TOKN_ROUTER_GITHUB_URL": "http://127.0.0.1:9"}, timeout=30)
    assert r.returncode == 1
    found = checks(r.stdout)
    (modes,) = found["file modes"]
    assert modes.startswith("FAIL") and f"chmod 600 {path}" in modes
    (ident,) = found["identity"]
    assert ident.startswith("WARN") and "vscode/1.80.0" in ident
    assert "`tokn-router config unset --account old settings.editor_version`" in ident
    (gh,) = found["GitHub"]
    assert gh.startswith("FAIL  GitHub: cannot reach http://127.0.0.1:9")
    (copilot,) = found["Copilot API"]
    assert copilot.startswith(f"FAIL  Copilot API: {hanging.url} did not answer within 1s")
    assert found["GitHub API"][0].startswith("OK ")  # $TOKN_ROUTER_GITHUB_API_URL: the fake


def test_doctor_broken_config(run_cli: Any, write_config: Any) -> None:
    path = write_config("[server\nport = 1\n")
    r = run_cli("doctor")
    assert r.returncode == 1
    (line,) = checks(r.stdout)["config"]
    assert line.startswith(f"FAIL  config: {path}:1: invalid TOML: unclosed table header")
    assert "`tokn-router config edit`" in line


def test_doctor_checks_the_shell_trusts_the_proxy_ca(
    fake: FakeUpstream, cli_env: dict[str, str], env_home: Any, write_config: Any, run_cli: Any
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice", base_url=fake.url)]})
    proxy = "http://127.0.0.1:4142"
    # HTTPS_PROXY set by hand, CA not trusted: TLS through the proxy would fail
    assert run_cli("proxy", "ca", "path").returncode == 0
    assert run_cli("proxy", "ca", "show").returncode == 0  # creates the CA
    r = run_cli("doctor", env={"HTTPS_PROXY": proxy})
    (shell,) = checks(r.stdout)["shell"]
    assert shell.startswith("FAIL  shell: HTTPS_PROXY is the tokn-router proxy, but SSL_CERT_FILE")
    assert 'eval "$(tokn-router proxy env)"' in shell
    # the documented fix, as a user runs it
    script = (
        f'eval "$({shlex.quote(str(CLI))} proxy env --shell sh)"; {shlex.quote(str(CLI))} doctor'
    )
    r2 = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env=cli_env,
        cwd=env_home.home,
        timeout=60,
    )
    (shell,) = checks(r2.stdout)["shell"]
    assert shell == "OK    shell: uses the tokn-router proxy and trusts its CA"
    assert checks(r2.stdout)["proxy CA"][0].startswith("OK    proxy CA: ")


def test_status_shows_each_accounts_windows() -> None:

    now = 1_000_000.0
    healthy = {
        "state": "healthy",
        "models": 3,
        "windows": {
            "weekly": {"remaining_pct": 40.0, "reset_at": int(now + 2 * 86400)},
            "session": {"unlimited": True, "remaining_pct": None},
        },
    }
    assert (
        account_detail(healthy, now)
        == "3 models [session unlimited; weekly 40% left, resets in 2d]"
    )
    shut = {
        "state": "quota_exhausted",
        "retry_after_secs": 3600,
        "last_error": "429: weekly limit",
        "windows": {"weekly": {"remaining_pct": 0, "exhausted_until": int(now + 3600)}},
    }
    assert account_detail(shut, now) == "retry in 60m: 429: weekly limit [weekly used up for 60m]"
    assert account_detail({"state": "healthy", "models": 2}, now) == "2 models"

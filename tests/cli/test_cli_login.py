"""``tokn-router login``: the device flow and Z.ai keys, run as a subprocess against the fake."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.cli_pty import drain, read_until, spawn_on_pty
from tests.fakes import DeviceOutcome, FakeUpstream
from tests.fakes.process import CLI


def one_error_line(r: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    """The single non-empty stderr line of a failed run (no traceback anywhere)."""
    assert r.returncode != 0, r.stdout
    if code is not None:
        assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def accounts(path: Path) -> list[dict[str, Any]]:
    return tomllib.loads(path.read_text())["accounts"] if path.exists() else []


def snapshot(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


# ---------------------------------------------------------------------- device flow


def test_login_device_flow_with_pending_and_slow_down(
    fake: FakeUpstream, run_cli: Any, env_home: Any
) -> None:
    fake.script_device_flow(
        "authorization_pending",
        DeviceOutcome("slow_down", interval=1),
        DeviceOutcome("success", login="alice0123456789"),
    )
    r = run_cli("login")  # stdin is closed: the flow must not read it
    assert r.returncode == 0, r.stderr
    assert "FAKE-0001" in r.stdout and f"{fake.url}/login/device" in r.stdout
    assert "waiting for authorisation" in r.stdout  # progress while polling
    assert "slow down" in r.stdout
    assert "Added account 'alice0123456789'" in r.stdout
    assert r.stderr == ""
    assert fake.device_flow.polls == 3

    # the device flow used the Copilot plugin's client id and scope
    code_req = fake.requests_to("/login/device/code")[0]
    params = {**(code_req.form or {}), **(code_req.json or {})}
    assert params["client_id"] == "Iv1.b507a08c87ecfe98" and params["scope"] == "read:user"
    polls = fake.requests_to("/login/oauth/access_token")
    gaps = [b.time - a.time for a, b in itertools.pairwise(polls)]
    assert gaps[0] < 0.5 and 0.9 <= gaps[1] < 2  # interval 0, then slow_down's 1 s

    (acc,) = accounts(env_home.config_path)
    assert acc["id"] == "alice0123456789" and acc["provider"] == "github-copilot"
    assert acc["refresh_token"] == "gho_alice0123456789"
    assert acc["access_token"].startswith("tid=") and acc["access_token_expires_at"] > time.time()
    assert acc["refresh_url"] == f"{fake.url}/copilot_internal/v2/token"
    assert fake.exchange_count("gho_alice0123456789") == 1
    # secrets never reach the terminal
    assert "gho_alice0123456789" not in r.stdout and acc["access_token"] not in r.stdout
    assert os.stat(env_home.config_path).st_mode & 0o777 == 0o600
    assert os.stat(env_home.state_dir).st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ("access_denied", "denied"),
        ("expired_token", "expired"),
    ],
)
def test_login_polling_failures(
    fake: FakeUpstream, run_cli: Any, write_config: Any, outcome: str, message: str
) -> None:
    path = write_config("# mine\n[server]\nport = 4141\n")
    before = path.read_bytes()
    fake.script_device_flow("authorization_pending", outcome)
    r = run_cli("login")
    assert message in one_error_line(r)
    assert path.read_bytes() == before


def test_login_no_copilot_access(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    fake.github_account("gho_nocopilot123456").exchange_failure = 403
    fake.script_device_flow(DeviceOutcome("success", login="nocopilot123456"))
    line = one_error_line(run_cli("login"))
    assert "403" in line and "no_copilot_access" in line
    assert not env_home.config_path.exists()


def test_login_duplicate_id(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    path = write_config({"accounts": [fake.copilot_account("octocat", "gho_octocat")]})
    before = path.read_bytes()
    line = one_error_line(run_cli("login"))  # the flow succeeds as octocat
    assert "'octocat' already exists" in line and "--id" in line
    line = one_error_line(run_cli("login", "--id", "octocat"))  # refused before the flow
    assert "already exists" in line
    assert path.read_bytes() == before
    assert len(fake.requests_to("/login/device/code")) == 1


def test_login_ctrl_c_while_polling(
    fake: FakeUpstream, cli_env: dict[str, str], write_config: Any
) -> None:
    path = write_config("[server]\nport = 4141\n")
    before = path.read_bytes()
    fake.device_flow.default_outcome = "authorization_pending"
    fake.device_flow.interval = 1
    proc = subprocess.Popen(
        [str(CLI), "login"],
        env=cli_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        fake.wait_for(lambda: fake.device_flow.polls >= 1, timeout=15)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.strip()] == ["interrupted"]
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------ Z.ai


@pytest.mark.parametrize(
    ("provider", "base"),
    [
        ("zai-coding-plan", "zai_url"),
        ("zai", "zai_general_url"),
        ("zhipuai-coding-plan", "zai_url"),
    ],
)
def test_login_zai_key_from_stdin(
    fake: FakeUpstream, run_cli: Any, env_home: Any, provider: str, base: str
) -> None:
    url = getattr(fake, base)
    r = run_cli("login", "--provider", provider, "--base-url", url, input="zai-valid-key-0001\n")
    assert r.returncode == 0, r.stderr
    assert f"Added account '{provider}'" in r.stdout and "zai-valid-key-0001" not in r.stdout
    (acc,) = accounts(env_home.config_path)
    assert acc == {
        "id": provider,
        "provider": provider,
        "api_key": "zai-valid-key-0001",
        "base_url": url,
    }
    (req,) = fake.requests_to(url.removeprefix(fake.url) + "/models")
    assert req.headers["authorization"] == "Bearer zai-valid-key-0001"


def test_login_zai_invalid_key(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    path = write_config("# keep me\n")
    r = run_cli(
        "login",
        "--provider",
        "zai",
        "--base-url",
        fake.zai_general_url,
        input="sk-wrong-1234567890\n",
    )
    line = one_error_line(r)
    assert "rejected" in line and "401" in line and "sk-wrong-1234567890" not in r.stderr + r.stdout
    assert path.read_text() == "# keep me\n"


def test_login_zai_no_key(run_cli: Any, env_home: Any) -> None:
    line = one_error_line(run_cli("login", "--provider", "zai-coding-plan"), code=2)  # stdin closed
    assert "no API key" in line
    assert not env_home.config_path.exists()


def test_login_zai_hidden_input_on_a_terminal(
    fake: FakeUpstream, cli_env: dict[str, str], env_home: Any
) -> None:
    proc, master = spawn_on_pty(
        ["login", "--provider", "zai-coding-plan", "--base-url", fake.zai_url], cli_env
    )
    try:
        seen = read_until(master, b"(input hidden): ")
        os.write(master, b"zai-typed-secret-42\n")
        seen += drain(master, proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, seen
    assert b"zai-typed-secret-42" not in seen  # not echoed
    assert b"Added account 'zai-coding-plan'" in seen
    assert accounts(env_home.config_path)[0]["api_key"] == "zai-typed-secret-42"


def test_login_zai_ctrl_c_at_the_prompt(
    fake: FakeUpstream, cli_env: dict[str, str], write_config: Any
) -> None:
    path = write_config("[server]\nport = 4141\n")
    before = path.read_bytes()
    proc, master = spawn_on_pty(
        ["login", "--provider", "zai-coding-plan", "--base-url", fake.zai_url], cli_env
    )
    try:
        seen = read_until(master, b"(input hidden): ")
        os.write(master, b"zai-partial")
        os.write(master, b"\x03")  # Ctrl-C, turned into SIGINT by the terminal
        seen += drain(master, proc)
    finally:
        proc.kill()
    assert proc.returncode == 130, seen
    assert b"Traceback" not in seen and b"interrupted" in seen
    assert path.read_bytes() == before
    assert fake.requests_to("/api/coding/paas/v4/models") == []


# ------------------------------------------------------------------- outbound proxy


def test_login_uses_the_outbound_proxy_unless_no_proxy(
    fake: FakeUpstream, run_cli: Any, write_config: Any, http_proxy: Any
) -> None:
    path = write_config(f'[proxy]\nurl = "{http_proxy.url}"\n')
    r = run_cli("login", "--id", "via-proxy", "--base-url", "https://copilot.example/")
    assert r.returncode == 0, r.stderr
    hosts = {f"{rec.host}:{rec.port}" for rec in http_proxy.records}
    assert hosts == {fake.url.removeprefix("http://")}
    targets = [rec.target.split("?")[0].removeprefix(fake.url) for rec in http_proxy.records]
    assert targets == [
        "/login/device/code",
        "/login/oauth/access_token",
        "/copilot_internal/v2/token",
    ]
    http_proxy.reset()
    r = run_cli("login", "--id", "direct", "--no-proxy")
    assert r.returncode == 0, r.stderr
    assert http_proxy.records == []
    via, direct = accounts(path)
    assert (via["id"], via["base_url"], via["refresh_token"]) == (
        "via-proxy",
        "https://copilot.example/",
        "gho_octocat",
    )
    assert direct["id"] == "direct" and "base_url" not in direct


def test_login_through_a_dead_proxy(fake: FakeUpstream, run_cli: Any, write_config: Any) -> None:
    path = write_config('[proxy]\nurl = "http://user:proxypw@127.0.0.1:9"\n')
    before = path.read_bytes()
    line = one_error_line(run_cli("login"))
    assert "cannot reach GitHub" in line and "proxypw" not in line
    assert path.read_bytes() == before


def test_proxy_no_proxy_list_bypasses(
    fake: FakeUpstream, run_cli: Any, write_config: Any, http_proxy: Any
) -> None:
    write_config(f'[proxy]\nurl = "{http_proxy.url}"\nno_proxy = ["127.0.0.1"]\n')
    r = run_cli(
        "login", "--provider", "zai", "--base-url", fake.zai_general_url, input="zai-k-0123456\n"
    )
    assert r.returncode == 0, r.stderr
    assert http_proxy.records == []


# ---------------------------------------------------------- control-plane timeouts


def test_default_control_plane_timeout_is_short() -> None:
    from tokn_router.accounts.config import Config
    from tokn_router.cli import _net

    # ~15 s: what `login`, `import`, `account show` and `doctor` wait for GitHub
    assert _net.control_timeout(Config()) == 15.0
    assert Config().upstream.read_timeout_secs == 300.0  # the stream timeout stays long


def test_login_gives_up_on_a_silent_github(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    path = write_config("[upstream]\nconnect_timeout_secs = 1\n")
    before = path.read_bytes()
    fake.script("/login/device/code", hang=True)
    started = time.monotonic()
    r = run_cli("login", timeout=30)
    elapsed = time.monotonic() - started
    line = one_error_line(r)
    assert line == (
        f"tokn-router: error: GitHub at {fake.url} did not answer within 1s; check your "
        "network and the [proxy] settings (`tokn-router doctor` checks both)"
    )
    assert r.stdout.splitlines()[0] == f"contacting GitHub at {fake.url}…"
    assert elapsed < 10  # the requirement: seconds, not the 300 s stream timeout
    assert path.read_bytes() == before


def test_login_zai_gives_up_on_a_silent_api(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    write_config("[upstream]\nconnect_timeout_secs = 1\n")
    fake.script("/api/coding/paas/v4/models", hang=True)
    started = time.monotonic()
    r = run_cli(
        "login", "--provider", "zai-coding-plan", "--base-url", fake.zai_url, input="zai-k\n"
    )
    assert time.monotonic() - started < 10
    line = one_error_line(r)
    assert "/api/coding/paas/v4/models" in line and "zai-k" not in line
    assert r.stdout.startswith(f"contacting Z.AI Coding Plan at {fake.zai_url}…")

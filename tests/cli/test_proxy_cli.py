"""``tokn-router proxy [start] | env | shell | ca path|show|regenerate`` as users run them."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.conftest import EnvHome
from tests.fakes.process import CLI
from tests.helpers import PROXY_ENV_NAMES

RunCli = Callable[..., subprocess.CompletedProcess[str]]

NAMES = PROXY_ENV_NAMES
BUNDLE_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
FINGERPRINT_RE = re.compile(r"^(?:[0-9A-F]{2}:){31}[0-9A-F]{2}$")
POSIX_SHELLS = ["sh"] + [s for s in ("bash", "zsh") if shutil.which(s)]


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("tokn-router: error: ")
    assert "Traceback" not in r.stderr
    return lines[0]


def _fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _eval_in(shell: str, script: str, env: dict[str, str]) -> dict[str, str]:
    """Run ``eval "$script"`` in a real shell; the environment it ends with."""
    out = subprocess.run(
        [shell, "-c", 'eval "$TOKN_TEST_SCRIPT" && env -0'],
        env={**env, "TOKN_TEST_SCRIPT": script},
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def _show_fields(stdout: str) -> dict[str, str]:
    fields = {}
    for line in stdout.splitlines():
        m = re.match(r"^(certificate|bundle|sha256|valid from|valid until):\s+(.*)$", line)
        if m:
            fields[m.group(1)] = m.group(2)
    return fields


# ------------------------------------------------------------------------- env


@pytest.mark.parametrize("shell", ["sh", "bash", "zsh", "fish", "pwsh"])
def test_env_prints_every_variable_and_creates_the_ca(
    shell: str, run_cli: RunCli, env_home: EnvHome
) -> None:
    r = run_cli("proxy", "env", "--shell", shell)
    assert r.returncode == 0, r.stderr
    ca = env_home.state_dir / "ca"
    for name in NAMES:
        assert name in r.stdout
    assert "http://127.0.0.1:4142" in r.stdout
    assert str(ca / "ca-bundle.crt") in r.stdout
    assert str(ca / "ca.crt") in r.stdout
    syntax = {"fish": "set -gx HTTPS_PROXY", "pwsh": "$env:HTTPS_PROXY = "}
    assert syntax.get(shell, "export HTTPS_PROXY=") in r.stdout
    # the files it names exist, with private modes (0700 folder, 0600 key)
    assert (ca / "ca.crt").is_file() and (ca / "ca-bundle.crt").is_file()
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(env_home.state_dir.stat().st_mode) == 0o700
    assert "BEGIN CERTIFICATE" in (ca / "ca-bundle.crt").read_text()


@pytest.mark.parametrize(
    ("login_shell", "marker"),
    [
        ("/usr/bin/fish", "set -gx "),
        ("/usr/local/bin/pwsh", "$env:"),
        ("/bin/zsh", "export "),
        ("/bin/tcsh", "export "),  # unknown: sh syntax
        (None, "export "),
    ],
)
def test_env_default_shell_from_SHELL(
    login_shell: str | None, marker: str, run_cli: RunCli
) -> None:
    r = run_cli("proxy", "env", env={"SHELL": login_shell})
    assert r.returncode == 0, r.stderr
    assert all(line.startswith(marker) for line in r.stdout.splitlines()[1:]), r.stdout


@pytest.mark.parametrize("shell", POSIX_SHELLS)
def test_env_eval_in_a_real_shell(
    shell: str, tmp_path: Path, run_cli: RunCli, cli_env: dict[str, str]
) -> None:
    # the state dir comes from XDG_CONFIG_HOME and has spaces and a quote in its path
    xdg = tmp_path / "my config's dir" / "with spaces"
    r = run_cli(
        "proxy",
        "env",
        "--shell",
        shell,
        env={"XDG_CONFIG_HOME": str(xdg), "TOKN_ROUTER_CONFIG": None},
    )
    assert r.returncode == 0, r.stderr
    env = _eval_in(shell, r.stdout, {k: v for k, v in cli_env.items() if "proxy" not in k.lower()})
    ca = xdg / "tokn-router" / "ca"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert env[name] == "http://127.0.0.1:4142"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
    for name in BUNDLE_VARS:
        assert env[name] == str(ca / "ca-bundle.crt")
        assert Path(env[name]).is_file()
    assert env["NODE_EXTRA_CA_CERTS"] == str(ca / "ca.crt")
    assert Path(env["NODE_EXTRA_CA_CERTS"]).is_file()


def test_env_uses_the_configured_listener(
    write_config: Callable[..., Path], run_cli: RunCli, cli_env: dict[str, str]
) -> None:
    write_config({"proxy_mode": {"host": "0.0.0.0", "port": 5151}})
    r = run_cli("proxy", "env", "--shell", "sh")
    env = _eval_in("sh", r.stdout, cli_env)
    assert env["HTTPS_PROXY"] == "http://127.0.0.1:5151"  # a wildcard bind is reached via loopback

    write_config({"proxy_mode": {"host": "::1", "port": 5152}})
    env = _eval_in("sh", run_cli("proxy", "env", "--shell", "sh").stdout, cli_env)
    assert env["HTTPS_PROXY"] == "http://[::1]:5152"


def test_env_with_custom_ca_dir(
    tmp_path: Path, write_config: Callable[..., Path], run_cli: RunCli
) -> None:
    ca_dir = tmp_path / "elsewhere" / "ca"
    write_config({"proxy_mode": {"ca_dir": str(ca_dir)}})
    r = run_cli("proxy", "env", "--shell", "bash")
    assert r.returncode == 0, r.stderr
    assert str(ca_dir / "ca-bundle.crt") in r.stdout
    assert (ca_dir / "ca.key").is_file()
    assert run_cli("proxy", "ca", "path").stdout.strip() == str(ca_dir)


def test_env_errors_are_one_line(
    run_cli: RunCli, write_config: Callable[..., Path], env_home: EnvHome
) -> None:
    r = run_cli("proxy", "env", "--shell", "csh")
    assert r.returncode == 2
    assert "csh" in r.stderr

    write_config("[proxy_mode\nport = 1\n")
    r = run_cli("proxy", "env")
    assert r.returncode == 2
    assert "config.toml" in _one_line_error(r)

    write_config("")
    ca = env_home.state_dir / "ca"
    assert run_cli("proxy", "env").returncode == 0
    (ca / "ca.key").write_text("garbage")
    r = run_cli("proxy", "env")
    assert r.returncode == 1
    assert "ca.key" in _one_line_error(r)


# ------------------------------------------------------------------------ shell


def test_shell_runs_with_the_variables_and_exits_with_its_code(
    run_cli: RunCli, env_home: EnvHome
) -> None:
    r = run_cli(
        "proxy",
        "shell",
        "--shell",
        "/bin/sh",
        input='echo "proxy=$HTTPS_PROXY"; echo "bundle=$SSL_CERT_FILE"; '
        'echo "node=$NODE_EXTRA_CA_CERTS"; exit 3\n',
    )
    assert r.returncode == 3, r.stderr
    ca = env_home.state_dir / "ca"
    assert "proxy=http://127.0.0.1:4142" in r.stdout
    assert f"bundle={ca / 'ca-bundle.crt'}" in r.stdout
    assert f"node={ca / 'ca.crt'}" in r.stdout
    assert (ca / "ca-bundle.crt").is_file()


def test_shell_passes_arguments_and_defaults_to_SHELL(run_cli: RunCli) -> None:
    r = run_cli(
        "proxy",
        "shell",
        "--",
        "-c",
        'echo "$http_proxy|$NO_PROXY"; exit 5',
        env={"SHELL": "/bin/sh"},
    )
    assert r.returncode == 5, r.stderr
    assert r.stdout.strip() == "http://127.0.0.1:4142|localhost,127.0.0.1,::1"

    # no $SHELL: /bin/sh
    r = run_cli("proxy", "shell", input="exit 0\n", env={"SHELL": None})
    assert r.returncode == 0, r.stderr
    assert "/bin/sh" in r.stderr


def test_shell_that_cannot_run(run_cli: RunCli, tmp_path: Path) -> None:
    r = run_cli("proxy", "shell", "--shell", str(tmp_path / "no-such-shell"))
    assert r.returncode == 1
    assert "cannot run shell" in _one_line_error(r)


# --------------------------------------------------------------------------- ca


def test_ca_path(run_cli: RunCli, env_home: EnvHome) -> None:
    r = run_cli("proxy", "ca", "path")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{env_home.state_dir / 'ca'}\n"


def test_ca_show(run_cli: RunCli, env_home: EnvHome) -> None:
    r = run_cli("proxy", "ca", "show")
    assert r.returncode == 0, r.stderr
    ca = env_home.state_dir / "ca"
    fields = _show_fields(r.stdout)
    assert fields["certificate"] == str(ca / "ca.crt")
    assert fields["bundle"] == str(ca / "ca-bundle.crt")
    assert FINGERPRINT_RE.match(fields["sha256"])
    assert fields["sha256"] == _fingerprint(ca / "ca.crt")
    start = dt.datetime.strptime(fields["valid from"], "%Y-%m-%d %H:%M:%S UTC").replace(
        tzinfo=dt.UTC
    )
    end = dt.datetime.strptime(fields["valid until"], "%Y-%m-%d %H:%M:%S UTC").replace(
        tzinfo=dt.UTC
    )
    now = dt.datetime.now(dt.UTC)
    assert start <= now <= end
    assert end - start > dt.timedelta(days=3000)
    pem = r.stdout[r.stdout.index("-----BEGIN CERTIFICATE-----") :]
    assert pem == (ca / "ca.crt").read_text()
    assert "PRIVATE KEY" not in r.stdout
    # a second show reads the same CA
    assert _show_fields(run_cli("proxy", "ca", "show").stdout)["sha256"] == fields["sha256"]


def test_ca_regenerate_yes(run_cli: RunCli, env_home: EnvHome) -> None:
    before = _show_fields(run_cli("proxy", "ca", "show").stdout)["sha256"]
    r = run_cli("proxy", "ca", "regenerate", "--yes")
    assert r.returncode == 0, r.stderr
    ca = env_home.state_dir / "ca"
    after = _fingerprint(ca / "ca.crt")
    assert after != before
    assert after in r.stdout
    assert "trust" in r.stdout
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600
    assert _show_fields(run_cli("proxy", "ca", "show").stdout)["sha256"] == after
    # the bundle holds the new CA, not the old one
    bundle = (ca / "ca-bundle.crt").read_text()
    assert (ca / "ca.crt").read_text().strip() in bundle


@pytest.mark.parametrize("stdin", [None, "y\n"])
def test_ca_regenerate_refuses_without_a_tty(
    stdin: str | None, run_cli: RunCli, env_home: EnvHome
) -> None:
    assert run_cli("proxy", "ca", "show").returncode == 0
    cert = env_home.state_dir / "ca" / "ca.crt"
    key = env_home.state_dir / "ca" / "ca.key"
    old = (cert.read_bytes(), key.read_bytes())
    r = run_cli("proxy", "ca", "regenerate", input=stdin)
    assert r.returncode == 2
    assert "--yes" in _one_line_error(r)
    assert (cert.read_bytes(), key.read_bytes()) == old


@pytest.mark.parametrize(("answer", "changed"), [("y\n", True), ("n\n", False), ("\n", False)])
def test_ca_regenerate_asks_on_a_tty(
    answer: str, changed: bool, run_cli: RunCli, cli_env: dict[str, str], env_home: EnvHome
) -> None:
    assert run_cli("proxy", "ca", "show").returncode == 0
    cert = env_home.state_dir / "ca" / "ca.crt"
    old = cert.read_bytes()
    master, slave = os.openpty()
    try:
        os.write(master, answer.encode())  # typed ahead: the terminal buffers the line
        proc = subprocess.run(
            [str(CLI), "proxy", "ca", "regenerate"],
            stdin=slave,
            capture_output=True,
            text=True,
            env=cli_env,
            timeout=30,
            cwd=env_home.home,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert "[y/N]" in proc.stderr
    assert (cert.read_bytes() != old) is changed
    assert proc.returncode == (0 if changed else 1), proc.stderr


# ------------------------------------------------------------------------ start


def test_start_refuses_an_unknown_route_mode(run_cli: RunCli) -> None:
    # (a remote bind is allowed, with client keys required: tests/clients/test_team_server.py)
    r = run_cli("proxy", "--route-mode", "bogus")
    assert r.returncode == 2


def test_bare_proxy_runs_start(daemon: Callable[..., Any]) -> None:
    d = daemon("--port", "0", "--route-mode", "passthrough", cmd=("proxy",), ready=False)
    m = d.wait_output(r"proxy listening on (http://127\.0\.0\.1:\d+) \(route mode: (\w+)\)", 20)
    assert m.group(2) == "passthrough"
    assert "CA SHA-256 fingerprint" in d.stdout_text
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0

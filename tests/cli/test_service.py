"""``tokn-router service``: the rendered systemd unit / launchd agent and the files written.

No real systemd or launchd: stand-in ``systemctl`` / ``launchctl`` scripts on PATH
record how they were called, and answer like the real ones for ``status``.
"""

from __future__ import annotations

import plistlib
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.process import CLI
from tokn_router import service
from tokn_router.service import Host

UNIT_REL = Path(".config/systemd/user/tokn-router.service")
PLIST_REL = Path("Library/LaunchAgents/io.github.tokn-router.plist")

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
case "$2" in
  is-active) echo active ;;
  is-enabled) echo enabled ;;
esac
exit {code}
"""

FAKE_LAUNCHCTL = """#!/bin/sh
echo "$*" >> "{log}"
if [ "$1" = print ]; then
  printf '%s = {{\\n\\tstate = running\\n\\tpid = 4242\\n}}\\n' "$2"
fi
exit 0
"""


def fake_tool(bin_dir: Path, name: str, template: str, code: int = 0) -> Path:
    """A stand-in for ``name`` that appends its arguments to ``<bin_dir>/<name>.log``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = bin_dir / f"{name}.log"
    tool = bin_dir / name
    tool.write_text(template.format(log=log, code=code))
    tool.chmod(0o755)
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def exec_start(unit: str) -> list[str]:
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart=").replace("%%", "%"))


# -------------------------------------------------------------------- rendering


def test_systemd_unit_text() -> None:
    argv = ["/opt/tr/bin/tokn-router", "--config", "/srv/team/config.toml", "serve"]
    unit = service.render_systemd_unit(argv, {"PYTHONUNBUFFERED": "1"})
    lines = unit.splitlines()
    for expected in (
        "[Unit]",
        "[Service]",
        "ExecStart=/opt/tr/bin/tokn-router --config /srv/team/config.toml serve",
        "Restart=on-failure",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=tokn-router",
        "Environment=PYTHONUNBUFFERED=1",
        "[Install]",
        "WantedBy=default.target",
    ):
        assert expected in lines, expected
    assert lines.index("[Unit]") < lines.index("[Service]") < lines.index("[Install]")


@pytest.mark.parametrize(
    ("arg", "rendered"),
    [
        ("/usr/bin/tokn-router", "/usr/bin/tokn-router"),
        ("/home/me/my dir/c.toml", '"/home/me/my dir/c.toml"'),
        ("/x/100%.toml", "/x/100%%.toml"),  # % starts a specifier in unit files
        ("$HOME/c.toml", '"$$HOME/c.toml"'),  # $ would be expanded
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("", '""'),
    ],
)
def test_systemd_quoting(arg: str, rendered: str) -> None:
    assert service.systemd_quote(arg) == rendered


def test_launchd_plist() -> None:
    argv = ["/opt/tr/bin/tokn-router", "serve", "--host", "0.0.0.0"]
    log = Path("/Users/me/Library/Logs/tokn-router/tokn-router.log")
    agent = plistlib.loads(service.render_launchd_plist(argv, {"PYTHONUNBUFFERED": "1"}, log))
    assert agent["Label"] == "io.github.tokn-router"
    assert agent["ProgramArguments"] == argv
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}  # restart when it fails
    assert agent["StandardOutPath"] == agent["StandardErrorPath"] == str(log)
    assert agent["EnvironmentVariables"] == {"PYTHONUNBUFFERED": "1"}


def test_service_argv_names_the_config_only_when_not_the_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default = home / ".config" / "tokn-router" / "config.toml"
    assert service.service_argv("/bin/tr", default, home) == ["/bin/tr", "serve"]
    other = tmp_path / "team" / "config.toml"
    assert service.service_argv("/bin/tr", other, home, ["--with-proxy"]) == [
        "/bin/tr",
        "--config",
        str(other),
        "serve",
        "--with-proxy",
    ]


def test_service_env_passes_only_safe_variables() -> None:
    env = service.service_env(
        {"SSL_CERT_FILE": "/etc/corp.pem", "HTTPS_PROXY": "http://u:pw@proxy:3128", "PATH": "/x"}
    )
    assert env == {"PYTHONUNBUFFERED": "1", "SSL_CERT_FILE": "/etc/corp.pem"}


# --------------------------------------------------------- install, through the CLI


def test_install_status_uninstall_on_linux(run_cli: Any, env_home: Any, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    log = fake_tool(bin_dir, "systemctl", FAKE_SYSTEMCTL)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    unit_path = env_home.home / UNIT_REL

    team_config = tmp_path / "team dir" / "config.toml"
    r = run_cli(
        "service", "install", "--user", "--", "--host", "0.0.0.0", "--with-proxy",
        env={**env, "TOKN_ROUTER_CONFIG": str(team_config)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"unit written: {unit_path}" in r.stdout
    unit = unit_path.read_text()
    # the absolute path of the executable that ran, and the config it used (not the default)
    assert exec_start(unit) == [
        str(CLI), "--config", str(team_config), "serve", "--host", "0.0.0.0", "--with-proxy",
    ]  # fmt: skip
    assert "Restart=on-failure" in unit and "StandardError=journal" in unit
    assert calls(log) == ["--user daemon-reload", "--user enable --now tokn-router.service"]
    assert "ran: systemctl --user enable --now tokn-router.service" in r.stdout

    # again, with the default config: no --config, the unit is updated and restarted
    assert env_home.config_path == env_home.home / ".config" / "tokn-router" / "config.toml"
    log.unlink()
    r = run_cli("service", "install", env=env)
    assert r.returncode == 0 and f"unit updated: {unit_path}" in r.stdout
    assert exec_start(unit_path.read_text()) == [str(CLI), "serve"]
    assert calls(log)[-1] == "--user restart tokn-router.service"

    r = run_cli("service", "status", env=env)
    assert r.returncode == 0, r.stdout
    assert f"installed: {unit_path}" in r.stdout and "state: active" in r.stdout

    log.unlink()
    r = run_cli("service", "uninstall", env=env)
    assert r.returncode == 0 and f"removed: {unit_path}" in r.stdout
    assert not unit_path.exists()
    assert calls(log) == ["--user disable --now tokn-router.service", "--user daemon-reload"]

    r = run_cli("service", "status", env=env)
    assert r.returncode == 3 and "not installed" in r.stdout


def test_install_without_systemctl_says_how_to_start(
    run_cli: Any, env_home: Any, tmp_path: Path
) -> None:
    empty = tmp_path / "nobin"
    empty.mkdir()
    r = run_cli("service", "install", env={"PATH": str(empty)})
    assert r.returncode == 0, r.stderr
    assert (env_home.home / UNIT_REL).exists()
    assert "systemctl not found" in r.stdout and "systemctl --user enable --now" in r.stdout


def test_a_failing_systemctl_is_one_clear_line(run_cli: Any, env_home: Any, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "systemctl", FAKE_SYSTEMCTL + "echo 'Failed to connect to bus' >&2\n", 1)
    r = run_cli("service", "install", env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    assert "`systemctl --user daemon-reload` failed" in r.stdout
    assert (env_home.home / UNIT_REL).exists()


def test_no_system_wide_service(run_cli: Any) -> None:
    r = run_cli("service", "install", "--no-user")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------- macOS, on any OS


def test_install_status_uninstall_launchd(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    log = fake_tool(bin_dir, "launchctl", FAKE_LAUNCHCTL)
    home = tmp_path / "home"

    def which(name: str) -> str | None:
        tool = bin_dir / name
        return str(tool) if tool.exists() else None

    host = Host(system="darwin", home=home, uid=501, which=which)
    argv = service.service_argv("/opt/tr/bin/tokn-router", None, home)
    out = service.install(host, argv, {"PYTHONUNBUFFERED": "1"})
    plist = home / PLIST_REL
    assert out.exit_code == 0 and f"agent written: {plist}" in out.lines
    agent = plistlib.loads(plist.read_bytes())
    assert agent["ProgramArguments"] == ["/opt/tr/bin/tokn-router", "serve"]
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    log_file = Path(agent["StandardErrorPath"])
    assert log_file.parent == home / "Library" / "Logs" / "tokn-router" and log_file.parent.is_dir()
    assert calls(log) == [
        "bootout gui/501/io.github.tokn-router",
        f"bootstrap gui/501 {plist}",
    ]

    st = service.status(host)
    assert st.exit_code == 0 and "state: running (pid 4242)" in st.lines

    out = service.uninstall(host)
    assert out.exit_code == 0 and not plist.exists()
    assert calls(log)[-1] == "bootout gui/501/io.github.tokn-router"
    assert service.status(host).exit_code == 3


def test_unsupported_system_is_a_usage_error(tmp_path: Path) -> None:
    from tokn_router.errors import UsageError

    with pytest.raises(UsageError, match="Linux \\(systemd\\) and macOS"):
        service.install(Host(system="win32", home=tmp_path, uid=0), ["x", "serve"], {})

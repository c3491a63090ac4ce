"""Run ``tokn-router serve`` as a per-user service: a systemd user unit or a launchd agent.

Rendering is pure (:func:`render_systemd_unit`, :func:`render_launchd_plist`); the
file system and the service manager are reached through a :class:`Host`, so tests
can install into a temp HOME, pick the operating system, and put stand-ins for
``systemctl`` / ``launchctl`` on the path.
"""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokn_router._fs import atomic_write
from tokn_router.errors import ToknError, UsageError

UNIT_NAME = "tokn-router.service"
LAUNCHD_LABEL = "io.github.tokn-router"
DESCRIPTION = "tokn-router: Copilot and Z.ai accounts as an OpenAI-compatible API"
# Passed on from the installing shell when set: the service manager starts the
# daemon with a bare environment. Proxy variables are left out on purpose: they
# may carry a password, and the unit file is world-readable; use [proxy] url.
PASSED_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "TOKN_ROUTER_LOG")
_TIMEOUT = 30.0


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str

    def detail(self) -> str:
        """The command's own message, on one line."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return text[0].strip() if text else f"exit status {self.returncode}"


def _run(argv: Sequence[str]) -> Ran:
    try:
        p = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except OSError as e:
        return Ran(127, "", f"{argv[0]}: {e.strerror}")
    except subprocess.TimeoutExpired:
        return Ran(124, "", f"{argv[0]} did not answer within {_TIMEOUT:g}s")
    return Ran(p.returncode, p.stdout, p.stderr)


@dataclass(frozen=True)
class Host:
    """The machine a service is installed on."""

    system: str  # "linux", "darwin", ...: platform.system().lower()
    home: Path
    uid: int
    which: Callable[[str], str | None] = shutil.which
    run: Callable[[Sequence[str]], Ran] = _run

    @classmethod
    def current(cls) -> Host:
        return cls(system=sys.platform, home=Path.home(), uid=os.getuid())

    def unit_path(self) -> Path:
        if self.system == "darwin":
            return self.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        if self.system == "linux":
            # where `systemctl --user` looks whatever the shell's XDG_CONFIG_HOME says
            return self.home / ".config" / "systemd" / "user" / UNIT_NAME
        raise UsageError(
            f"`tokn-router service` supports Linux (systemd) and macOS (launchd), not "
            f"{self.system}; run `tokn-router serve` under your own service manager"
        )

    def log_path(self) -> Path:
        return self.home / "Library" / "Logs" / "tokn-router" / "tokn-router.log"


# ------------------------------------------------------------------- the command


def current_executable() -> str:
    """The absolute path of the running ``tokn-router`` script.

    Symlinks are kept (a ``pipx`` link in ``~/.local/bin`` survives upgrades that
    move the real script).
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "tokn-router":
        found = argv0 if os.sep in argv0 else shutil.which(argv0)
        if found and os.access(found, os.X_OK):
            return os.path.abspath(found)
    beside = Path(sys.executable).parent / "tokn-router"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("tokn-router")
    if found:
        return os.path.abspath(found)
    raise ToknError("cannot find the tokn-router executable to run as a service")


def default_config_path(home: Path) -> Path:
    return home / ".config" / "tokn-router" / "config.toml"


def service_argv(
    executable: str, config_path: Path | None, home: Path, serve_args: Sequence[str] = ()
) -> list[str]:
    """``EXE [--config PATH] serve ARGS…``; ``--config`` only when it is not the default.

    The service manager does not see the installing shell's ``TOKN_ROUTER_CONFIG``
    or ``XDG_CONFIG_HOME``, so a config found through them is named explicitly.
    """
    argv = [executable]
    if config_path is not None:
        absolute = Path(os.path.abspath(config_path.expanduser()))
        if absolute != default_config_path(home):
            argv += ["--config", str(absolute)]
    for a in serve_args:
        if "\n" in a or "\r" in a or "\0" in a:
            raise UsageError("serve arguments cannot contain line breaks")
    return [*argv, "serve", *serve_args]


def service_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of the service: unbuffered output, plus :data:`PASSED_ENV` when set."""
    env = {"PYTHONUNBUFFERED": "1"}  # log lines reach the journal as they are written
    env.update({k: environ[k] for k in PASSED_ENV if environ.get(k)})
    return env


# -------------------------------------------------------------------- rendering

_SAFE_ARG = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def systemd_quote(arg: str) -> str:
    """One word of a systemd command line: ``%`` and ``$`` escaped, quoted when needed."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and _SAFE_ARG.match(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd_unit(argv: Sequence[str], env: Mapping[str, str]) -> str:
    lines = [
        "# Written by `tokn-router service install`; `tokn-router service uninstall` removes it.",
        "[Unit]",
        f"Description={DESCRIPTION}",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(systemd_quote(a) for a in argv),
        "Restart=on-failure",
        "RestartSec=5",
        "# The daemon's output goes to the journal: journalctl --user -u tokn-router",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=tokn-router",
        *(f"Environment={systemd_quote(f'{k}={v}')}" for k, v in env.items()),
        # SIGTERM starts a graceful shutdown ([server] shutdown_grace_secs, 10 s by default)
        "TimeoutStopSec=30",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def render_launchd_plist(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> bytes:
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(argv),
        "EnvironmentVariables": dict(env),
        "RunAtLoad": True,
        # restart when it exits with a failure, as systemd's Restart=on-failure
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "StandardOutPath": str(log_path),
        "StandardErrorPath": str(log_path),
        "ProcessType": "Background",
    }
    return plistlib.dumps(agent, sort_keys=False)


# ------------------------------------------------------------------- operations


@dataclass
class Outcome:
    """What a service command did, line by line, and the exit code to end with."""

    lines: list[str] = field(default_factory=list)
    exit_code: int = 0

    def say(self, line: str) -> None:
        self.lines.append(line)


def _write(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path``; returns "written", "updated" or "unchanged"."""
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    except OSError as e:
        raise ToknError(f"{path}: cannot read: {e.strerror}") from None
    if old == data:
        return "unchanged"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, 0o644)
    except OSError as e:
        raise ToknError(f"{path}: cannot write: {e.strerror}") from None
    return "written" if old is None else "updated"


def _shell_join(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def install(host: Host, argv: Sequence[str], env: Mapping[str, str]) -> Outcome:
    path = host.unit_path()
    out = Outcome()
    if host.system == "darwin":
        return _install_launchd(host, path, argv, env, out)
    state = _write(path, render_systemd_unit(argv, env).encode("utf-8"))
    out.say(f"unit {state}: {path}")
    out.say(f"runs: {_shell_join(argv)}")
    systemctl = host.which("systemctl")
    if systemctl is None:
        out.say(
            "systemctl not found, so nothing was started; on a systemd system run "
            "`systemctl --user daemon-reload && systemctl --user enable --now tokn-router`, "
            "or run the command above yourself"
        )
        return out
    steps = [["daemon-reload"], ["enable", "--now", UNIT_NAME]]
    if state == "updated":
        steps.append(["restart", UNIT_NAME])  # enable --now leaves a running old one alone
    for step in steps:
        cmd = [systemctl, "--user", *step]
        r = host.run(cmd)
        if r.returncode != 0:
            out.say(f"`systemctl --user {' '.join(step)}` failed: {r.detail()}")
            out.say("the unit file is in place; fix the above and run the command again")
            out.exit_code = 1
            return out
        out.say(f"ran: systemctl --user {' '.join(step)}")
    out.say("logs: journalctl --user -u tokn-router -f")
    out.say(
        "to keep it running while you are logged out: loginctl enable-linger "
        + (os.environ.get("USER") or "$USER")
    )
    return out


def _install_launchd(
    host: Host, path: Path, argv: Sequence[str], env: Mapping[str, str], out: Outcome
) -> Outcome:
    log = host.log_path()
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ToknError(f"{log.parent}: cannot create: {e.strerror}") from None
    state = _write(path, render_launchd_plist(argv, env, log))
    out.say(f"agent {state}: {path}")
    out.say(f"runs: {_shell_join(argv)}")
    launchctl = host.which("launchctl")
    target = f"gui/{host.uid}"
    if launchctl is None:
        out.say(
            f"launchctl not found, so nothing was started; run `launchctl bootstrap {target} "
            f"{path}`, or run the command above yourself"
        )
        return out
    # bootstrap refuses an agent that is already loaded: unload it first (a no-op if not)
    host.run([launchctl, "bootout", f"{target}/{LAUNCHD_LABEL}"])
    r = host.run([launchctl, "bootstrap", target, str(path)])
    if r.returncode != 0:
        out.say(f"`launchctl bootstrap {target} {path}` failed: {r.detail()}")
        out.exit_code = 1
        return out
    out.say(f"ran: launchctl bootstrap {target} {path}")
    out.say(f"logs: {log}")
    return out


def uninstall(host: Host) -> Outcome:
    path = host.unit_path()
    out = Outcome()
    if not path.exists():
        out.say(f"not installed: {path} does not exist")
        return out
    if host.system == "darwin":
        launchctl = host.which("launchctl")
        if launchctl is not None:
            host.run([launchctl, "bootout", f"gui/{host.uid}/{LAUNCHD_LABEL}"])
            out.say(f"ran: launchctl bootout gui/{host.uid}/{LAUNCHD_LABEL}")
        _remove(path, out)
        return out
    systemctl = host.which("systemctl")
    if systemctl is not None:
        # stops it too; a unit systemd never loaded makes this fail, which is fine here
        r = host.run([systemctl, "--user", "disable", "--now", UNIT_NAME])
        out.say(
            "ran: systemctl --user disable --now " + UNIT_NAME
            if r.returncode == 0
            else f"systemctl --user disable --now {UNIT_NAME}: {r.detail()} (continuing)"
        )
    _remove(path, out)
    if systemctl is not None:
        host.run([systemctl, "--user", "daemon-reload"])
        out.say("ran: systemctl --user daemon-reload")
    return out


def _remove(path: Path, out: Outcome) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ToknError(f"{path}: cannot remove: {e.strerror}") from None
    out.say(f"removed: {path}")


_EXEC_RE = re.compile(r"^ExecStart=(.*)$", re.M)
_LAUNCHD_STATE_RE = re.compile(r"^\s*state = (\S+)", re.M)
_LAUNCHD_PID_RE = re.compile(r"^\s*pid = (\d+)", re.M)


def status(host: Host) -> Outcome:
    """Whether the service is installed and running; exit 0 running, 3 not running."""
    path = host.unit_path()
    out = Outcome()
    if not path.exists():
        out.say(
            f"not installed ({path} does not exist); install it with `tokn-router service install`"
        )
        out.exit_code = 3
        return out
    if host.system == "darwin":
        return _status_launchd(host, path, out)
    out.say(f"installed: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    m = _EXEC_RE.search(text)
    if m:
        out.say(f"runs: {m.group(1)}")
    systemctl = host.which("systemctl")
    if systemctl is None:
        out.say("state: unknown (systemctl not found)")
        out.exit_code = 3
        return out
    enabled = host.run([systemctl, "--user", "is-enabled", UNIT_NAME])
    active = host.run([systemctl, "--user", "is-active", UNIT_NAME])
    out.say(f"enabled: {enabled.stdout.strip() or enabled.detail()}")
    state = active.stdout.strip() or active.detail()
    out.say(f"state: {state}")
    if state != "active":
        out.say("logs: journalctl --user -u tokn-router -n 50")
        out.exit_code = 3
    return out


def _status_launchd(host: Host, path: Path, out: Outcome) -> Outcome:
    out.say(f"installed: {path}")
    try:
        agent = plistlib.loads(path.read_bytes())
        out.say(f"runs: {_shell_join(agent.get('ProgramArguments', []))}")
    except (OSError, plistlib.InvalidFileException, ValueError):
        out.say("runs: (the agent file is unreadable)")
    launchctl = host.which("launchctl")
    if launchctl is None:
        out.say("state: unknown (launchctl not found)")
        out.exit_code = 3
        return out
    r = host.run([launchctl, "print", f"gui/{host.uid}/{LAUNCHD_LABEL}"])
    if r.returncode != 0:
        out.say("state: not loaded")
        out.exit_code = 3
        return out
    m = _LAUNCHD_STATE_RE.search(r.stdout)
    pid = _LAUNCHD_PID_RE.search(r.stdout)
    state = m.group(1) if m else "unknown"
    out.say(f"state: {state}" + (f" (pid {pid.group(1)})" if pid else ""))
    out.say(f"logs: {host.log_path()}")
    if state != "running":
        out.exit_code = 3
    return out

"""The command line as a user meets it: flag checks, help, pipes, ``python -m``, completion."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from tests.fakes.process import CLI

# Every command with a flag or argument that has a range, given a value outside it.
OUT_OF_RANGE: list[tuple[str, ...]] = [
    ("serve", "--port", "80000"),
    ("serve", "--port", "-1"),
    ("serve", "--port", "many"),
    ("serve", "--proxy-port", "65536"),
    ("serve", "--host", ""),
    ("serve", "--host", "two words"),
    ("serve", "--proxy-route-mode", "sideways"),
    ("serve", "--with-proxy", "--proxy-port", "99999"),
    ("proxy", "--port", "80000"),
    ("proxy", "start", "--port", "-5"),
    ("proxy", "start", "--route-mode", "sideways"),
    ("proxy", "env", "--shell", "tcsh"),
    ("proxy", "ca", "frobnicate"),
    ("status", "--port", "70000"),
    ("status", "--host", "a/b"),
    ("login", "--id", "no spaces please"),
    ("login", "--base-url", "ftp://example.com"),
    ("login", "--base-url", "http://example.com:99999"),
    ("login", "--provider", "nope"),
    ("import", "--from", "nowhere"),
    ("import", "--from", "env", "--env-var", "1BAD-NAME"),
    ("import", "--from", "env", "--id", "a/b"),
    ("usage", "--since", "99999y"),
    ("usage", "--since", "the day before"),
    ("completion", "tcsh"),
    ("config", "get", "server.nope"),
    ("config", "set", "server.port", "70000"),
    ("config", "set", "pool.failure_cooldown_secs", "-1"),
    ("config", "set", "proxy_mode.route_mode", "sideways"),
    ("account", "remove"),
    ("doctor", "extra-argument"),
    ("headers", "--account"),
]


_DRIVER = """
import contextlib, io, json, sys, traceback
from tokn_router.cli import main
out = []
for args in json.loads(sys.argv[1]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(args)
        except SystemExit as x:
            rc = x.code
        except BaseException:
            rc = "raised"
            e.write(traceback.format_exc())
    out.append([rc, o.getvalue(), e.getvalue()])
print(json.dumps(out))
"""


def run_many(args_list: Sequence[Sequence[str]], env: dict[str, str], cwd: Any) -> list[Any]:
    """``main(args)`` of the CLI for each argument list, in one child process.

    A process per command costs ~0.3 s of start-up on a loaded 2-core machine; the
    sweeps below run dozens, so they share one interpreter (the code path after
    start-up is the console script's own). Real processes are tested separately.
    """
    r = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps([list(a) for a in args_list])],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return [tuple(x) for x in json.loads(r.stdout)]


def test_every_out_of_range_flag_is_one_line_exit_2(
    cli_env: dict[str, str], env_home: Any, fake: Any
) -> None:
    results = run_many(OUT_OF_RANGE, cli_env, env_home.home)
    for args, (rc, stdout, stderr) in zip(OUT_OF_RANGE, results, strict=True):
        where = f"tokn-router {' '.join(args)}: rc={rc}\n{stdout}{stderr}"
        assert rc == 2, where
        assert "Traceback" not in stdout + stderr, where
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("tokn-router: error: "), where
        assert stdout == "", where
    # nothing ran: no config, no state dir content, no request upstream
    assert not env_home.config_path.exists()
    assert fake.requests == []


def test_flag_errors_name_the_flag_and_the_range(run_cli: Any) -> None:
    # the real console script, as typed
    r = run_cli("serve", "--port", "80000")
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "--port" in r.stderr and "0 to 65535" in r.stderr
    r = run_cli("login", "--base-url", "ftp://example.com")
    assert "--base-url" in r.stderr and "http://" in r.stderr


# --------------------------------------------------------------------------- help

HELP_COMMANDS: list[tuple[str, ...]] = [
    (),
    ("serve",),
    ("status",),
    ("doctor",),
    ("completion",),
    ("login",),
    ("import",),
    ("headers",),
    ("usage",),
    ("account", "list"),
    ("account", "show"),
    ("account", "remove"),
    ("config", "get"),
    ("config", "set"),
    ("config", "list"),
    ("config", "edit"),
    ("proxy",),
    ("proxy", "start"),
    ("proxy", "env"),
    ("proxy", "shell"),
    ("proxy", "ca", "show"),
    ("proxy", "ca", "regenerate"),
]


def test_help_reads_well(cli_env: dict[str, str], env_home: Any) -> None:
    width = 72
    env = {**cli_env, "COLUMNS": str(width)}
    results = run_many([(*c, "--help") for c in HELP_COMMANDS], env, env_home.home)
    for cmd, (rc, stdout, stderr) in zip(HELP_COMMANDS, results, strict=True):
        where = f"tokn-router {' '.join(cmd)} --help\n{stdout}{stderr}"
        assert rc == 0 and stderr == "", where
        assert stdout.startswith("Usage: tokn-router"), where
        # flags are off unless given: no double negations, no "--no-" twins at all
        assert not re.search(r"--no-(no-|insecure|with-proxy|json|yes|install|add)", stdout), where
        assert "[default: False]" not in stdout, where
        lines = stdout.splitlines()
        for line in lines:
            assert len(line) <= width, f"{line!r} is wider than {width}\n{where}"
        # inside a panel every line is indented: entries by 2, continuations by 6
        in_panel = False
        for line in lines:
            if line.endswith(":") and not line.startswith(" "):
                in_panel = line in ("Commands:", "Parameters:", "Arguments:")
                continue
            if not line.strip():
                in_panel = False
                continue
            if in_panel:
                assert line.startswith("  "), f"{line!r} not indented\n{where}"
                if not line.startswith("  -") and not re.match(r"  [A-Za-z_-]+[,:]", line):
                    assert line.startswith("      "), f"{line!r} continuation\n{where}"


def test_help_piped_into_head_exits_0(cli_env: dict[str, str], env_home: Any) -> None:
    # as a user types it (pipefail: the exit code of tokn-router, not of head)
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{CLI} --help | head -1"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Usage: tokn-router COMMAND\n" and r.stderr == ""
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"COLUMNS=60 {CLI} serve --help | head -20"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=30,
    )
    assert r.returncode == 0 and "--no-no-proxy" not in r.stdout and "      " in r.stdout
    # a reader that is already gone: every write fails with EPIPE
    for args in (["--help"], ["serve", "--help"], ["--version"], ["config", "list"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            p = subprocess.run(
                [str(CLI), *args],
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                env=cli_env,
                cwd=env_home.home,
                timeout=30,
            )
        finally:
            os.close(write_end)
        assert p.returncode == 0 and p.stderr == "", (args, p.returncode, p.stderr)


def test_python_dash_m(cli_env: dict[str, str], env_home: Any) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tokn_router", "--version"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=30,
    )
    direct = subprocess.run([str(CLI), "--version"], capture_output=True, text=True, env=cli_env)
    assert r.returncode == 0 and r.stdout == direct.stdout and r.stdout.startswith("tokn-router")
    r = subprocess.run(
        [sys.executable, "-m", "tokn_router", "serve", "--port", "80000"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=30,
    )
    assert r.returncode == 2 and r.stderr.startswith("tokn-router: error:")


# --------------------------------------------------------------------- completion


def _complete(script: str, words: list[str], env: dict[str, str]) -> list[str]:
    """What bash offers for ``words`` (the last one is being typed) with ``script`` loaded."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = (
        f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _tokn_router; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    r = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion_completes_commands_flags_and_choices(
    run_cli: Any, cli_env: dict[str, str]
) -> None:
    r = run_cli("completion", "bash")
    assert r.returncode == 0 and r.stderr == ""
    script = r.stdout
    env = {**cli_env, "PATH": f"{CLI.parent}{os.pathsep}{cli_env.get('PATH', '')}"}
    assert _complete(script, ["tokn-router", "st"], env) == ["status"]
    assert "--with-proxy" in _complete(script, ["tokn-router", "serve", "--w"], env)
    assert set(_complete(script, ["tokn-router", "serve", "--proxy-route-mode", ""], env)) == {
        "route",
        "passthrough",
        "switch",
    }
    assert "regenerate" in _complete(script, ["tokn-router", "proxy", "ca", ""], env)
    assert "--json" in _complete(script, ["tokn-router", "account", "list", "--"], env)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_know_the_commands(run_cli: Any, shell: str) -> None:
    r = run_cli("completion", shell)
    assert r.returncode == 0 and r.stderr == ""
    for word in ("serve", "status", "doctor", "with-proxy", "proxy-route-mode", "passthrough"):
        assert word in r.stdout, word


def test_completion_install_writes_the_script_and_the_rc_line(run_cli: Any, env_home: Any) -> None:
    r = run_cli("completion", "bash", "--install")
    assert r.returncode == 0, r.stderr
    target = env_home.home / ".local/share/bash-completion/completions/tokn-router"
    assert str(target) in r.stdout and "_tokn_router" in target.read_text()
    assert str(target) in (env_home.home / ".bashrc").read_text()
    out = env_home.home / "comp" / "tokn-router.fish"
    r = run_cli("completion", "fish", "--install", "--output", str(out))
    assert r.returncode == 0 and "complete -c tokn-router" in out.read_text()

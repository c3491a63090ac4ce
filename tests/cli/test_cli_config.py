"""``tokn-router config …`` and bad input, run as subprocesses in a temp HOME."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.process import CLI

GHO = "gho_secretsecret0123456789"
COMMENTED = """\
# tokn-router config — hand-edited, comments must survive
[server]
port = 4141   # the API port

# proxy settings below
[proxy_mode]
intercept_hosts = ["a.example"]

[[accounts]]
id = "work"   # my work account
provider = "github-copilot"
refresh_token = "gho_secretsecret0123456789"
"""


def one_error_line(r: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    assert r.returncode != 0, r.stdout
    if code is not None:
        assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


# -------------------------------------------------------------------------- get / path


def test_path_and_precedence(run_cli: Any, env_home: Any, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    assert ok(run_cli("config", "path", "--config", str(other))).strip() == str(other)
    assert ok(run_cli("--config", str(other), "config", "path")).strip() == str(other)
    env = {"TOKN_ROUTER_CONFIG": None, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert ok(run_cli("config", "path", env=env)).strip() == str(
        tmp_path / "xdg/tokn-router/config.toml"
    )
    env["XDG_CONFIG_HOME"] = None
    expected = env_home.home / ".config/tokn-router/config.toml"
    assert ok(run_cli("config", "path", env=env)).strip() == str(expected)


def test_get_effective_values(run_cli: Any, write_config: Any, env_home: Any) -> None:
    write_config(COMMENTED)
    assert ok(run_cli("config", "get", "server.host")) == "127.0.0.1\n"  # default, bare string
    assert ok(run_cli("config", "get", "proxy_mode.intercept_hosts")) == '["a.example"]\n'
    assert ok(run_cli("config", "get", "usage.path")) == f"{env_home.state_dir / 'usage.db'}\n"
    out = ok(run_cli("config", "get", "--account", "work", "refresh_token"))
    assert out == "gho_se…(redacted)\n"
    r = run_cli("config", "get", "proxy.url")  # unset, no default
    assert r.returncode == 1 and r.stdout == ""


# ------------------------------------------------------------------------- set / unset


def test_set_unset_add_account_keep_comments(run_cli: Any, write_config: Any) -> None:
    path = write_config(COMMENTED)
    assert ok(run_cli("config", "set", "server.port", "8080")) == "set server.port: 8080\n"
    ok(run_cli("config", "set", "proxy_mode.intercept_hosts", "b.example:8443", "--add"))
    out = ok(run_cli("config", "set", "proxy.url", "http://user:hunter2pw@127.0.0.1:3128"))
    assert "hunter2pw" not in out and "user:***@" in out
    ok(run_cli("config", "set", "--account", "work", "settings.editor_version", "vscode/1.99.0"))
    assert ok(run_cli("config", "unset", "proxy.url")) == "unset proxy.url\n"
    text = path.read_text()
    for comment in (
        "# tokn-router config — hand-edited, comments must survive",
        "port = 8080   # the API port",
        "# proxy settings below",
        'id = "work"   # my work account',
    ):
        assert comment in text
    data = tomllib.loads(text)
    assert data["server"] == {"port": 8080}
    assert data["proxy_mode"]["intercept_hosts"] == ["a.example", "b.example:8443"]
    assert "url" not in data.get("proxy", {})
    assert data["accounts"][0]["settings"] == {"editor_version": "vscode/1.99.0"}
    assert mode(path) == 0o600


def test_list_is_effective_and_redacted(run_cli: Any, write_config: Any) -> None:
    write_config(COMMENTED + '[proxy]\nurl = "socks5h://me:pa55word@127.0.0.1:1080"\n')
    out = ok(run_cli("config", "list"))
    assert GHO not in out and "pa55word" not in out
    data = tomllib.loads(out)
    assert data["server"]["port"] == 4141 and data["server"]["host"] == "127.0.0.1"
    assert data["pool"]["failure_cooldown_secs"] == 60
    assert data["proxy"]["url"] == "socks5h://me:***@127.0.0.1:1080"
    assert data["accounts"][0]["refresh_token"] == "gho_se…(redacted)"


def test_edit_validates(run_cli: Any, write_config: Any, tmp_path: Path) -> None:
    path = write_config(COMMENTED)
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace(sys.argv[-3], sys.argv[-2]))\n".replace(
            "sys.argv[-3]", "__import__('os').environ['FROM']"
        ).replace("sys.argv[-2]", "__import__('os').environ['TO']")
    )
    ed = f"{sys.executable} {editor}"
    # a valid edit is saved
    r = run_cli(
        "config",
        "edit",
        env={"EDITOR": ed, "VISUAL": None, "FROM": "port = 4141", "TO": "port = 5000"},
    )
    assert "Saved" in ok(r)
    assert "port = 5000   # the API port" in path.read_text() and mode(path) == 0o600
    before = path.read_bytes()
    # an invalid edit is refused and the file stays as it was
    r = run_cli("config", "edit", env={"VISUAL": ed, "FROM": "port = 5000", "TO": 'port = "x"'})
    line = one_error_line(r, code=2)
    assert "key 'server.port'" in line and "left unchanged" in line
    assert path.read_bytes() == before
    # an editor that fails leaves it too
    r = run_cli("config", "edit", env={"VISUAL": "false"})
    assert "exited with status 1" in one_error_line(r)
    assert path.read_bytes() == before


# -------------------------------------------------------------------- config edges


def test_unset_leaves_no_empty_table_behind(run_cli: Any, write_config: Any) -> None:
    path = write_config(
        "# top\n[server]\nport = 5000\n\n[pool]\n# why 3: flaky upstream\n"
        'failure_cooldown_secs = 3\n\n[proxy_mode.provider_modes]\nzai = "route"\n\n'
        '[[accounts]]\nid = "a"\nprovider = "zai"\napi_key = "zai-key-0123456789"\n'
        '[accounts.settings]\nuser_agent = "x/1"\n'
    )
    for args in (
        ["server.port"],
        ["pool.failure_cooldown_secs"],
        ["proxy_mode.provider_modes.zai"],
        ["--account", "a", "settings.user_agent"],
    ):
        assert "unset " in ok(run_cli("config", "unset", *args))
    text = path.read_text()
    assert "[server]" not in text and "provider_modes" not in text and "[proxy_mode" not in text
    assert "[accounts.settings]" not in text
    assert "[pool]\n# why 3: flaky upstream" in text  # a table with a comment is the user's
    assert text.startswith("# top\n") and '[[accounts]]\nid = "a"' in text
    assert tomllib.loads(text)["accounts"][0]["api_key"] == "zai-key-0123456789"


def test_unclosed_table_header_is_named(run_cli: Any, write_config: Any) -> None:
    # with a [server] table already present tomllib says "Cannot declare ('server',) twice"
    path = write_config('[server]\nhost = "127.0.0.1"\n\n[server\nport = 5000\n')
    line = one_error_line(run_cli("config", "list"), code=2)
    assert line == (
        f"tokn-router: error: {path}:4: invalid TOML: unclosed table header '[server' (missing ']')"
    )
    path = write_config('[[accounts]]\nid = "a"\n[[accounts\nid = "b"\n')
    assert "unclosed table header '[[accounts' (missing ']]')" in one_error_line(
        run_cli("account", "list")
    )


_EDITOR = """\
import os, pathlib, sys
p = pathlib.Path(sys.argv[1])
runs = pathlib.Path(os.environ["RUNS"])
n = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(n + 1))
# first run: a typo; later runs: the user fixes it
text = p.read_text()
if n == 0:
    p.write_text(text.replace("port = 4141", "port = 5000\\n[server"))
else:
    p.write_text(text.replace("\\n[server   #", "   #"))
"""


def _editor(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "editor.py"
    script.write_text(_EDITOR)
    return {"VISUAL": f"{sys.executable} {script}", "RUNS": str(tmp_path / "runs")}


def _edit_copies(state_dir: Path) -> list[Path]:
    return sorted(state_dir.glob("config.edit-*"))


def test_failed_edit_leaves_no_copy_behind(
    run_cli: Any, write_config: Any, env_home: Any, tmp_path: Path
) -> None:
    path = write_config(COMMENTED)
    before = path.read_bytes()
    line = one_error_line(run_cli("config", "edit", env=_editor(tmp_path)), code=2)
    assert "unclosed table header '[server'" in line and "your edit was discarded" in line
    assert path.read_bytes() == before
    assert _edit_copies(env_home.state_dir) == []


def test_failed_edit_offers_to_reopen_the_editor(
    cli_env: dict[str, str], write_config: Any, env_home: Any, tmp_path: Path
) -> None:
    from tests.cli_pty import drain, read_until, spawn_on_pty

    path = write_config(COMMENTED)
    proc, master = spawn_on_pty(["config", "edit"], {**cli_env, **_editor(tmp_path)})
    try:
        seen = read_until(master, b"Re-open the editor to fix it? [Y/n] ")
        assert b"unclosed table header '[server'" in seen
        assert len(_edit_copies(env_home.state_dir)) == 1  # the edit waits for the user
        os.write(master, b"y\n")
        seen += drain(master, proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, seen
    assert b"Saved" in seen and (tmp_path / "runs").read_text() == "2"
    assert "port = 5000   # the API port" in path.read_text()  # the first edit, fixed
    assert _edit_copies(env_home.state_dir) == []


def test_declined_reopen_discards_the_edit(
    cli_env: dict[str, str], write_config: Any, env_home: Any, tmp_path: Path
) -> None:
    from tests.cli_pty import drain, read_until, spawn_on_pty

    path = write_config(COMMENTED)
    before = path.read_bytes()
    proc, master = spawn_on_pty(["config", "edit"], {**cli_env, **_editor(tmp_path)})
    try:
        read_until(master, b"[Y/n] ")
        os.write(master, b"n\n")
        seen = drain(master, proc)
    finally:
        proc.kill()
    assert proc.returncode == 2, seen
    assert b"your edit was discarded" in seen and b"Traceback" not in seen
    assert path.read_bytes() == before and (tmp_path / "runs").read_text() == "1"
    assert _edit_copies(env_home.state_dir) == []


# ----------------------------------------------------------------------- bad input (#7)


BAD_CONFIGS = {
    "corrupt": "[server\nport = 1\n",
    "half-written": '[server]\nport = 4141\n\n[[accounts]]\nid = "work"\nprovider = "github-cop',
    "unknown-key": "[server]\nport = 4141\nprot = 1\n",
    "wrong-type": '[server]\nport = "4141"\n',
    "duplicate-id": '[[accounts]]\nid = "a"\napi_key = "k"\nprovider = "zai"\n\n'
    '[[accounts]]\nid = "a"\napi_key = "k"\nprovider = "zai"\n',
    "binary": "\x00\x01\x02garbage",
}


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("corrupt", ["config", "set", "server.port", "1"], ":1: invalid TOML"),
        ("half-written", ["account", "list"], ":6: invalid TOML"),
        ("unknown-key", ["headers"], ":3: key 'server.prot'"),
        ("wrong-type", ["config", "list"], ":2: key 'server.port': Expected `int`, got `str`"),
        (
            "duplicate-id",
            ["account", "remove", "a"],
            ":7: key 'accounts[1].id': duplicate account id 'a'",
        ),
    ],
)
def test_bad_config_on_disk(
    run_cli: Any, write_config: Any, case: str, args: list[str], expected: str
) -> None:
    path = write_config(BAD_CONFIGS[case])
    before = path.read_bytes()
    line = one_error_line(run_cli(*args, input="zai-key\n"), code=2)
    assert line.startswith(f"tokn-router: error: {path}") and expected in line
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "expected", "code"),
    [
        (["config", "set", "server.nope", "1"], "unknown config key 'server.nope'", 2),
        (
            ["config", "set", "server.port", "abc"],
            "invalid value 'abc' for 'server.port' (expected integer)",
            2,
        ),
        (["config", "set", "server.port", "70000"], "Expected `int` <= 65535", 2),
        (["config", "set", "server.port", "1", "--add"], "--add appends to lists", 2),
        (
            ["config", "set", "--account", "nobody", "enabled", "false"],
            "no account with id 'nobody'",
            1,
        ),
        (
            ["config", "set", "--account", "work", "api_key", "sk-0123456789abcdef", "--add"],
            "--add",
            2,
        ),
        (
            ["config", "set", "--account", "work", "provider", "openai"],
            "unknown provider 'openai'",
            2,
        ),
    ],
)
def test_bad_commands_leave_config_unchanged(
    run_cli: Any, write_config: Any, args: list[str], expected: str, code: int
) -> None:
    path = write_config(COMMENTED)
    before = path.read_bytes()
    line = one_error_line(run_cli(*args), code=code)
    assert expected in line
    assert "sk-0123456789abcdef" not in line and GHO not in line
    assert path.read_bytes() == before


def test_unwritable_state_dir(run_cli: Any, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root ignores modes: make the state dir's parent a regular file
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory\n")
        cfg = blocker / "tokn-router" / "config.toml"
        line = one_error_line(
            run_cli("config", "set", "server.port", "1", env={"TOKN_ROUTER_CONFIG": str(cfg)})
        )
        assert str(cfg.parent) in line and "Not a directory" in line
        assert blocker.read_text() == "not a directory\n"
        return
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = state / "config.toml"
    cfg.write_text("[server]\nport = 4141\n")
    state.chmod(0o500)
    try:
        line = one_error_line(
            run_cli("config", "set", "server.port", "1", env={"TOKN_ROUTER_CONFIG": str(cfg)})
        )
    finally:
        state.chmod(0o700)
    assert "Permission denied" in line
    assert cfg.read_text() == "[server]\nport = 4141\n"


# ------------------------------------------------------------------------ modes, locking


def test_modes_are_tightened_on_write(run_cli: Any, env_home: Any) -> None:
    state = env_home.state_dir
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    path = env_home.config_path
    path.write_text("[server]\nport = 4141\n")
    path.chmod(0o644)
    ok(run_cli("config", "set", "pool.failure_cooldown_secs", "5"))
    assert mode(path) == 0o600 and mode(state) == 0o700
    # a brand-new config is created private too
    fresh = env_home.home / "new" / "dir" / "config.toml"
    ok(run_cli("config", "set", "server.port", "1", env={"TOKN_ROUTER_CONFIG": str(fresh)}))
    assert mode(fresh) == 0o600 and mode(fresh.parent) == 0o700


def test_concurrent_config_sets_both_land(write_config: Any, cli_env: dict[str, str]) -> None:
    path = write_config(COMMENTED)
    for i in range(3):
        procs = [
            subprocess.Popen(
                [str(CLI), "config", "set", key, str(value)],
                env=cli_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for key, value in (("server.port", 5000 + i), ("pool.failure_cooldown_secs", 10 + i))
        ]
        for p in procs:
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
        data = tomllib.loads(path.read_text())
        assert data["server"]["port"] == 5000 + i
        assert data["pool"]["failure_cooldown_secs"] == 10 + i
    assert "# proxy settings below" in path.read_text()
    assert mode(path) == 0o600


def test_parse_errors_are_one_line_at_any_width(run_cli) -> None:
    r = run_cli("proxy", "env", "--shell", "csh", env={"COLUMNS": "20"})
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "csh" in lines[0]


def test_version_prints_the_version_file_line(run_cli) -> None:
    from pathlib import Path

    import tokn_router

    line = (Path(__file__).resolve().parents[2] / "VERSION").read_text().strip()
    assert tokn_router.__version__ == line
    for flag in ("--version", "-V"):
        r = run_cli(flag)
        assert r.returncode == 0
        assert r.stdout.strip() == f"tokn-router {line}"

"""``tokn-router import --from gh|copilot-plugin|env`` with real token files in a temp HOME."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeUpstream

GH_TOKEN = "gho_ghuser0123456789"
PLUGIN_TOKEN = "ghu_pluginuser0123456789"


def one_error_line(r: subprocess.CompletedProcess[str], code: int | None = None) -> str:
    assert r.returncode != 0, r.stdout
    if code is not None:
        assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def accounts(path: Path) -> list[dict[str, Any]]:
    return tomllib.loads(path.read_text())["accounts"] if path.exists() else []


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_imported(r: subprocess.CompletedProcess[str], cfg: Path, token: str, login: str) -> None:
    assert r.returncode == 0, r.stderr
    assert token not in r.stdout + r.stderr
    (acc,) = accounts(cfg)
    assert acc["id"] == login and acc["refresh_token"] == token
    assert acc["access_token"].startswith("tid=")


# ------------------------------------------------------------------------------ gh


def test_gh_token_env_wins(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    write(
        env_home.xdg_config / "gh" / "hosts.yml",
        "github.com:\n    oauth_token: gho_other0123456789\n",
    )
    r = run_cli(
        "import", "--from", "gh", env={"GH_TOKEN": GH_TOKEN, "GITHUB_TOKEN": "gho_nope0123456789"}
    )
    assert_imported(r, env_home.config_path, GH_TOKEN, "ghuser0123456789")
    assert "$GH_TOKEN" in r.stdout
    assert fake.exchange_count(GH_TOKEN) == 1


HOSTS_TOP = f"github.com:\n    git_protocol: https\n    user: ghuser0123456789\n    oauth_token: {GH_TOKEN}\n"
HOSTS_USERS = (
    "github.com:\n    git_protocol: https\n    user: ghuser0123456789\n    users:\n"
    "        someoneelse:\n            oauth_token: gho_someoneelse012345\n"
    f"        ghuser0123456789:\n            oauth_token: {GH_TOKEN}\n"
)


@pytest.mark.parametrize(
    ("layout", "where"),
    [
        (HOSTS_TOP, "GH_CONFIG_DIR"),
        (HOSTS_USERS, "GH_CONFIG_DIR"),
        (HOSTS_TOP, "XDG_CONFIG_HOME"),
        (HOSTS_USERS, "HOME"),
    ],
    ids=["top-gh_config_dir", "users-gh_config_dir", "top-xdg", "users-home"],
)
def test_gh_hosts_yml(
    fake: FakeUpstream, run_cli: Any, env_home: Any, tmp_path: Path, layout: str, where: str
) -> None:
    env: dict[str, str | None] = {}
    if where == "GH_CONFIG_DIR":
        d = tmp_path / "ghconf"
        env["GH_CONFIG_DIR"] = str(d)
    elif where == "XDG_CONFIG_HOME":
        d = tmp_path / "xdg" / "gh"
        env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    else:
        d = env_home.home / ".config" / "gh"
        env["XDG_CONFIG_HOME"] = None  # ~/.config/gh
    write(d / "hosts.yml", layout)
    r = run_cli("import", "--from", "gh", env=env)
    assert_imported(r, env_home.config_path, GH_TOKEN, "ghuser0123456789")
    assert str(d / "hosts.yml") in r.stdout


def test_gh_auth_token_from_gh_on_path(
    fake: FakeUpstream, run_cli: Any, env_home: Any, tmp_path: Path
) -> None:
    # hosts.yml without a token (keyring storage), then `gh auth token`
    write(
        env_home.xdg_config / "gh" / "hosts.yml",
        "github.com:\n    user: ghuser0123456789\n    users:\n        ghuser0123456789:\n",
    )
    bindir = tmp_path / "bin"
    log = tmp_path / "gh-args"
    gh = write(bindir / "gh", f'#!/bin/sh\necho "$@" > {log}\necho {GH_TOKEN}\n')
    gh.chmod(0o755)
    r = run_cli("import", "--from", "gh", env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    assert_imported(r, env_home.config_path, GH_TOKEN, "ghuser0123456789")
    assert "`gh auth token`" in r.stdout
    assert log.read_text().split() == ["auth", "token", "--hostname", "github.com"]


def test_gh_nothing_found(run_cli: Any, env_home: Any, tmp_path: Path) -> None:
    line = one_error_line(run_cli("import", "--from", "gh", env={"PATH": str(tmp_path)}))
    assert "no GitHub token found" in line and "hosts.yml" in line and "`gh` is not on PATH" in line
    assert not env_home.config_path.exists()


def test_gh_token_refused_by_the_exchange(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    # (401 / 403 / other statuses: tests/accounts/test_importers.py)
    path = write_config("# untouched\n")
    fake.github_account(GH_TOKEN).exchange_failure = 404
    line = one_error_line(run_cli("import", "--from", "gh", env={"GH_TOKEN": GH_TOKEN}))
    assert line.startswith("tokn-router: error: $GH_TOKEN: ")
    assert "404" in line and GH_TOKEN not in line
    assert "cannot be exchanged for a Copilot token" in line
    assert "tokn-router login" in line and "import --from copilot-plugin" in line
    assert path.read_text() == "# untouched\n"


def test_import_duplicate_id(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    env = {"GH_TOKEN": GH_TOKEN}
    assert run_cli("import", "--from", "gh", env=env).returncode == 0
    before = env_home.config_path.read_bytes()
    line = one_error_line(run_cli("import", "--from", "gh", env=env))
    assert "'ghuser0123456789' already exists" in line
    assert env_home.config_path.read_bytes() == before


# ------------------------------------------------------------------- copilot plugin


def _plugin_dir(env_home: Any) -> Path:
    return env_home.xdg_config / "github-copilot"


def test_plugin_apps_json(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    apps = {
        "github.com:Ov23liOtherApp": {"user": "x", "oauth_token": "ghu_otherapp0123456789"},
        "github.com:Iv1.b507a08c87ecfe98": {
            "user": "pluginuser0123456789",
            "oauth_token": PLUGIN_TOKEN,
            "githubAppId": "Iv1.b507a08c87ecfe98",
        },
    }
    write(_plugin_dir(env_home) / "apps.json", json.dumps(apps))
    write(
        _plugin_dir(env_home) / "hosts.json",
        json.dumps({"github.com": {"oauth_token": "ghu_stale0123456789"}}),
    )
    r = run_cli("import", "--from", "copilot-plugin")
    assert_imported(r, env_home.config_path, PLUGIN_TOKEN, "pluginuser0123456789")
    assert "apps.json" in r.stdout


def test_plugin_hosts_json_under_home(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    write(
        env_home.home / ".config" / "github-copilot" / "hosts.json",
        json.dumps({"github.com": {"user": "pluginuser0123456789", "oauth_token": PLUGIN_TOKEN}}),
    )
    r = run_cli("import", "--from", "copilot-plugin", env={"XDG_CONFIG_HOME": None})
    assert_imported(r, env_home.config_path, PLUGIN_TOKEN, "pluginuser0123456789")
    assert "hosts.json" in r.stdout


def _auth_db(path: Path, value: str | bytes, authority: str = "github.com") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE oauth_tokens (auth_authority TEXT, token_ciphertext BLOB)")
        db.execute("INSERT INTO oauth_tokens VALUES ('ghe.example.com', 'ghu_enterprise0123456')")
        db.execute("INSERT INTO oauth_tokens VALUES (?, ?)", (authority, value))
    db.close()
    return path


def test_plugin_auth_db_plaintext(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    _auth_db(_plugin_dir(env_home) / "auth.db", PLUGIN_TOKEN)
    r = run_cli("import", "--from", "copilot-plugin")
    assert_imported(r, env_home.config_path, PLUGIN_TOKEN, "pluginuser0123456789")
    assert "auth.db" in r.stdout


def test_plugin_auth_db_encrypted(run_cli: Any, write_config: Any, env_home: Any) -> None:
    path = write_config("# untouched\n")
    blob = bytes(range(12)) + os.urandom(40) + b"\x00" * 16  # iv ‖ ciphertext ‖ tag
    _auth_db(_plugin_dir(env_home) / "auth.db", blob)
    line = one_error_line(run_cli("import", "--from", "copilot-plugin"))
    assert "encrypted" in line and "keychain" in line and "tokn-router login" in line
    assert path.read_text() == "# untouched\n"


# ------------------------------------------------------------------------------ env


def test_env_copilot_default_var(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    r = run_cli(
        "import", "--from", "env", env={"GH_COPILOT_TOKEN": PLUGIN_TOKEN, "GITHUB_TOKEN": GH_TOKEN}
    )
    assert_imported(r, env_home.config_path, PLUGIN_TOKEN, "pluginuser0123456789")


def test_env_zai_default_and_custom_var(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    r = run_cli(
        "import",
        "--from",
        "env",
        "--provider",
        "zai-coding-plan",
        "--base-url",
        fake.zai_url,
        env={"ZAI_API_KEY": "zai-env-key-0001"},
    )
    assert r.returncode == 0, r.stderr
    assert "zai-env-key-0001" not in r.stdout
    r = run_cli(
        "import",
        "--from",
        "env",
        "--provider",
        "zhipuai",
        "--env-var",
        "MY_KEY",
        "--id",
        "cn",
        "--base-url",
        fake.zai_general_url,
        env={"MY_KEY": "zai-env-key-0002"},
    )
    assert r.returncode == 0, r.stderr
    accs = accounts(env_home.config_path)
    assert [(a["id"], a["provider"], a["api_key"]) for a in accs] == [
        ("zai-coding-plan", "zai-coding-plan", "zai-env-key-0001"),
        ("cn", "zhipuai", "zai-env-key-0002"),
    ]


def test_env_zai_invalid_key(fake: FakeUpstream, run_cli: Any, env_home: Any) -> None:
    r = run_cli(
        "import",
        "--from",
        "env",
        "--provider",
        "zai",
        "--base-url",
        fake.zai_general_url,
        env={"ZAI_API_KEY": "not-a-valid-key-123456"},
    )
    line = one_error_line(r)
    assert "rejected" in line and "not-a-valid-key-123456" not in r.stdout + r.stderr
    assert not env_home.config_path.exists()


@pytest.mark.parametrize(
    ("args", "env", "message", "code"),
    [
        (["--env-var", "NOPE"], {}, "$NOPE is not set", 1),
        ([], {"GH_COPILOT_TOKEN": "two words"}, "unexpected shape", 1),
    ],
)
def test_env_problems(
    run_cli: Any, env_home: Any, args: list[str], env: dict[str, str], message: str, code: int
) -> None:
    line = one_error_line(run_cli("import", "--from", "env", *args, env=env), code=code)
    assert message in line
    assert not env_home.config_path.exists()


# ------------------------------------------------------------ token files in bad shape


def _bad_sqlite(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tokens (x TEXT)")
    db.close()


@pytest.mark.parametrize(
    ("source", "relpath", "content", "message"),
    [  # every shape check: tests/accounts/test_importers.py
        ("gh", "gh/hosts.yml", "- just\n- a list\n", "expected a mapping of host names"),
        (
            "copilot-plugin",
            "github-copilot/apps.json",
            '{"github.com:Iv1.x": {"user": "a"}}',
            "has no string 'oauth_token'",
        ),
        ("copilot-plugin", "github-copilot/auth.db", None, "expected table oauth_tokens"),
    ],
)
def test_token_file_in_unexpected_shape(
    run_cli: Any,
    write_config: Any,
    env_home: Any,
    source: str,
    relpath: str,
    content: str | None,
    message: str,
) -> None:
    path = write_config("# untouched\n")
    target = env_home.xdg_config / relpath
    if content is None:
        _bad_sqlite(target)
    else:
        write(target, content)
    line = one_error_line(run_cli("import", "--from", source))
    assert message in line and str(target) in line
    assert path.read_text() == "# untouched\n"


def test_import_with_broken_config_fails_before_network(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    path = write_config("[server]\nport = \n")
    before = path.read_bytes()
    line = one_error_line(run_cli("import", "--from", "gh", env={"GH_TOKEN": GH_TOKEN}), code=2)
    assert f"{path}:2: invalid TOML" in line
    assert path.read_bytes() == before
    assert fake.requests == []


def test_import_gives_up_on_a_silent_github(
    fake: FakeUpstream, run_cli: Any, write_config: Any
) -> None:
    path = write_config("[upstream]\nconnect_timeout_secs = 1\n")
    fake.script("/copilot_internal/v2/token", hang=True)
    started = time.monotonic()
    r = run_cli("import", "--from", "gh", env={"GH_TOKEN": GH_TOKEN}, timeout=30)
    assert time.monotonic() - started < 10  # seconds, not the 300 s stream timeout
    line = one_error_line(r)
    assert "/copilot_internal/v2/token" in line and GH_TOKEN not in line
    assert f"contacting GitHub at {fake.url}…" in r.stdout.splitlines()
    assert path.read_text() == "[upstream]\nconnect_timeout_secs = 1\n"

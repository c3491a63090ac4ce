"""Config: parse errors, path resolution, the JSON Schema snapshot, key paths and values."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tokn_router.accounts import config, config_ops, identity, schema
from tokn_router.accounts.config import ConfigFile
from tokn_router.errors import AccountError, ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[2]
P = Path("/cfg/config.toml")


# ---------------------------------------------------------------------- parse errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = \n", "/cfg/config.toml:2: invalid TOML"),
        ('[server]\nport = 80\n[[accounts]]\nid = "a', "/cfg/config.toml:4: invalid TOML"),
        ("[server]\nport = 1\nprot = 2\n", "/cfg/config.toml:3: key 'server.prot': unknown key"),
        ("[server]\nport = 1\n\n[nope]\nx = 1\n", "/cfg/config.toml:4: key 'nope': unknown key"),
        (
            '[server]\nhost = "h"\nport = "x"\n',
            "/cfg/config.toml:3: key 'server.port': Expected `int`",
        ),
        (
            "[server]\nport = 99999\n",
            "/cfg/config.toml:2: key 'server.port': Expected `int` <= 65535",
        ),
        (
            '[[accounts]]\nid = "a"\n\n[[accounts]]\nid = "b"\nbogus = 1\n',
            "/cfg/config.toml:6: key 'accounts[1].bogus': unknown key",
        ),
        (
            '[[accounts]]\nid = "a"\n[accounts.settings]\ninitiator_mode = "x"\n',
            "/cfg/config.toml:4: key 'accounts[0].settings.initiator_mode'",
        ),
        (
            '[[accounts]]\nid = "a"\n[[accounts]]\nid = "a"\n',
            "/cfg/config.toml:4: key 'accounts[1].id': duplicate account id 'a'",
        ),
        (
            '[[accounts]]\nid = "a"\nprovider = "nope"\n',
            "/cfg/config.toml:3: key 'accounts[0].provider': unknown provider 'nope'",
        ),
    ],
)
def test_parse_errors_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as ei:
        config.parse(text, P)
    msg = str(ei.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg
    assert ei.value.exit_code == 2


def test_load_missing_file_is_default(tmp_path: Path) -> None:
    assert config.load(tmp_path / "none.toml") == config.Config()


def test_load_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "config.toml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        config.load(p)


# ------------------------------------------------------------------- path resolution


@pytest.mark.parametrize(
    ("cli", "env", "xdg", "expected"),
    [
        ("/a/c.toml", "/b/c.toml", "/x", "/a/c.toml"),
        (None, "/b/c.toml", "/x", "/b/c.toml"),
        (None, None, "/x", "/x/tokn-router/config.toml"),
        (None, None, None, "{home}/.config/tokn-router/config.toml"),
        (None, "", "", "{home}/.config/tokn-router/config.toml"),  # empty = unset
        ("~/my.toml", None, None, "{home}/my.toml"),
    ],
)
def test_resolve_path_precedence(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    cli: str | None,
    env: str | None,
    xdg: str | None,
    expected: str,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in (("TOKN_ROUTER_CONFIG", env), ("XDG_CONFIG_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert config.resolve_path(cli) == Path(expected.format(home=tmp_path))


# ---------------------------------------------------------------------- JSON Schema


def test_json_schema_snapshot_matches_code() -> None:
    snapshot = ROOT / "schemas" / "config" / "v0.2.0.json"
    expected = json.dumps(schema.json_schema(), indent=2, sort_keys=True) + "\n"
    assert snapshot.read_text(encoding="utf-8") == expected, (
        "config schema drifted from schemas/config/v0.2.0.json; "
        "run `python scripts/gen_config_schema.py` and commit the result"
    )


def test_schema_snapshot_follows_version() -> None:
    version = (ROOT / "VERSION").read_text().strip()
    major, minor, _ = version.lstrip("v").split(".")
    assert (ROOT / "schemas" / "config" / f"v{major}.{minor}.0.json").exists()


def test_gen_config_schema_check_passes() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# -------------------------------------------------------------- key paths and values


def test_key_type_checks_keys() -> None:
    assert config_ops.key_type("server.port", None) is not None
    assert config_ops.key_type("settings.user_agent", "acc") is not None
    with pytest.raises(ConfigError, match=r"unknown config key 'server\.nope'"):
        config_ops.key_type("server.nope", None)
    with pytest.raises(ConfigError, match="unknown account key 'nope'"):
        config_ops.key_type("nope", "acc")
    with pytest.raises(UsageError, match="--account"):
        config_ops.key_type("accounts.id", None)
    with pytest.raises(UsageError, match="invalid config key"):
        config_ops.key_type("server..port", None)


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("server.port", "8080", 8080),
        ("server.host", "10.0.0.1", "10.0.0.1"),  # strings need no quotes
        ("server.host", '"quoted"', "quoted"),  # a TOML string literal is unquoted
        ("server.route_mode", "switch", "switch"),
        ("usage.enabled", "false", False),
        ("server.shutdown_grace_secs", "2.5", 2.5),
        ("server.shutdown_grace_secs", "3", 3),
        ("proxy.url", "socks5h://u:p@h:1080", "socks5h://u:p@h:1080"),
        ("proxy.no_proxy", '["a", ".b"]', ["a", ".b"]),
        ("proxy.no_proxy", "localhost", ["localhost"]),  # a bare element → one-element list
        ("proxy_mode.provider_modes.github-copilot", "passthrough", "passthrough"),
        ("proxy_mode.provider_modes", '{ openai = "switch" }', {"openai": "switch"}),
    ],
)
def test_parse_values(key: str, raw: str, expected: object) -> None:
    assert config_ops._parse(key, raw, config_ops.key_type(key, None)) == expected


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("server.port", "abc", "invalid value 'abc' for 'server.port' (expected integer)"),
        ("server.port", "70000", "Expected `int` <= 65535"),
        ("server.port", "true", "Expected `int`, got `bool`"),
        ("server.route_mode", "bogus", "expected 'route' | 'passthrough' | 'switch'"),
        ("usage.enabled", "yes", "(expected boolean)"),
        ("proxy_mode.provider_modes.x", "nope", "Invalid enum value 'nope'"),
        ("proxy_mode.provider_modes", "nope", "inline table"),
        ("proxy.no_proxy", "[1, 2]", "Expected `str`, got `int`"),
    ],
)
def test_parse_value_errors(key: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        config_ops._parse(key, raw, config_ops.key_type(key, None))
    assert message in str(ei.value)


def test_effective_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    cfg = config.parse(
        '[[accounts]]\nid = "c"\nrefresh_token = "gho_x"\n'
        '[accounts.settings]\nuser_agent = "UA/9"\n'
        '[[accounts]]\nid = "z"\nprovider = "zhipuai"\napi_key = "k"\n',
        path,
    )
    get = config_ops.get_value
    assert get(cfg, path, "server.port") == 4141
    assert get(cfg, path, "usage.path") == str(tmp_path / "usage.db")
    assert get(cfg, path, "proxy_mode.ca_dir") == str(tmp_path / "ca")
    assert get(cfg, path, "proxy.url") is None
    assert get(cfg, path, "settings.user_agent", "c") == "UA/9"
    assert get(cfg, path, "settings.editor_version", "c") == identity.EDITOR_VERSION
    assert get(cfg, path, "base_url", "z") == "https://open.bigmodel.cn/api/paas/v4"
    assert get(cfg, path, "refresh_url", "c").endswith("/copilot_internal/v2/token")
    with pytest.raises(AccountError):
        get(cfg, path, "base_url", "missing")


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        ("bare", "server.host", "bare"),
        (8080, "server.port", "8080"),
        (True, "usage.enabled", "true"),
        (["a", "b"], "proxy.no_proxy", '["a", "b"]'),
        ("gho_abcdefghijklmnopqrstu", "refresh_token", "gho_ab…(redacted)"),
        ("http://u:pw@h:1", "proxy.url", "http://u:***@h:1"),
        ({"port": 1, "host": "h"}, "server", 'port = 1\nhost = "h"'),
        ({}, "model_aliases", "{}"),
    ],
)
def test_render(value: object, key: str, expected: str) -> None:
    assert config_ops.render(value, key) == expected


# ------------------------------------------------------------------ writes in-process


def test_set_keeps_comments_and_modes(tmp_path: Path) -> None:
    path = tmp_path / "state" / "config.toml"
    path.parent.mkdir(mode=0o755)
    path.write_text("# top comment\n[server]\nport = 1  # inline\n\n# trailing\n")
    path.chmod(0o644)
    f = ConfigFile(path)
    config_ops.set_value(f, "server.host", "0.0.0.0")
    config_ops.set_value(f, "proxy_mode.intercept_hosts", "a.example", add=True)
    config_ops.set_value(f, "proxy_mode.intercept_hosts", '["b.example", "c.example"]', add=True)
    text = path.read_text()
    assert "# top comment" in text and "port = 1  # inline" in text and "# trailing" in text
    cfg = f.load()
    assert cfg.server.host == "0.0.0.0"
    assert cfg.proxy_mode.intercept_hosts == ["a.example", "b.example", "c.example"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # tightened at the write
    assert config_ops.unset_value(f, "server.host") is True
    assert config_ops.unset_value(f, "server.host") is False
    assert f.load().server.host == "127.0.0.1"


def test_update_never_overwrites_a_hand_edit_made_meanwhile(tmp_path: Path) -> None:
    """An editor takes no lock: a write racing our read-modify-write must survive."""
    path = tmp_path / "config.toml"
    path.write_text("[server]\nport = 1\n")
    edits = 0

    def edit(doc: Any) -> None:
        nonlocal edits
        edits += 1
        if edits == 1:  # the user saves while our edit is being computed
            path.write_text("[server]\nport = 2  # by hand\n")
        doc["server"]["host"] = "0.0.0.0"

    cfg, _ = ConfigFile(path).update(edit)
    assert edits == 2 and "port = 2  # by hand" in path.read_text()
    assert cfg.server.port == 2 and cfg.server.host == "0.0.0.0"


def test_update_refuses_to_build_on_a_broken_hand_edit_made_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server]\nport = 1\n")

    def edit(doc: Any) -> None:
        path.write_text("[server\nbroken")
        doc["server"]["port"] = 3  # an edit that must be written

    with pytest.raises(ConfigError):
        ConfigFile(path).update(edit)
    assert path.read_text() == "[server\nbroken"  # the user's text, untouched


def test_an_edit_that_changes_nothing_never_rewrites_the_file(tmp_path: Path) -> None:
    """An editor's truncate-then-write caught half way must not be saved over its edit."""
    path = tmp_path / "config.toml"
    path.write_text("")  # what a reader sees between the editor's truncate and its write
    before = path.stat()

    def edit(doc: Any) -> None:
        # the account was "removed meanwhile": a token persist then changes nothing
        assert config.find_account_table(doc, "alice") is None
        path.write_text('[[accounts]]\nid = "alice"\nprovider = "zai"\napi_key = "k"\n')

    ConfigFile(path).update(edit)
    assert 'id = "alice"' in path.read_text()  # the editor's text, not our empty one
    assert path.stat().st_ino == before.st_ino  # never replaced


def test_set_account_fields(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[accounts]]\nid = "a"  # mine\nprovider = "zai"\napi_key = "sk-1"\n')
    f = ConfigFile(path)
    config_ops.set_value(f, "settings.editor_version", "vscode/9", account="a")
    config_ops.set_value(f, "enabled", "false", account="a")
    acc = f.load().accounts[0]
    assert acc.settings.editor_version == "vscode/9" and acc.enabled is False
    assert 'id = "a"  # mine' in path.read_text()
    before = path.read_bytes()
    with pytest.raises(AccountError):
        config_ops.set_value(f, "enabled", "true", account="b")
    with pytest.raises(UsageError):
        config_ops.unset_value(f, "id", account="a")
    with pytest.raises(UsageError, match="--add appends to lists"):
        config_ops.set_value(f, "server.port", "1", add=True)
    with pytest.raises(UsageError, match="is a table"):
        config_ops.set_value(f, "server", "1")
    assert path.read_bytes() == before


def test_effective_list_is_valid_toml_and_redacted(tmp_path: Path) -> None:
    import tomllib

    path = tmp_path / "config.toml"
    cfg = config.parse(
        '[proxy]\nurl = "http://u:pw@h:1"\n[[accounts]]\nid = "c"\n'
        'refresh_token = "gho_abcdefghijklmnopqrstuvwxyz"\naccess_token = "tid=abcdefghijklmnopq;exp=1"\n',
        path,
    )
    out = config_ops.render_list(cfg, path)
    assert "gho_abcdefghijklmnop" not in out and "pw@" not in out and "tid=abcdefghij" not in out
    data = tomllib.loads(out)
    assert data["server"]["port"] == 4141
    assert data["accounts"][0]["settings"]["editor_version"] == identity.EDITOR_VERSION
    assert data["proxy"]["url"] == "http://u:***@h:1"


def test_edit_with_script_editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# keep\n[server]\nport = 1\n")
    editor = tmp_path / "ed.py"
    editor.write_text(
        "import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('port = 1', 'port = 2'))\n"
    )
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    assert config_ops.edit_file(ConfigFile(path)) == "saved"
    assert path.read_text() == "# keep\n[server]\nport = 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if ".edit-" in p.name] == []
    monkeypatch.setenv("VISUAL", "true")  # saves nothing
    assert config_ops.edit_file(ConfigFile(path)) == "unchanged"


def test_edit_refuses_a_file_changed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server]\nport = 1\n")
    editor = tmp_path / "ed.py"
    editor.write_text(
        "import sys, pathlib\n"
        f"pathlib.Path({str(path)!r}).write_text('[server]\\nport = 3\\n')\n"
        "p = pathlib.Path(sys.argv[1])\np.write_text('[server]\\nport = 2\\n')\n"
    )
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    monkeypatch.delenv("EDITOR", raising=False)
    with pytest.raises(ConfigError, match="changed on disk while you were editing"):
        config_ops.edit_file(ConfigFile(path))
    assert path.read_text() == "[server]\nport = 3\n"
    assert [p for p in tmp_path.iterdir() if ".edit-" in p.name] == []  # nothing piles up
    # asked to go again, the user saves the same edit: now it replaces the file
    path.write_text("[server]\nport = 1\n")
    problems: list[str] = []

    def again(problem: str) -> bool:
        problems.append(problem)
        editor.write_text("import sys\n")  # the editor leaves the copy as it is
        return True

    assert config_ops.edit_file(ConfigFile(path), again) == "saved"
    assert len(problems) == 1 and "changed on disk" in problems[0]
    assert path.read_text() == "[server]\nport = 2\n"
    assert [p for p in tmp_path.iterdir() if ".edit-" in p.name] == []

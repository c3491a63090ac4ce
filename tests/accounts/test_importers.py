"""Token discovery and verification in-process (the CLI tests cover the same paths end to end)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio

from tests.fakes import FakeUpstream
from tokn_router.accounts import importers, token_sources
from tokn_router.accounts.token_sources import NoTokenError, TokenSourceError
from tokn_router.errors import AuthError, UpstreamError, UsageError

HOSTS = ["github.com"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ gh


def test_gh_dirs_order(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "GH_CONFIG_DIR": "/a", "XDG_CONFIG_HOME": "/x"}
    assert token_sources.gh_config_dirs(env) == [Path("/a"), Path("/x/gh"), tmp_path / ".config/gh"]
    assert token_sources.gh_config_dirs({"HOME": str(tmp_path)}) == [tmp_path / ".config/gh"]


def test_gh_env_order(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "", "GITHUB_TOKEN": "gho_b", "GH_TOKEN": "gho_a"}
    assert token_sources.find_gh_token(HOSTS, env).token == "gho_a"
    del env["GH_TOKEN"]
    assert token_sources.find_gh_token(HOSTS, env).source == "$GITHUB_TOKEN"


def test_gh_hosts_prefers_active_user(tmp_path: Path) -> None:
    p = write(
        tmp_path / "hosts.yml",
        "github.com:\n  user: b\n  users:\n    a:\n      oauth_token: gho_a\n    b:\n      oauth_token: gho_b\n",
    )
    found = token_sources.read_gh_hosts(p, HOSTS)
    assert found is not None and (found.token, found.user) == ("gho_b", "b")


def test_gh_hosts_enterprise_host_first(tmp_path: Path) -> None:
    p = write(
        tmp_path / "hosts.yml",
        "github.com:\n  oauth_token: gho_dotcom\nghe.corp:\n  oauth_token: gho_ghe\n",
    )
    hosts = token_sources.github_hosts("https://ghe.corp")
    assert hosts == ["ghe.corp", "github.com"]
    assert token_sources.read_gh_hosts(p, hosts).token == "gho_ghe"  # type: ignore[union-attr]
    assert token_sources.github_hosts("http://127.0.0.1:1234") == ["github.com"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),  # empty file
        ("github.com:\n  user: a\n", None),  # keyring storage
        ("other.host:\n  oauth_token: gho_x\n", None),
    ],
)
def test_gh_hosts_without_token(tmp_path: Path, text: str, expected: None) -> None:
    assert token_sources.read_gh_hosts(write(tmp_path / "hosts.yml", text), HOSTS) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping of host names"),
        ("github.com: [x\n", "not valid YAML"),
        ("github.com: 3\n", "'github.com' is not a mapping"),
        ("github.com:\n  oauth_token: [1]\n", "'github.com.oauth_token' is not a string"),
        ("github.com:\n  users: 3\n", "'github.com.users' is not a mapping"),
        ("github.com:\n  users:\n    a: 3\n", "'github.com.users.a' is not a mapping"),
        ("github.com:\n  users:\n    a:\n      oauth_token: 3\n", "is not a string"),
        ('github.com:\n  oauth_token: "a b"\n', "unexpected shape"),
    ],
)
def test_gh_hosts_bad_shapes(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path / "hosts.yml", text)
    with pytest.raises(TokenSourceError) as ei:
        token_sources.read_gh_hosts(p, HOSTS)
    assert message in str(ei.value) and str(p) in str(ei.value)


def test_gh_auth_token_failure_and_garbage(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    gh = write(bindir / "gh", "#!/bin/sh\nexit 1\n")
    gh.chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": str(bindir)}
    with pytest.raises(NoTokenError, match="`gh auth token` gave none"):
        token_sources.find_gh_token(HOSTS, env)
    write(bindir / "gh", "#!/bin/sh\necho one\necho two\n")
    with pytest.raises(TokenSourceError, match="more than one line"):
        token_sources.find_gh_token(HOSTS, env)


# ------------------------------------------------------------------ copilot plugin


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        (
            "apps.json",
            {"github.com:Iv1.b507a08c87ecfe98": {"oauth_token": "ghu_a", "user": "u"}},
            "ghu_a",
        ),
        ("hosts.json", {"github.com": {"oauth_token": "ghu_h"}}, "ghu_h"),
        ("apps.json", {"ghe.other:Iv1.x": {"oauth_token": "ghu_x"}}, None),
        ("apps.json", {}, None),
    ],
)
def test_plugin_json(tmp_path: Path, name: str, data: Any, expected: str | None) -> None:
    found = token_sources.read_plugin_json(write(tmp_path / name, json.dumps(data)), HOSTS)
    assert (found.token if found else None) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "expected a JSON object keyed by host"),
        ('{"github.com": 3}', "'github.com' is not an object"),
        ('{"github.com:Iv1": {"user": "a"}}', "has no string 'oauth_token'"),
        ('{"github.com": ', ":1: not valid JSON"),
    ],
)
def test_plugin_json_bad_shapes(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TokenSourceError) as ei:
        token_sources.read_plugin_json(write(tmp_path / "apps.json", text), HOSTS)
    assert message in str(ei.value)


def _db(path: Path, rows: list[tuple[str, Any]]) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE oauth_tokens (auth_authority TEXT, token_ciphertext BLOB)")
        db.executemany("INSERT INTO oauth_tokens VALUES (?, ?)", rows)
    db.close()
    return path


@pytest.mark.parametrize(
    ("value", "expected"),
    [("ghu_plain", "ghu_plain"), (b"ghu_bytes", "ghu_bytes"), (" ghu_padded\n", "ghu_padded")],
)
def test_auth_db_plaintext(tmp_path: Path, value: Any, expected: str) -> None:
    found = token_sources.read_auth_db(_db(tmp_path / "auth.db", [("github.com", value)]), HOSTS)
    assert found is not None and found.token == expected


@pytest.mark.parametrize("value", [b"\x8a\x01" * 30, "bm90IGEgdG9rZW4gYnV0IGJhc2U2NA==", 12345])
def test_auth_db_encrypted(tmp_path: Path, value: Any) -> None:
    p = _db(tmp_path / "auth.db", [("github.com", value)])
    with pytest.raises(TokenSourceError, match="is encrypted"):
        token_sources.read_auth_db(p, HOSTS)


def test_auth_db_other_authority_and_bad_files(tmp_path: Path) -> None:
    assert token_sources.read_auth_db(_db(tmp_path / "a.db", [("ghe.x", "ghu_x")]), HOSTS) is None
    assert token_sources.read_auth_db(tmp_path / "missing.db", HOSTS) is None
    with sqlite3.connect(tmp_path / "b.db") as db:
        db.execute("CREATE TABLE oauth_tokens (x TEXT)")
    db.close()
    with pytest.raises(TokenSourceError, match="no such column"):
        token_sources.read_auth_db(tmp_path / "b.db", HOSTS)
    write(tmp_path / "c.db", "garbage " * 200)
    with pytest.raises(TokenSourceError, match="not a readable SQLite database"):
        token_sources.read_auth_db(tmp_path / "c.db", HOSTS)


def test_plugin_order(tmp_path: Path) -> None:
    d = tmp_path / ".config" / "github-copilot"
    d.mkdir(parents=True)
    _db(d / "auth.db", [("github.com", "ghu_db")])
    env = {"HOME": str(tmp_path)}
    assert token_sources.find_copilot_plugin_token(HOSTS, env).token == "ghu_db"
    write(d / "hosts.json", json.dumps({"github.com": {"oauth_token": "ghu_hosts"}}))
    assert token_sources.find_copilot_plugin_token(HOSTS, env).token == "ghu_hosts"
    write(
        d / "apps.json",
        json.dumps({"github.com:Iv1.b507a08c87ecfe98": {"oauth_token": "ghu_apps"}}),
    )
    assert token_sources.find_copilot_plugin_token(HOSTS, env).token == "ghu_apps"


# --------------------------------------------------------------------------- env


@pytest.mark.parametrize(
    ("provider", "var", "env", "result"),
    [
        ("github-copilot", None, {"GH_COPILOT_TOKEN": "ghu_1", "GITHUB_TOKEN": "gho_2"}, "ghu_1"),
        ("github-copilot", None, {"GITHUB_TOKEN": "gho_2"}, "gho_2"),
        ("zai", None, {"ZAI_API_KEY": "k1"}, "k1"),
        ("zhipuai-coding-plan", None, {"ZHIPUAI_API_KEY": "k2"}, "k2"),
        ("zai", "MINE", {"MINE": "k3", "ZAI_API_KEY": "k1"}, "k3"),
        ("zai", "MINE", {"ZAI_API_KEY": "k1"}, "$MINE is not set"),
        ("github-copilot", None, {}, "neither $GH_COPILOT_TOKEN or $GITHUB_TOKEN is set"),
        ("zai", None, {"ZAI_API_KEY": "two words"}, "unexpected shape"),
    ],
)
def test_env(provider: str, var: str | None, env: dict[str, str], result: str) -> None:
    try:
        assert token_sources.find_env_token(provider, var, env).token == result
    except (NoTokenError, TokenSourceError) as e:
        assert result in str(e)


def test_find_token_usage_errors() -> None:
    with pytest.raises(UsageError, match="--from env"):
        token_sources.find_token("copilot-plugin", "zai", github_url="https://github.com", env={})
    with pytest.raises(UsageError, match="--env-var only applies"):
        token_sources.find_token(
            "gh", "github-copilot", github_url="https://github.com", env_var="X", env={}
        )


# ------------------------------------------------------------------ verification


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "cannot be exchanged for a Copilot token (404)"),
        (401, "GitHub rejected the token (401)"),
        (403, "403, no_copilot_access"),
        (500, "Copilot token exchange failed: HTTP 500"),
    ],
)
def test_verify_copilot_failures(fake: FakeUpstream, status: int, message: str) -> None:
    token = "gho_failing0123456789"
    fake.github_account(token).exchange_failure = status

    async def go() -> None:
        async with httpx2.AsyncClient() as client:
            await importers.verify_copilot(
                client, token, f"{fake.url}/copilot_internal/v2/token", "src"
            )

    with pytest.raises(UpstreamError) as ei:
        trio.run(go)
    assert str(ei.value).startswith("src: ") and message in str(ei.value)
    assert token not in str(ei.value)


def test_verify_zai(fake: FakeUpstream) -> None:
    async def go(key: str) -> int:
        async with httpx2.AsyncClient() as client:
            return await importers.verify_zai(client, key, fake.zai_url)

    assert trio.run(go, "zai-good-1") == len(fake.zai_models)
    with pytest.raises(AuthError, match="rejected"):
        trio.run(go, "bad-key-1")

"""The editor identity: packaged set, [identity] over it, accounts over that, device ids,
and the hints an out-of-date identity gets (no servers)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from tokn_router.accounts import identity
from tokn_router.accounts.providers import PROVIDERS, RequestInfo
from tokn_router.accounts.providers.copilot import (
    DEVICE_HEADERS,
    build_headers,
    identity_sources,
)
from tokn_router.accounts.providers.github import exchange_error
from tokn_router.accounts.schema import Account, AccountSettings, Config, IdentityConfig
from tokn_router.errors import ConfigError
from tokn_router.wire.errors import identity_hint, upstream_error_text, wrap_upstream_error

DATA = Path(identity.__file__).resolve().parents[1] / "data" / "identity.toml"
INSTALL = identity.InstallId("0123456789abcdef0123456789abcdef", 1_780_000_000_123)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_packaged_set_is_one_consistent_release() -> None:
    raw = tomllib.loads(DATA.read_text())
    assert set(raw) == set(identity.FIELDS)  # every key used, none missing
    p = identity.packaged()
    vscode = p.editor_version.removeprefix("vscode/")
    chat = p.editor_plugin_version.removeprefix("copilot-chat/")
    assert p.user_agent == f"GitHubCopilotChat/{chat}"  # plugin and user agent agree
    assert f"VS Code {vscode} / Copilot Chat {chat} / API {p.github_api_version}" in (
        DATA.read_text()
    )  # the file's header names the set it holds
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", p.github_api_version)
    assert p.editor_version == identity.EDITOR_VERSION


def test_identity_section_overrides_the_set_and_accounts_win() -> None:
    section = IdentityConfig(github_api_version="2027-01-01", user_agent="GitHubCopilotChat/9.9")
    ident = identity.resolve(section, INSTALL)
    assert ident.values.github_api_version == "2027-01-01"
    assert ident.values.editor_version == identity.EDITOR_VERSION
    settings = AccountSettings(user_agent="Mine/1")
    src = identity_sources(settings, ident)
    assert src["X-GitHub-Api-Version"] == "[identity]"
    assert src["User-Agent"] == "account"
    assert src["Editor-Version"] == "default"
    h = build_headers(settings, "t", RequestInfo(request_id="r"), ident=ident)
    assert h["X-GitHub-Api-Version"] == "2027-01-01" and h["User-Agent"] == "Mine/1"


def test_identity_section_in_the_config_file_is_validated() -> None:
    cfg = msgspec.convert({"identity": {"editor_version": "vscode/2.0.0"}}, Config)
    assert cfg.identity.editor_version == "vscode/2.0.0" and cfg.identity.device_ids is True
    for bad in ({"editor_version": ""}, {"user_agent": "a\nb"}, {"nope": "x"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"identity": bad}, Config)


def test_device_ids_are_stable_per_account_and_install_and_shaped_like_vscode() -> None:
    a = identity.device_ids(INSTALL, "alice")
    assert a == identity.device_ids(INSTALL, "alice")
    assert re.fullmatch(r"[0-9a-f]{64}", a.machine_id)
    assert UUID.match(a.device_id)
    assert UUID.match(a.session_id[:36]) and a.session_id[36:] == "1780000000123"
    b = identity.device_ids(INSTALL, "bob")
    assert {a.machine_id, a.device_id, a.session_id[:36]}.isdisjoint(
        {b.machine_id, b.device_id, b.session_id[:36]}
    )
    other = identity.device_ids(identity.InstallId("f" * 32, 1), "alice")
    assert other.machine_id != a.machine_id  # two installs never share them


def test_headers_carry_device_ids_never_derived_from_the_token() -> None:
    ident = identity.resolve(None, INSTALL)
    info = RequestInfo(request_id="0" * 32)
    one = build_headers(AccountSettings(), "tok-1", info, account_id="alice", ident=ident)
    two = build_headers(AccountSettings(), "tok-2", info, account_id="alice", ident=ident)
    ids = identity.device_ids(INSTALL, "alice")
    assert [one[h] for h in DEVICE_HEADERS] == [ids.session_id, ids.machine_id, ids.device_id]
    assert [one[h] for h in DEVICE_HEADERS] == [two[h] for h in DEVICE_HEADERS]
    assert one["X-Request-Id"] == "00000000-0000-0000-0000-000000000000"  # UUID form
    assert UUID.match(one["X-Interaction-Id"])
    assert one["X-Interaction-Type"] == one["OpenAI-Intent"]
    assert one["X-VSCode-User-Agent-Library-Version"] == identity.USER_AGENT_LIBRARY
    off = identity.resolve(IdentityConfig(device_ids=False), INSTALL)
    none = build_headers(AccountSettings(), "t", info, account_id="alice", ident=off)
    assert not set(DEVICE_HEADERS) & set(none)


def test_caller_named_interaction_wins() -> None:
    extra = {"X-Interaction-Type": "conversation-agent", "X-Interaction-Id": "turn-7"}
    h = build_headers(AccountSettings(), "t", RequestInfo(request_id="r", extra=extra))
    assert h["X-Interaction-Type"] == "conversation-agent" and h["X-Interaction-Id"] == "turn-7"
    # a different request, a different interaction id
    a = build_headers(AccountSettings(), "t", RequestInfo(request_id="r1"))
    b = build_headers(AccountSettings(), "t", RequestInfo(request_id="r2"))
    assert a["X-Interaction-Id"] != b["X-Interaction-Id"]


def test_configure_changes_what_requests_and_the_token_exchange_send() -> None:
    before = identity.current()
    try:
        identity.configure(
            identity.resolve(
                IdentityConfig(token_api_version="2027-02-02", editor_version="vscode/5.0.0"),
                INSTALL,
            )
        )
        h = PROVIDERS["github-copilot"].headers(Account(id="x"), "t", RequestInfo("r"))
        assert h["Editor-Version"] == "vscode/5.0.0"
        ex = PROVIDERS["github-copilot"].refresh_request(
            Account(id="x", refresh_token="gho_x"), Config().github
        )
        assert ex.headers["X-GitHub-Api-Version"] == "2027-02-02"
        assert ex.headers["Editor-Version"] == "vscode/5.0.0"
    finally:
        identity.configure(before)


def test_install_id_is_created_once_and_reused(tmp_path: Path) -> None:
    first = identity.load_install_id(tmp_path)
    assert identity.load_install_id(tmp_path) == first
    data = json.loads((tmp_path / identity.INSTALL_ID_FILE).read_text())
    assert data == {"id": first.id, "created_ms": first.created_ms}
    (tmp_path / identity.INSTALL_ID_FILE).write_text("{not json")
    with pytest.raises(ConfigError) as e:
        identity.load_install_id(tmp_path)
    assert "\n" not in str(e.value) and "delete the file" in str(e.value)


GONE = b'{"error":{"message":"the specified API version is no longer supported"}}'
HTML = b"<html><head><title>Unsupported client</title></head><body>no</body></html>"


def test_466_and_html_pages_say_what_to_bump() -> None:
    hint = identity_hint(466, GONE, "application/json")
    assert hint and "config set identity.github_api_version" in hint
    assert "identity.editor_version" in hint and "[accounts.settings]" in hint
    # a 466 JSON body is wrapped so that the hint reaches the client
    body = json.loads(wrap_upstream_error(466, GONE, "application/json"))
    assert "no longer supported" in body["error"]["message"]
    assert "identity.github_api_version" in body["error"]["message"]
    assert "(hint: " in upstream_error_text(466, GONE, "application/json")
    html = identity_hint(403, HTML, "text/html")
    assert html and "HTML page" in html and "identity.github_api_version" in html
    assert identity_hint(403, b'{"message":"nope"}', "application/json") is None
    assert identity_hint(404, HTML, "text/html") is None
    # the token exchange has its own version key
    err = exchange_error(466, GONE)
    assert "config set identity.token_api_version" in str(err)

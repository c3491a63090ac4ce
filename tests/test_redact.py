"""Secret redaction: tokens keep a short prefix, URLs lose their password."""

from __future__ import annotations

import pytest

from tokn_router import redact

GHO = "gho_abcdefghijklmnopqrstuvwxyz0123456789"
GHU = "ghu_ZYXWVUTSRQPONMLKJIHG0123456789abcd"
PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"
TID = "tid=0123456789abcdef;exp=1730000000;sku=free;proxy-ep=proxy.individual.githubcopilot.com:deadbeef"
SK = "sk-live-0123456789abcdefghij"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (GHO, "gho_ab…(redacted)"),
        (GHU, "ghu_ZY…(redacted)"),
        (PAT, "github_pat_11…(redacted)"),
        (TID, "tid=01…(redacted)"),
        (SK, "sk-li…(redacted)"),
        ("0123456789abcdef0123456789abcdef", "0123…(redacted)"),  # no known prefix
        ("short", "(redacted)"),
        ("gho_abc", "(redacted)"),  # too short to keep a prefix
        ("", "(none)"),
        (None, "(none)"),
    ],
)
def test_secret(value: str | None, expected: str) -> None:
    assert redact.secret(value) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:pass@proxy.example.com:8080", "http://user:***@proxy.example.com:8080"),
        ("socks5h://u:p%40ss@10.0.0.1:1080/", "socks5h://u:***@10.0.0.1:1080/"),
        ("http://proxy.example.com:8080", "http://proxy.example.com:8080"),
        ("http://onlyuser@proxy:3128", "http://onlyuser@proxy:3128"),
        ("https://u:pw@[::1]:8443/x?y=1", "https://u:***@[::1]:8443/x?y=1"),
        ("not a url", "not a url"),
    ],
)
def test_url(url: str, expected: str) -> None:
    assert redact.url(url) == expected


def test_text_scrubs_every_secret_shape() -> None:
    msg = (
        f"token {GHO} failed; copilot {TID} and key {SK}; "
        f"proxy http://bob:hunter2@proxy:8080 said no; Authorization: Bearer abc123def456ghi789"
    )
    out = redact.text(msg)
    for secret in (GHO, TID, SK, "hunter2", "abc123def456ghi789"):
        assert secret not in out
    assert "gho_ab…(redacted)" in out
    assert "http://bob:***@proxy:8080" in out


def test_text_leaves_prose_alone() -> None:
    msg = "GitHub rejected the token (401): it was revoked; token authorization failed"
    assert redact.text(msg) == msg


def test_text_with_explicit_secrets() -> None:
    assert (
        redact.text("key=opaque-secret-value!", ["opaque-secret-value"]) == "key=opaq…(redacted)!"
    )


def test_headers() -> None:
    h = redact.headers(
        {
            "Authorization": f"Bearer {TID}",
            "Proxy-Authorization": "Basic dXNlcjpwYXNzd29yZA==",
            "x-api-key": SK,
            "Editor-Version": "vscode/1.104.3",
        }
    )
    assert h == {
        "Authorization": "Bearer tid=01…(redacted)",
        "Proxy-Authorization": "Basic dXNl…(redacted)",
        "x-api-key": "sk-li…(redacted)",
        "Editor-Version": "vscode/1.104.3",
    }


def test_data_deep() -> None:
    data = {
        "proxy": {"url": "http://u:pw@p:1", "no_proxy": ["x"]},
        "accounts": [
            {
                "id": "a",
                "refresh_token": GHO,
                "access_token": TID,
                "settings": {"user_agent": "UA"},
            },
            {"id": "b", "api_key": SK, "base_url": "https://open.bigmodel.cn/api/paas/v4"},
        ],
    }
    out = redact.data(data)
    assert out["proxy"] == {"url": "http://u:***@p:1", "no_proxy": ["x"]}
    assert out["accounts"][0] == {
        "id": "a",
        "refresh_token": "gho_ab…(redacted)",
        "access_token": "tid=01…(redacted)",
        "settings": {"user_agent": "UA"},
    }
    assert out["accounts"][1]["api_key"] == "sk-li…(redacted)"
    assert out["accounts"][1]["base_url"] == "https://open.bigmodel.cn/api/paas/v4"
    assert data["accounts"][0]["refresh_token"] == GHO  # input untouched

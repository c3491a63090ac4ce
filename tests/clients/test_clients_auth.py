"""Where client keys travel in a request, and whether a listener requires them (pure)."""

from __future__ import annotations

import base64

import pytest

from tokn_router.clients.extract import Presented, api_key, proxy_key
from tokn_router.clients.policy import (
    INVALID_MESSAGE,
    MISSING_MESSAGE,
    MISSING_PROXY_MESSAGE,
    Accepted,
    AuthMode,
    Rejected,
    auth_mode,
    decide,
    is_loopback_bind,
)

KEY = "tkr_" + "A" * 43
OTHER = "tkr_" + "B" * 43


def basic(userinfo: str) -> str:
    return "Basic " + base64.b64encode(userinfo.encode()).decode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Authorization": f"Bearer {KEY}"}, Presented(KEY, "authorization")),
        ({"authorization": f"bearer   {KEY}  "}, Presented(KEY, "authorization")),
        ({"x-api-key": KEY}, Presented(KEY, "x-api-key")),
        ({"X-Api-Key": f" {KEY} "}, Presented(KEY, "x-api-key")),
        # a placeholder in one header, the key in the other: the key wins
        ({"Authorization": "Bearer sk-dummy", "x-api-key": KEY}, Presented(KEY, "x-api-key")),
        ({"Authorization": f"Bearer {KEY}", "x-api-key": "dummy"}, Presented(KEY, "authorization")),
        ({"Authorization": f"Bearer {KEY}", "x-api-key": OTHER}, Presented(KEY, "authorization")),
        # not keys of ours, still presented (a required listener refuses them)
        ({"Authorization": "Bearer sk-dummy"}, Presented("sk-dummy", "authorization")),
        ({"Authorization": f"Basic {KEY}"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": "Bearer a b"}, None),
        ({"x-api-key": ""}, None),
        ({"x-api-key": "tkr_\u00e9"}, None),
        ({"x-api-key": "x" * 600}, None),
        # the API listener does not read the proxy's header
        ({"Proxy-Authorization": f"Bearer {KEY}"}, None),
    ],
)
def test_api_key(headers: dict[str, str], expected: Presented | None) -> None:
    assert api_key(headers) == expected
    assert api_key(list(headers.items())) == expected  # (name, value) pairs work too


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Proxy-Authorization": f"Bearer {KEY}"}, Presented(KEY, "proxy-authorization")),
        # HTTPS_PROXY=http://route:KEY@host:4142 -> the password
        ({"proxy-authorization": basic(f"route:{KEY}")}, Presented(KEY, "proxy-userinfo")),
        ({"proxy-authorization": basic(f":{KEY}")}, Presented(KEY, "proxy-userinfo")),
        # HTTPS_PROXY=http://KEY@host:4142 -> a user name with our prefix
        ({"proxy-authorization": basic(KEY)}, Presented(KEY, "proxy-userinfo")),
        ({"proxy-authorization": basic(f"{KEY}:")}, Presented(KEY, "proxy-userinfo")),
        # a route mode alone is no key
        ({"proxy-authorization": basic("passthrough")}, None),
        ({"proxy-authorization": basic("passthrough:")}, None),
        ({"proxy-authorization": "Basic !!!notbase64"}, None),
        ({"proxy-authorization": "Digest username=x"}, None),
        # on the proxy, Authorization belongs to the client's real upstream
        ({"Authorization": f"Bearer {KEY}", "x-api-key": KEY}, None),
    ],
)
def test_proxy_key(headers: dict[str, str], expected: Presented | None) -> None:
    assert proxy_key(headers) == expected


def test_presented_repr_hides_the_key() -> None:
    assert KEY not in repr(Presented(KEY, "authorization"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("server.lan", False),
    ],
)
def test_is_loopback_bind(host: str, loopback: bool) -> None:
    assert is_loopback_bind(host) is loopback


@pytest.mark.parametrize(
    ("host", "setting", "mode"),
    [
        ("0.0.0.0", None, AuthMode.REQUIRED),  # a LAN bind requires keys by default
        ("192.168.1.10", "keys", AuthMode.REQUIRED),
        ("0.0.0.0", "none", AuthMode.OFF),  # ... unless the config opens it explicitly
        ("127.0.0.1", None, AuthMode.OPTIONAL),
        ("127.0.0.1", "keys", AuthMode.REQUIRED),
        ("::1", "none", AuthMode.OFF),
    ],
)
def test_auth_mode(host: str, setting: str | None, mode: AuthMode) -> None:
    assert auth_mode(host, setting) is mode


def test_auth_mode_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="unknown auth setting"):
        auth_mode("127.0.0.1", "open")


GOOD = Presented(KEY, "authorization")
BAD = Presented(OTHER, "x-api-key")
DUMMY = Presented("sk-dummy", "authorization")


@pytest.mark.parametrize(
    ("mode", "presented", "verified", "proxy", "expected"),
    [
        (AuthMode.OFF, None, None, False, Accepted(None)),
        (AuthMode.OFF, BAD, None, False, Accepted(None)),
        (AuthMode.REQUIRED, GOOD, "alice", False, Accepted("alice")),
        (AuthMode.REQUIRED, None, None, False, Rejected(MISSING_MESSAGE)),
        (AuthMode.REQUIRED, BAD, None, False, Rejected(INVALID_MESSAGE)),
        (AuthMode.REQUIRED, DUMMY, None, False, Rejected(INVALID_MESSAGE)),
        (AuthMode.REQUIRED, None, None, True, Rejected(MISSING_PROXY_MESSAGE, status=407)),
        (AuthMode.REQUIRED, BAD, None, True, Rejected(INVALID_MESSAGE, status=407)),
        (AuthMode.OPTIONAL, None, None, False, Accepted(None)),
        (AuthMode.OPTIONAL, DUMMY, None, False, Accepted(None)),  # SDK placeholders pass
        (AuthMode.OPTIONAL, GOOD, "alice", False, Accepted("alice")),  # attributed
        (AuthMode.OPTIONAL, BAD, None, False, Rejected(INVALID_MESSAGE)),  # revoked is noticed
    ],
)
def test_decide(
    mode: AuthMode,
    presented: Presented | None,
    verified: str | None,
    proxy: bool,
    expected: Accepted | Rejected,
) -> None:
    assert decide(mode, presented, verified, proxy=proxy) == expected


def test_rejections_give_no_hint_of_existing_keys() -> None:
    for text in (MISSING_MESSAGE, MISSING_PROXY_MESSAGE, INVALID_MESSAGE):
        assert "\n" not in text and KEY not in text
    assert Rejected(INVALID_MESSAGE, status=407).proxy_authenticate == 'Basic realm="tokn-router"'

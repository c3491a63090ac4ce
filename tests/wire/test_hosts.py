"""wire/hosts.py: the one host and authority parser, table-driven."""

from __future__ import annotations

import pytest

from tokn_router.wire.hosts import (
    HostError,
    format_authority,
    is_loopback,
    is_loopback_authority,
    normalize_host,
    parse_authority,
)

# text, default_port, expected (host, port)
PARSED = [
    ("example.com", None, ("example.com", None)),
    ("example.com", 443, ("example.com", 443)),
    ("Example.COM.", 80, ("example.com", 80)),
    ("EXAMPLE.com:8080", None, ("example.com", 8080)),
    ("api_internal.corp:1", None, ("api_internal.corp", 1)),
    ("_dmarc.example", None, ("_dmarc.example", None)),
    ("192.168.0.1:4141", None, ("192.168.0.1", 4141)),
    ("localhost:65535", None, ("localhost", 65535)),
    ("[::1]:8443", None, ("::1", 8443)),
    ("[::1]", 443, ("::1", 443)),
    ("[2001:DB8:0:0::1]", None, ("2001:db8::1", None)),
    ("[::FFFF:127.0.0.1]", 80, ("::ffff:7f00:1", 80)),
    ("a" * 63 + ".example", None, ("a" * 63 + ".example", None)),
    (".".join(["a" * 62] * 4) + ".b", None, (".".join(["a" * 62] * 4) + ".b", None)),  # 253
]

REJECTED = [
    "",
    " example.com",
    "example.com:",
    "example.com:0",
    "example.com:65536",
    "example.com:99999",
    "example.com:https",
    "example.com:+80",
    "example.com:1:2",
    "::1:443",  # IPv6 without brackets: the port cannot be told apart
    "::1",
    "[::1",
    "[::1]443",
    "[::1]x",
    "[1.2.3.4]:443",
    "[zz::1]:80",
    "[fe80::1%25eth0]:443",  # a zone id means nothing to another host
    "user@host:443",
    "host/path",
    "a b",
    "evil'$(id)",
    "-leading.example",
    "trailing-.example",
    "bad_.exa$mple:443",
    "x..example",
    ":443",
    ".",
    "a" * 64 + ".example",
    ".".join(["a" * 62] * 4) + ".bc",  # 254
    "h\u00e9llo.example",  # authorities are ASCII; IDNs arrive as A-labels
]


@pytest.mark.parametrize(("text", "default", "expected"), PARSED)
def test_parse_authority(text: str, default: int | None, expected: tuple[str, int | None]) -> None:
    assert parse_authority(text, default) == expected


@pytest.mark.parametrize("text", REJECTED)
def test_parse_authority_rejects(text: str) -> None:
    with pytest.raises(HostError):
        parse_authority(text, 443)


def test_host_error_is_a_value_error() -> None:
    # callers that only know "bad input" catch ValueError
    assert issubclass(HostError, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("my_host.local.", "my_host.local."), ("EXAMPLE.com.:80", "example.com."), ("[::1]", "::1")],
)
def test_non_canonical_keeps_the_trailing_dot(text: str, expected: str) -> None:
    assert parse_authority(text, canonical=False)[0] == expected


def test_long_labels_when_asked() -> None:
    long = "a" * 64 + ".example"
    assert parse_authority(f"{long}:443", dns_labels=False) == (long, 443)
    for bad in ("-a.example:443", "a..b:443", "a" * 254 + ":443"):
        with pytest.raises(HostError):
            parse_authority(bad, dns_labels=False)


@pytest.mark.parametrize(
    ("text", "expected"), [("::1", ("::1", 443)), ("2001:DB8::1", ("2001:db8::1", 443))]
)
def test_bare_ipv6_when_asked(text: str, expected: tuple[str, int]) -> None:
    assert parse_authority(text, 443, bare_ipv6=True) == expected
    with pytest.raises(HostError):
        parse_authority("::zz", 443, bare_ipv6=True)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Bücher.Example.", "xn--bcher-kva.example"),
        ("[::FFFF:1.2.3.4]", "::ffff:102:304"),
        ("::1", "::1"),
        ("api_internal.corp", "api_internal.corp"),
        ("  Example.com ", "example.com"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_normalize_host(host: str, expected: str) -> None:
    assert normalize_host(host) == expected


@pytest.mark.parametrize(
    "host", ["", "a b", "exa$mple.com", "-x.com", "a" * 64 + ".com", "x..com", "x:1", "[::1]:1"]
)
def test_normalize_host_rejects(host: str) -> None:
    with pytest.raises(HostError):
        normalize_host(host)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("example.com", 443, "example.com:443"),
        ("::1", 8443, "[::1]:8443"),
        ("::1", None, "[::1]"),
        ("10.0.0.1", None, "10.0.0.1"),
    ],
)
def test_format_authority(host: str, port: int | None, expected: str) -> None:
    assert format_authority(host, port) == expected
    assert parse_authority(expected, port) == (host, port)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("ip6-localhost", True),
        ("api.localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost.example.com", False),
        ("notlocalhost", False),
        ("10.0.0.1", False),
        ("::2", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost", True),
        ("localhost.:4141", True),
        ("LOCALHOST:4141", True),
        (" 127.0.0.1:4141 ", True),
        ("[::1]:4141", True),
        ("evil.example.com", False),
        ("127.0.0.1.evil.example", False),
        ("[::1", False),
        ("", False),
        ("localhost:99999", False),
    ],
)
def test_is_loopback_authority(header: str, expected: bool) -> None:
    assert is_loopback_authority(header) is expected

"""Host names and authorities (``host[:port]``, ``[v6]:port``): parse, check, format.

The one place that reads a host out of a Host header, a CONNECT line, an
absolute URL or a config entry, so every front end agrees on what a host is:

* a name of dot-separated labels of letters, digits, ``_`` and ``-`` (not at
  either end), at most 63 characters each and 253 in all; ``_`` is allowed
  because real internal names use it (``api_internal.corp``);
* an IPv4 address, or an IPv6 address in brackets (``[::1]:443``); without
  brackets an IPv6 address cannot be told apart from a port (``::1:443``).

Canonical form: lower case, IPv6 compressed and without brackets, no trailing dot,
internationalised names as IDNA A-labels. Pure functions; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "LOOPBACK_NAMES",
    "HostError",
    "format_authority",
    "is_loopback",
    "is_loopback_authority",
    "normalize_host",
    "parse_authority",
]

# Names that always resolve to the local machine (RFC 6761 reserves *.localhost).
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})

_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_LONG_LABEL_RE = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
_IPV6_CHARS_RE = re.compile(r"^[0-9a-fA-F:.]+$")  # no zone id: it means nothing off this host


class HostError(ValueError):
    """Not a host name or IP address (with an optional port) of the accepted shape."""


def _ipv6(text: str, original: str) -> str:
    if not _IPV6_CHARS_RE.match(text):
        raise HostError(f"invalid IPv6 literal in {original!r}")
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        raise HostError(f"invalid IPv6 literal in {original!r}") from None


def _name(text: str, original: str, *, canonical: bool, dns_labels: bool = True) -> str:
    name = text.lower()
    bare = name[:-1] if name.endswith(".") else name
    label_re = _LABEL_RE if dns_labels else _LONG_LABEL_RE
    if not bare or len(bare) > 253 or not all(label_re.match(lab) for lab in bare.split(".")):
        raise HostError(f"invalid host name {original!r}")
    with_ip = _ip_or_none(bare)
    if with_ip is not None:
        return with_ip
    return bare if canonical else name


def _ip_or_none(text: str) -> str | None:
    if ":" in text:
        return None
    try:
        return ipaddress.IPv4Address(text).compressed
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """A bare host (no port) in canonical form; names may be internationalised.

    Accepts ``[v6]`` and a bare IPv6 address too (there is no port to confuse it
    with). Raises :class:`HostError`.
    """
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        return _ipv6(h[1:-1], host)
    if ":" in h:
        return _ipv6(h, host)
    if not h.isascii():
        try:
            h = h.rstrip(".").encode("idna").decode("ascii")
        except UnicodeError:
            raise HostError(f"invalid host name {host!r}") from None
    return _name(h, host, canonical=True)


def parse_authority(
    text: str,
    default_port: int | None = None,
    *,
    canonical: bool = True,
    bare_ipv6: bool = False,
    dns_labels: bool = True,
) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` → ``(host, port)``.

    The port is 1–65535, or ``default_port`` when absent (which may be None).
    ``canonical=False`` keeps a name's trailing dot, for echoing the host back as
    the client wrote it. ``bare_ipv6=True`` reads a whole unbracketed IPv6 address
    as a host without a port (config entries; never in a protocol, where
    ``::1:443`` would be ambiguous). ``dns_labels=False`` lifts the 63-character
    label limit, which is DNS's rather than URI syntax: the proxy passes such a
    name on and lets its resolution (or its certificate) fail there. Authorities
    are ASCII: an internationalised name arrives as A-labels. Raises :class:`HostError`.
    """
    if not text or not text.isascii():
        raise HostError(f"invalid authority {text!r}")
    port_s: str | None
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep:
            raise HostError(f"unterminated IPv6 literal in {text!r}")
        host = _ipv6(inner, text)
        if rest and not rest.startswith(":"):
            raise HostError(f"invalid authority {text!r}")
        port_s = rest[1:] if rest else None
    elif text.count(":") > 1:
        if not bare_ipv6:
            raise HostError(f"IPv6 literal without brackets in {text!r}")
        host, port_s = _ipv6(text, text), None
    else:
        name, sep, port_part = text.partition(":")
        host = _name(name, text, canonical=canonical, dns_labels=dns_labels)
        port_s = port_part if sep else None
    if port_s is None:
        return host, default_port
    if not _PORT_RE.match(port_s) or not 0 < int(port_s) < 65536:
        raise HostError(f"invalid port in {text!r}")
    return host, int(port_s)


def format_authority(host: str, port: int | None = None) -> str:
    """``host:port`` with an IPv6 address in brackets; just the host without a port."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def is_loopback(host: str) -> bool:
    """Whether a canonical host is this machine: a loopback name or address."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_authority(text: str) -> bool:
    """Whether a Host header names this machine; False for anything unparsable."""
    try:
        host, _ = parse_authority(text.strip())
    except HostError:
        return False
    return is_loopback(host)

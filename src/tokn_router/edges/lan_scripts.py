"""The LAN set-up scripts served by ``GET /-/lan/env`` (sh/bash/zsh, fish, pwsh).

Each script downloads the CA, checks its SHA-256 fingerprint (of the DER
certificate, as the server prints it), stores it with a bundle merged with the
system roots under ``~/.cache/tokn-router/lan/<server>/`` (a temp dir as
fallback) and exports ``OPENAI_BASE_URL``, the proxy variables and the CA
variables. The client key is never served: a script takes it from the user's own
``TOKN_ROUTER_KEY`` and exports it as ``OPENAI_API_KEY`` and ``ANTHROPIC_API_KEY``
and as the password of the proxy URL (``http://default:KEY@server:port``; the
user name ``default`` leaves the route mode to the server).

The scripts themselves are package data, ``lan_templates/env.sh`` (sh, bash and
zsh), ``env.fish`` and ``env.ps1``, so they read (and are reviewed) as shell. This
module only computes the values, quotes each for its shell and fills them in:

* ``@@name@@`` is replaced by the value ``name`` (``@@`` is no shell's syntax);
  every value is quoted for the script's shell except those of the two comment
  lines (``api_url``, ``env_url``, ``shell``), which must not contain a line break.
* a line starting with ``@@proxy@@`` is kept (without the marker) only when the
  server runs the proxy.

A template naming a value that is not given, a value no template line uses, or a
stray ``@@`` is a bug and raises :class:`ValueError`. The routes in
:mod:`tokn_router.edges.lan` only build a :class:`LanURLs` from a validated Host header.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from tokn_router.edges.proxy.shellenv import DEFAULT_NO_PROXY, SHELLS, quote
from tokn_router.wire import hosts

__all__ = ["PREFIX", "SYSTEM_BUNDLES", "LanURLs", "env_script"]

PREFIX = "/-/lan"

# Where the scripts look for the system roots to merge with the CA (first found wins).
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, OpenBSD, Alpine
    "/usr/local/etc/openssl/cert.pem",
    "/opt/homebrew/etc/openssl@3/cert.pem",
)
KEY_ENV = "TOKN_ROUTER_KEY"  # where the templates read the user's client key
_NO_KEY_NOTE = (
    f"tokn-router: note: {KEY_ENV} is not set, so no client key was exported; "
    "if this server requires keys, set it to yours and run this again"
)


@dataclass(frozen=True)
class LanURLs:
    """Everything the bootstrap endpoints publish, as seen through one Host header."""

    host: str
    api_url: str
    proxy_url: str | None
    ca_cert_url: str
    env_url: str
    ca_sha256: str

    @classmethod
    def build(cls, host: str, port: int | None, proxy_port: int | None, ca_sha256: str) -> LanURLs:
        """The URLs for a client that reached us as ``host[:port]`` (a validated Host)."""
        api = "http://" + hosts.format_authority(host, port)
        proxy = None if proxy_port is None else "http://" + hosts.format_authority(host, proxy_port)
        return cls(
            host=host,
            api_url=api,
            proxy_url=proxy,
            ca_cert_url=f"{api}{PREFIX}/ca.crt",
            env_url=f"{api}{PREFIX}/env",
            ca_sha256=ca_sha256,
        )

    def bootstrap(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "proxy_url": self.proxy_url,
            "ca_cert_url": self.ca_cert_url,
            "env_url": self.env_url,
            "ca_sha256": self.ca_sha256,
        }

    @property
    def cache_name(self) -> str:
        """A folder name for this server: ``192.168.1.5_4141``."""
        return re.sub(r"[^a-z0-9.-]", "_", self.api_url.removeprefix("http://").lower())

    def keyed_proxy(self) -> tuple[str, str] | None:
        """The proxy URL split around where the key goes: ``("http://default:", "@host:port")``."""
        if self.proxy_url is None:
            return None
        return "http://default:", "@" + self.proxy_url.removeprefix("http://")


# ----------------------------------------------------------------- templates

_TEMPLATES = {
    "sh": "env.sh",
    "bash": "env.sh",
    "zsh": "env.sh",
    "fish": "env.fish",
    "pwsh": "env.ps1",
}
_PLACEHOLDER = re.compile(r"@@([a-z][a-z0-9_]*)@@")
_PROXY_ONLY = "@@proxy@@"  # line prefix: the line exists only when the proxy is served


@functools.cache
def _template(name: str) -> str:
    path = resources.files("tokn_router.edges").joinpath("lan_templates", name)
    return path.read_text(encoding="utf-8")


def _fill(template: str, values: Mapping[str, str], *, proxy: bool) -> str:
    """``template`` with its ``@@proxy@@`` lines kept or dropped and ``@@name@@`` filled."""
    # Checked on the template, not the output: a (quoted) value may itself contain "@@".
    if "@@" in _PLACEHOLDER.sub("", template):
        raise ValueError("LAN script template has a malformed @@placeholder@@")
    kept = []
    for line in template.splitlines(keepends=True):
        if line.startswith(_PROXY_ONLY):
            if not proxy:
                continue
            line = line.removeprefix(_PROXY_ONLY)
        kept.append(line)
    text = "".join(kept)
    names = set(_PLACEHOLDER.findall(text))
    if missing := names - values.keys():
        raise ValueError(f"LAN script template needs values for: {', '.join(sorted(missing))}")
    if unused := values.keys() - names:
        raise ValueError(f"LAN script template does not use: {', '.join(sorted(unused))}")
    return _PLACEHOLDER.sub(lambda m: values[m[1]], text)


def _values(shell: str, u: LanURLs) -> dict[str, str]:
    """The values for ``shell``'s template, each quoted for it (but the comment ones)."""

    def q(value: str) -> str:
        return quote(shell, value)

    comment = {"api_url": u.api_url, "env_url": u.env_url, "shell": shell}
    if any(c in v for v in comment.values() for c in "\r\n"):
        raise ValueError("a LAN URL must not contain a line break")
    digits = u.ca_sha256.replace(":", "")
    # Compared as text: env.ps1 hashes with ToString('X2') (upper-case), the others lower-case.
    want = digits.upper() if shell == "pwsh" else digits.lower()
    roots = (", " if shell == "pwsh" else " ").join(q(p) for p in SYSTEM_BUNDLES)
    values = {
        **comment,
        "ca_cert_url": q(u.ca_cert_url),
        "ca_sha256": q(want),
        "cache_name": q(u.cache_name),
        "system_bundles": roots,
        "base_url": q(u.api_url + "/v1"),
        "no_key_note": q(_NO_KEY_NOTE),
    }
    if u.proxy_url is not None and (split := u.keyed_proxy()) is not None:
        # The API itself must not be sent through the proxy (plain http:// + HTTP_PROXY).
        no_proxy = dict.fromkeys(h for h in (*DEFAULT_NO_PROXY, u.host) if h)
        values |= {
            "proxy_url": q(u.proxy_url),
            "no_proxy": q(",".join(no_proxy)),
            "key_proxy_prefix": q(split[0]),
            "key_proxy_suffix": q(split[1]),
        }
    return values


def env_script(shell: str, urls: LanURLs) -> str:
    """The client set-up script for ``shell``; ValueError for an unknown shell."""
    if shell not in _TEMPLATES:
        raise ValueError(f"unknown shell '{shell}' (choose from {', '.join(SHELLS)})")
    return _fill(
        _template(_TEMPLATES[shell]), _values(shell, urls), proxy=urls.proxy_url is not None
    )

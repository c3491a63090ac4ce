"""Client set-up for the MITM proxy: the environment ``proxy env`` and ``proxy shell`` set.

``SSL_CERT_FILE`` and friends *replace* a tool's trust store, so they point at the merged
``ca-bundle.crt`` (system roots + our CA); Node's ``NODE_EXTRA_CA_CERTS`` *adds* to its
built-in roots, so it gets the bare ``ca.crt``. Values are quoted for each shell so a
state dir like ``/home/o'neil/My "AI" $stuff`` survives ``eval``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from typing import Literal, get_args

__all__ = ["DEFAULT_NO_PROXY", "SHELLS", "Shell", "env_script", "env_vars", "quote"]

Shell = Literal["sh", "bash", "zsh", "fish", "pwsh"]
SHELLS: tuple[str, ...] = get_args(Shell)

# The local API listener and other loopback services must not go through the proxy.
DEFAULT_NO_PROXY: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

# PowerShell treats the typographic single quotes like ' inside '…' strings.
_PWSH_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def env_vars(
    proxy_url: str,
    bundle_path: str | os.PathLike[str],
    ca_path: str | os.PathLike[str],
    no_proxy: Iterable[str] | str = DEFAULT_NO_PROXY,
) -> dict[str, str]:
    """The variables, in a stable order (upper-case first, then the lower-case twins)."""
    bundle = os.fspath(bundle_path)
    no_proxy_s = no_proxy if isinstance(no_proxy, str) else ",".join(h for h in no_proxy if h)
    return {
        "HTTPS_PROXY": proxy_url,
        "HTTP_PROXY": proxy_url,
        "https_proxy": proxy_url,
        "http_proxy": proxy_url,
        "NO_PROXY": no_proxy_s,
        "no_proxy": no_proxy_s,
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "GIT_SSL_CAINFO": bundle,
        "NODE_EXTRA_CA_CERTS": os.fspath(ca_path),
    }


def quote(shell: Shell | str, value: str) -> str:
    """``value`` as one literal word of ``shell`` (no expansion of $, `, \\ or globs)."""
    if "\0" in value:
        raise ValueError("a NUL byte cannot be passed through the environment")
    if shell in ("sh", "bash", "zsh"):
        # Single quotes are literal in every POSIX shell; ' becomes '"'"'.
        return shlex.quote(value)
    if shell == "fish":
        # Inside fish single quotes only \' and \\ are escapes.
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if shell == "pwsh":
        # Inside PowerShell single quotes the only escape is doubling the quote.
        out = "".join(c + c if c in _PWSH_SINGLE_QUOTES else c for c in value)
        return "'" + out + "'"
    raise ValueError(f"unknown shell {shell!r} (choose from {', '.join(SHELLS)})")


def env_script(
    shell: Shell | str,
    proxy_url: str,
    bundle_path: str | os.PathLike[str],
    ca_path: str | os.PathLike[str],
    no_proxy: Iterable[str] | str = DEFAULT_NO_PROXY,
) -> str:
    """A script for ``eval`` (sh/bash/zsh), ``| source`` (fish) or ``| Invoke-Expression`` (pwsh)."""
    variables = env_vars(proxy_url, bundle_path, ca_path, no_proxy)
    if shell in ("sh", "bash", "zsh"):
        usage = f'eval "$(tokn-router proxy env --shell {shell})"'
        lines = [f"export {k}={quote(shell, v)}" for k, v in variables.items()]
    elif shell == "fish":
        usage = "tokn-router proxy env --shell fish | source"
        lines = [f"set -gx {k} {quote(shell, v)}" for k, v in variables.items()]
    elif shell == "pwsh":
        usage = "tokn-router proxy env --shell pwsh | Out-String | Invoke-Expression"
        lines = [f"$env:{k} = {quote(shell, v)}" for k, v in variables.items()]
    else:
        raise ValueError(f"unknown shell {shell!r} (choose from {', '.join(SHELLS)})")
    return "\n".join([f"# tokn-router MITM proxy; use: {usage}", *lines]) + "\n"

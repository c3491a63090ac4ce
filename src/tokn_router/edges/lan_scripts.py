"""The LAN set-up scripts served by ``GET /-/lan/env`` (sh/bash/zsh, fish, pwsh).

Pure text generation from a :class:`LanURLs`: each script downloads the CA,
checks its SHA-256 fingerprint (of the DER certificate, as the server prints it),
stores it with a bundle merged with the system roots under
``~/.cache/tokn-router/lan/<server>/`` (a temp dir as fallback) and exports
``OPENAI_BASE_URL``, the proxy variables and the CA variables. The client key
is never served: a script takes it from the user's own ``TOKN_ROUTER_KEY`` and
exports it as ``OPENAI_API_KEY`` and ``ANTHROPIC_API_KEY`` and as the password of
the proxy URL (``http://default:KEY@server:port``; the user name ``default``
leaves the route mode to the server). Every value is quoted for its shell; the routes in :mod:`tokn_router.edges.lan` only build a
:class:`LanURLs` from a validated Host header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tokn_router.edges.proxy.shellenv import DEFAULT_NO_PROXY, SHELLS, env_vars, quote
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
_PROXY_KEYS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy")
KEY_ENV = "TOKN_ROUTER_KEY"  # where the scripts find the user's client key
KEY_EXPORTS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
_PROXY_URL_KEYS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
_NO_KEY_NOTE = (
    f"tokn-router: note: {KEY_ENV} is not set, so no client key was exported; "
    "if this server requires keys, set it to yours and run this again"
)
_BUNDLE = "\0bundle"  # placeholders for paths only the client knows
_CA = "\0ca"


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

    def exports(self) -> list[tuple[str, str]]:
        """``(name, value)`` to set; values may be the ``_BUNDLE``/``_CA`` placeholders."""
        out = [("OPENAI_BASE_URL", self.api_url + "/v1")]
        # The API itself must not be sent through the proxy (plain http:// + HTTP_PROXY).
        no_proxy = list(dict.fromkeys([*DEFAULT_NO_PROXY, self.host]))
        variables = env_vars(self.proxy_url or "", _BUNDLE, _CA, no_proxy)
        for name, value in variables.items():
            if self.proxy_url is None and name in _PROXY_KEYS:
                continue
            out.append((name, value))
        return out


# ------------------------------------------------------------------- scripts


def _sh_script(shell: str, u: LanURLs) -> str:
    def q(value: str) -> str:
        return quote(shell, value)

    want = u.ca_sha256.replace(":", "").lower()
    lines = [
        f"# tokn-router LAN set-up for {u.api_url}",
        f"# use: eval \"$(curl -fsSL '{u.env_url}?shell={shell}')\"",
        "# Downloads the proxy CA, checks its SHA-256 fingerprint, exports the variables.",
        "_tokn_router_fp() {",
        "  # SHA-256 of the certificate (DER), lower-case hex without colons",
        "  if command -v openssl >/dev/null 2>&1; then",
        '    openssl x509 -in "$1" -noout -fingerprint -sha256 2>/dev/null \\',
        "      | sed 's/^.*=//; s/://g' | tr 'ABCDEF' 'abcdef'",
        "    return",
        "  fi",
        "  if base64 -d </dev/null >/dev/null 2>&1; then _trl_b64=-d; else _trl_b64=-D; fi",
        "  if command -v sha256sum >/dev/null 2>&1; then",
        "    sed '/-----/d' \"$1\" | base64 \"$_trl_b64\" 2>/dev/null | sha256sum | cut -d' ' -f1",
        "  elif command -v shasum >/dev/null 2>&1; then",
        "    sed '/-----/d' \"$1\" | base64 \"$_trl_b64\" 2>/dev/null | shasum -a 256 | cut -d' ' -f1",
        "  fi",
        "}",
        "_tokn_router_colons() {",
        "  printf '%s\\n' \"$1\" | sed 's/../&:/g; s/:$//' | tr 'abcdef' 'ABCDEF'",
        "}",
        "_tokn_router_lan() {",
        f"  _trl_url={q(u.ca_cert_url)}",
        f"  _trl_want={q(want)}",
        '  if [ -n "${XDG_CACHE_HOME:-}" ]; then',
        f'    _trl_dir="$XDG_CACHE_HOME"/tokn-router/lan/{q(u.cache_name)}',
        '  elif [ -n "${HOME:-}" ]; then',
        f'    _trl_dir="$HOME"/.cache/tokn-router/lan/{q(u.cache_name)}',
        "  else",
        "    _trl_dir=",
        "  fi",
        '  if [ -z "$_trl_dir" ] || ! mkdir -p "$_trl_dir" 2>/dev/null; then',
        '    _trl_dir=$(mktemp -d "${TMPDIR:-/tmp}/tokn-router-lan.XXXXXX") || {',
        "      echo 'tokn-router: cannot create a folder for the CA' >&2; return 1; }",
        "  fi",
        '  _trl_tmp="$_trl_dir/ca.crt.download.$$"',
        "  if command -v curl >/dev/null 2>&1; then",
        '    curl --noproxy \'*\' -fsSL -o "$_trl_tmp" "$_trl_url"',
        "  elif command -v wget >/dev/null 2>&1; then",
        '    wget --no-proxy -q -O "$_trl_tmp" "$_trl_url"',
        "  else",
        "    echo 'tokn-router: need curl or wget to download the CA' >&2; return 1",
        "  fi || {",
        '    rm -f "$_trl_tmp"; echo "tokn-router: cannot download $_trl_url" >&2; return 1; }',
        '  _trl_got=$(_tokn_router_fp "$_trl_tmp")',
        '  if [ -z "$_trl_got" ]; then',
        '    rm -f "$_trl_tmp"',
        "    echo 'tokn-router: cannot compute the CA fingerprint (need openssl, or base64 and "
        "sha256sum/shasum)' >&2",
        "    return 1",
        "  fi",
        '  if [ "$_trl_got" != "$_trl_want" ]; then',
        '    rm -f "$_trl_tmp"',
        '    echo "tokn-router: CA FINGERPRINT MISMATCH for $_trl_url: expected '
        '$(_tokn_router_colons "$_trl_want"), got $(_tokn_router_colons "$_trl_got"); '
        'nothing was trusted or exported" >&2',
        "    return 1",
        "  fi",
        '  mv -f "$_trl_tmp" "$_trl_dir/ca.crt" || return 1',
        "  _trl_sys=",
        "  for _trl_f in " + " ".join(q(p) for p in SYSTEM_BUNDLES) + "; do",
        '    if [ -f "$_trl_f" ]; then _trl_sys=$_trl_f; break; fi',
        "  done",
        "  _trl_extra=",
        '  if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ] \\',
        '    && [ "$SSL_CERT_FILE" != "$_trl_dir/ca-bundle.crt" ] && [ "$SSL_CERT_FILE" != "$_trl_sys" ]; then',
        "    _trl_extra=$SSL_CERT_FILE",
        "  fi",
        '  _trl_bundle="$_trl_dir/ca.crt"',
        '  if [ -n "$_trl_sys$_trl_extra" ]; then',
        "    if {",
        '      if [ -n "$_trl_sys" ]; then cat "$_trl_sys"; echo; fi',
        '      if [ -n "$_trl_extra" ]; then cat "$_trl_extra"; echo; fi',
        '      cat "$_trl_dir/ca.crt"',
        '    } >"$_trl_dir/ca-bundle.crt.tmp.$$" && mv -f "$_trl_dir/ca-bundle.crt.tmp.$$" '
        '"$_trl_dir/ca-bundle.crt"; then',
        '      _trl_bundle="$_trl_dir/ca-bundle.crt"',
        "    fi",
        "  fi",
        '  if [ "$_trl_bundle" = "$_trl_dir/ca.crt" ]; then',
        "    echo 'tokn-router: warning: no system CA bundle found; SSL_CERT_FILE and co "
        "trust only the tokn-router CA' >&2",
        "  fi",
    ]
    for name, value in u.exports():
        if value == _BUNDLE:
            lines.append(f'  export {name}="$_trl_bundle"')
        elif value == _CA:
            lines.append(f'  export {name}="$_trl_dir/ca.crt"')
        else:
            lines.append(f"  export {name}={q(value)}")
    lines.append(f'  if [ -n "${{{KEY_ENV}:-}}" ]; then')
    for name in KEY_EXPORTS:
        lines.append(f'    export {name}="${KEY_ENV}"')
    if (split := u.keyed_proxy()) is not None:
        for name in _PROXY_URL_KEYS:
            lines.append(f'    export {name}={q(split[0])}"${KEY_ENV}"{q(split[1])}')
    lines += ["  else", f"    echo {q(_NO_KEY_NOTE)} >&2", "  fi"]
    lines += [
        '  echo "tokn-router: CA $(_tokn_router_colons "$_trl_got") verified and saved in '
        '$_trl_dir; compare it with the fingerprint the server printed at start-up" >&2',
        "  unset _trl_url _trl_want _trl_dir _trl_tmp _trl_got _trl_sys _trl_extra _trl_f "
        "_trl_bundle _trl_b64",
        "}",
        "if _tokn_router_lan; then",
        "  unset -f _tokn_router_lan _tokn_router_fp _tokn_router_colons",
        "else",
        "  unset -f _tokn_router_lan _tokn_router_fp _tokn_router_colons",
        "  unset _trl_url _trl_want _trl_dir _trl_tmp _trl_got _trl_sys _trl_extra _trl_f "
        "_trl_bundle _trl_b64",
        "  false",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def _fish_script(u: LanURLs) -> str:
    def q(value: str) -> str:
        return quote("fish", value)

    want = u.ca_sha256.replace(":", "").lower()
    lines = [
        f"# tokn-router LAN set-up for {u.api_url}",
        f"# use: curl -fsSL '{u.env_url}?shell=fish' | source",
        "function _tokn_router_lan",
        f"    set -l url {q(u.ca_cert_url)}",
        f"    set -l want {q(want)}",
        "    set -l dir",
        '    if test -n "$XDG_CACHE_HOME"',
        f'        set dir "$XDG_CACHE_HOME/tokn-router/lan/"{q(u.cache_name)}',
        '    else if test -n "$HOME"',
        f'        set dir "$HOME/.cache/tokn-router/lan/"{q(u.cache_name)}',
        "    end",
        '    if test -z "$dir"; or not mkdir -p "$dir" 2>/dev/null',
        "        set dir (mktemp -d /tmp/tokn-router-lan.XXXXXX)",
        "        or begin; echo 'tokn-router: cannot create a folder for the CA' >&2; return 1; end",
        "    end",
        '    set -l tmp "$dir/ca.crt.download.$fish_pid"',
        "    if type -q curl",
        '        curl --noproxy \'*\' -fsSL -o "$tmp" "$url"',
        "    else if type -q wget",
        '        wget --no-proxy -q -O "$tmp" "$url"',
        "    else",
        "        echo 'tokn-router: need curl or wget to download the CA' >&2; return 1",
        "    end",
        '    or begin; rm -f "$tmp"; echo "tokn-router: cannot download $url" >&2; return 1; end',
        "    set -l got",
        "    if type -q openssl",
        '        set got (openssl x509 -in "$tmp" -noout -fingerprint -sha256 2>/dev/null'
        " | sed 's/^.*=//; s/://g' | tr 'ABCDEF' 'abcdef')",
        "    else if type -q sha256sum",
        "        set got (sed '/-----/d' \"$tmp\" | base64 -d 2>/dev/null | sha256sum | cut -d' ' -f1)",
        "    else if type -q shasum",
        "        set got (sed '/-----/d' \"$tmp\" | base64 -d 2>/dev/null | shasum -a 256 | cut -d' ' -f1)",
        "    end",
        '    if test -z "$got"',
        '        rm -f "$tmp"',
        "        echo 'tokn-router: cannot compute the CA fingerprint (need openssl, or base64 and "
        "sha256sum/shasum)' >&2",
        "        return 1",
        "    end",
        '    if test "$got" != "$want"',
        '        rm -f "$tmp"',
        '        echo "tokn-router: CA FINGERPRINT MISMATCH for $url: expected $want, got $got; '
        'nothing was trusted or exported" >&2',
        "        return 1",
        "    end",
        '    mv -f "$tmp" "$dir/ca.crt"; or return 1',
        "    set -l sys",
        "    for f in " + " ".join(q(p) for p in SYSTEM_BUNDLES),
        '        if test -f "$f"; set sys "$f"; break; end',
        "    end",
        "    set -l extra",
        '    if test -n "$SSL_CERT_FILE"; and test -f "$SSL_CERT_FILE"; '
        'and test "$SSL_CERT_FILE" != "$dir/ca-bundle.crt"; and test "$SSL_CERT_FILE" != "$sys"',
        '        set extra "$SSL_CERT_FILE"',
        "    end",
        '    set -l bundle "$dir/ca.crt"',
        '    if test -n "$sys$extra"',
        "        begin",
        '            for f in $sys $extra; cat "$f"; echo; end',
        '            cat "$dir/ca.crt"',
        '        end >"$dir/ca-bundle.crt.tmp"',
        '        and mv -f "$dir/ca-bundle.crt.tmp" "$dir/ca-bundle.crt"',
        '        and set bundle "$dir/ca-bundle.crt"',
        "    end",
        '    if test "$bundle" = "$dir/ca.crt"',
        "        echo 'tokn-router: warning: no system CA bundle found; SSL_CERT_FILE and co "
        "trust only the tokn-router CA' >&2",
        "    end",
    ]
    for name, value in u.exports():
        if value == _BUNDLE:
            lines.append(f'    set -gx {name} "$bundle"')
        elif value == _CA:
            lines.append(f'    set -gx {name} "$dir/ca.crt"')
        else:
            lines.append(f"    set -gx {name} {q(value)}")
    lines.append(f'    if test -n "${KEY_ENV}"')
    for name in KEY_EXPORTS:
        lines.append(f'        set -gx {name} "${KEY_ENV}"')
    if (split := u.keyed_proxy()) is not None:
        for name in _PROXY_URL_KEYS:
            lines.append(f'        set -gx {name} {q(split[0])}"${KEY_ENV}"{q(split[1])}')
    lines += ["    else", f"        echo {q(_NO_KEY_NOTE)} >&2", "    end"]
    lines += [
        '    echo "tokn-router: CA SHA-256 $got verified and saved in $dir; compare it with '
        'the fingerprint the server printed at start-up" >&2',
        "end",
        "if _tokn_router_lan",
        "    functions -e _tokn_router_lan",
        "else",
        "    functions -e _tokn_router_lan",
        "    false",
        "end",
    ]
    return "\n".join(lines) + "\n"


def _pwsh_script(u: LanURLs) -> str:
    def q(value: str) -> str:
        return quote("pwsh", value)

    want = u.ca_sha256.replace(":", "").upper()
    roots = ", ".join(q(p) for p in SYSTEM_BUNDLES)
    lines = [
        f"# tokn-router LAN set-up for {u.api_url}",
        f"# use: Invoke-RestMethod '{u.env_url}?shell=pwsh' | Invoke-Expression",
        "& {",
        f"    $url = {q(u.ca_cert_url)}",
        f"    $want = {q(want)}",
        "    $base = if ($env:XDG_CACHE_HOME) { $env:XDG_CACHE_HOME } "
        "elseif ($HOME) { Join-Path $HOME '.cache' } else { [IO.Path]::GetTempPath() }",
        f"    $dir = [IO.Path]::Combine($base, 'tokn-router', 'lan', {q(u.cache_name)})",
        "    try { New-Item -ItemType Directory -Force -Path $dir -ErrorAction Stop | Out-Null }",
        "    catch {",
        "        $dir = Join-Path ([IO.Path]::GetTempPath()) ('tokn-router-lan-' + [guid]::NewGuid())",
        "        New-Item -ItemType Directory -Force -Path $dir | Out-Null",
        "    }",
        "    $tmp = Join-Path $dir ('ca.crt.download.' + $PID)",
        "    try { Invoke-WebRequest -UseBasicParsing -NoProxy -Uri $url -OutFile $tmp -ErrorAction Stop }",
        '    catch { throw "tokn-router: cannot download ${url}: $($_.Exception.Message)" }',
        "    $pem = Get-Content -Raw -LiteralPath $tmp",
        "    $m = [regex]::Match($pem, "
        "'-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\\s]+)-----END CERTIFICATE-----')",
        "    if (-not $m.Success) {",
        "        Remove-Item -Force -LiteralPath $tmp",
        '        throw "tokn-router: $url did not return a PEM certificate"',
        "    }",
        "    $der = [Convert]::FromBase64String(($m.Groups[1].Value -replace '\\s', ''))",
        "    $sha = [System.Security.Cryptography.SHA256]::Create()",
        "    $got = -join ($sha.ComputeHash($der) | ForEach-Object { $_.ToString('X2') })",
        "    if ($got -ne $want) {",
        "        Remove-Item -Force -LiteralPath $tmp",
        '        throw "tokn-router: CA FINGERPRINT MISMATCH for ${url}: expected $want, got $got; '
        'nothing was trusted or exported"',
        "    }",
        "    $ca = Join-Path $dir 'ca.crt'",
        "    Move-Item -Force -LiteralPath $tmp -Destination $ca",
        "    $bundle = Join-Path $dir 'ca-bundle.crt'",
        f"    $sources = @(@({roots}) | Where-Object {{ Test-Path -LiteralPath $_ -PathType Leaf }} "
        "| Select-Object -First 1)",
        "    if ($env:SSL_CERT_FILE -and (Test-Path -LiteralPath $env:SSL_CERT_FILE -PathType Leaf) "
        "-and $env:SSL_CERT_FILE -ne $bundle -and $sources -notcontains $env:SSL_CERT_FILE) "
        "{ $sources += $env:SSL_CERT_FILE }",
        "    if ($sources.Count -gt 0) {",
        "        $parts = @($sources | ForEach-Object { Get-Content -Raw -LiteralPath $_ }) + @($pem)",
        '        Set-Content -NoNewline -LiteralPath "$bundle.tmp" -Value ($parts -join "`n")',
        '        Move-Item -Force -LiteralPath "$bundle.tmp" -Destination $bundle',
        "    } else {",
        "        [Console]::Error.WriteLine('tokn-router: warning: no system CA bundle found; "
        "SSL_CERT_FILE and co trust only the tokn-router CA')",
        "        $bundle = $ca",
        "    }",
    ]
    for name, value in u.exports():
        if value == _BUNDLE:
            lines.append(f"    $env:{name} = $bundle")
        elif value == _CA:
            lines.append(f"    $env:{name} = $ca")
        else:
            lines.append(f"    $env:{name} = {q(value)}")
    lines.append(f"    if ($env:{KEY_ENV}) {{")
    for name in KEY_EXPORTS:
        lines.append(f"        $env:{name} = $env:{KEY_ENV}")
    if (split := u.keyed_proxy()) is not None:
        for name in _PROXY_URL_KEYS:
            lines.append(f"        $env:{name} = {q(split[0])} + $env:{KEY_ENV} + {q(split[1])}")
    lines += ["    } else {", f"        [Console]::Error.WriteLine({q(_NO_KEY_NOTE)})", "    }"]
    lines += [
        '    [Console]::Error.WriteLine("tokn-router: CA SHA-256 $got verified and saved in $dir; '
        'compare it with the fingerprint the server printed at start-up")',
        "}",
    ]
    return "\n".join(lines) + "\n"


def env_script(shell: str, urls: LanURLs) -> str:
    """The client set-up script for ``shell``; ValueError for an unknown shell."""
    if shell in ("sh", "bash", "zsh"):
        return _sh_script(shell, urls)
    if shell == "fish":
        return _fish_script(urls)
    if shell == "pwsh":
        return _pwsh_script(urls)
    raise ValueError(f"unknown shell '{shell}' (choose from {', '.join(SHELLS)})")

"""LAN bootstrap endpoints: ``/-/lan/...`` on a deliberate remote bind.

``serve --host 0.0.0.0 --insecure-allow-remote [--with-proxy]`` publishes a
:class:`LanInfo`; the routes answer only then (404 otherwise, like any unknown path),
and only on the API listener (the MITM proxy's route mode never reaches them):

* ``GET /-/lan/bootstrap.json`` — ``api_url``, ``proxy_url`` (null without the proxy),
  ``ca_cert_url``, ``env_url``, ``ca_sha256``.
* ``GET /-/lan/ca.crt`` — the CA *certificate*, re-encoded from the parsed file, so
  nothing but one public certificate can ever leave (never the key).
* ``GET /-/lan/env?shell=sh|bash|zsh|fish|pwsh`` — a script for ``eval`` /
  ``| source`` / ``| iex`` that downloads the CA, checks its SHA-256 fingerprint (of
  the DER certificate, as the server prints it), stores it with a bundle merged with the
  system roots under ``~/.cache/tokn-router/lan/<server>/`` (a temp dir as fallback)
  and exports ``OPENAI_BASE_URL``, the proxy variables and the CA variables.

URLs are built from the request's ``Host`` header, which must be a host name or an IP
literal with an optional port (400 otherwise), so nothing a client sends can reach the
scripts unvalidated; every value is quoted for its shell on top of that. The scheme is
``http``: the API listener does not terminate TLS. The fingerprint check protects the
download of ``ca.crt``; users should still compare it with the one printed at start-up,
which the script shows.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio
from quart import Response, request
from werkzeug.exceptions import NotFound

from tokn_router.edges.proxy.shellenv import DEFAULT_NO_PROXY, SHELLS, env_vars, quote
from tokn_router.wire.errors import error_body

__all__ = ["LanInfo", "LanURLs", "env_script", "parse_host_header", "register"]


@dataclass(frozen=True)
class LanInfo:
    """What the LAN endpoints publish; set by the daemon in LAN mode only."""

    proxy_port: int | None  # None without --with-proxy
    ca_cert_path: Path  # public certificate only; the key is never served
    ca_sha256: str  # colon-separated upper-case hex, as printed at start-up


PREFIX = "/-/lan"
PEM_TYPE = "application/x-pem-file"

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(
    rf"^(?P<host>{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?$"
)
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
_BUNDLE = "\0bundle"  # placeholders for paths only the client knows
_CA = "\0ca"


class HostError(ValueError):
    """The Host header is not a plain host name or IP literal with an optional port."""


def parse_host_header(value: str | None) -> tuple[str, int | None]:
    """``(host, port)`` from a Host header; IPv6 without brackets. Raises HostError."""
    text = (value or "").strip()
    m = _HOST_RE.match(text) if len(text) <= 262 else None
    if m is None:
        raise HostError("the Host header must be a host name or IP address with an optional port")
    host = m.group("host").lower()
    if host.startswith("["):
        try:
            host = ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            raise HostError("the Host header holds an invalid IPv6 address") from None
    elif len(host.rstrip(".")) > 253:
        raise HostError("the Host header's name is too long")
    port_s = m.group("port")
    port = int(port_s) if port_s is not None else None
    if port is not None and not 0 < port < 65536:
        raise HostError("the Host header's port is out of range")
    return host, port


def _netloc(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


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
    def build(cls, info: LanInfo, host_header: str | None) -> LanURLs:
        host, port = parse_host_header(host_header)
        api = "http://" + _netloc(host, port)
        proxy = None if info.proxy_port is None else "http://" + _netloc(host, info.proxy_port)
        return cls(
            host=host,
            api_url=api,
            proxy_url=proxy,
            ca_cert_url=f"{api}{PREFIX}/ca.crt",
            env_url=f"{api}{PREFIX}/env",
            ca_sha256=info.ca_sha256,
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


# -------------------------------------------------------------------- routes


def _json(status: int, body: bytes) -> Response:
    return Response(body, status=status, content_type="application/json", headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


def _public_pem(path: Path, data: bytes, expected_sha256: str) -> bytes:
    """The one certificate in ``data``, re-encoded (so nothing else can leak)."""
    # imported here: cryptography is heavy and only LAN mode needs it
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(data)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    if fingerprint != expected_sha256.upper():
        raise LookupError(f"{path} changed since start-up (now {fingerprint}); restart the server")
    return cert.public_bytes(serialization.Encoding.PEM)


def register(app: Any, lan_info: Callable[[], LanInfo | None]) -> None:
    """Add the LAN routes; they answer only while ``lan_info()`` gives one (404 otherwise).

    The daemon publishes the info after building the app (and replaces it once the
    proxy port is known), so the check happens per request.
    """

    def lan_urls() -> LanURLs | Response:
        info = lan_info()
        if info is None:
            raise NotFound()
        try:
            return LanURLs.build(info, request.headers.get("host"))
        except HostError as e:
            return _json(400, error_body(400, str(e), code="invalid_host"))

    @app.get(f"{PREFIX}/bootstrap.json")
    async def lan_bootstrap() -> Response:
        urls = lan_urls()
        if isinstance(urls, Response):
            return urls
        return _json(200, msgspec.json.encode(urls.bootstrap()))

    @app.get(f"{PREFIX}/ca.crt")
    async def lan_ca_cert() -> Response:
        urls = lan_urls()
        if isinstance(urls, Response):
            return urls
        info = lan_info()
        if info is None:
            raise NotFound()
        try:
            data = await trio.Path(info.ca_cert_path).read_bytes()
            pem = _public_pem(info.ca_cert_path, data, info.ca_sha256)
        except (OSError, ValueError, LookupError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            return _json(
                503,
                error_body(
                    503, f"the CA certificate is unavailable: {reason}", code="ca_unavailable"
                ),
            )
        headers = {**_NO_STORE, "Content-Disposition": 'inline; filename="tokn-router-ca.crt"'}
        return Response(pem, status=200, content_type=PEM_TYPE, headers=headers)

    @app.get(f"{PREFIX}/env")
    async def lan_env() -> Response:
        urls = lan_urls()
        if isinstance(urls, Response):
            return urls
        shell = request.args.get("shell", "sh")
        if shell not in SHELLS:
            message = f"unknown shell '{shell[:40]}' (choose from {', '.join(SHELLS)})"
            return _json(400, error_body(400, message, code="invalid_shell", param="shell"))
        script = env_script(shell, urls)
        return Response(
            script, status=200, content_type="text/plain; charset=utf-8", headers=_NO_STORE
        )

# tokn-router LAN set-up for @@api_url@@
# use: eval "$(curl -fsSL '@@env_url@@?shell=@@shell@@')"
# Downloads the proxy CA, checks its SHA-256 fingerprint, exports the variables.
_tokn_router_fp() {
  # SHA-256 of the certificate (DER), lower-case hex without colons
  if command -v openssl >/dev/null 2>&1; then
    openssl x509 -in "$1" -noout -fingerprint -sha256 2>/dev/null \
      | sed 's/^.*=//; s/://g' | tr 'ABCDEF' 'abcdef'
    return
  fi
  if base64 -d </dev/null >/dev/null 2>&1; then _trl_b64=-d; else _trl_b64=-D; fi
  if command -v sha256sum >/dev/null 2>&1; then
    sed '/-----/d' "$1" | base64 "$_trl_b64" 2>/dev/null | sha256sum | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    sed '/-----/d' "$1" | base64 "$_trl_b64" 2>/dev/null | shasum -a 256 | cut -d' ' -f1
  fi
}
_tokn_router_colons() {
  printf '%s\n' "$1" | sed 's/../&:/g; s/:$//' | tr 'abcdef' 'ABCDEF'
}
_tokn_router_lan() {
  _trl_url=@@ca_cert_url@@
  _trl_want=@@ca_sha256@@
  if [ -n "${XDG_CACHE_HOME:-}" ]; then
    _trl_dir="$XDG_CACHE_HOME"/tokn-router/lan/@@cache_name@@
  elif [ -n "${HOME:-}" ]; then
    _trl_dir="$HOME"/.cache/tokn-router/lan/@@cache_name@@
  else
    _trl_dir=
  fi
  if [ -z "$_trl_dir" ] || ! mkdir -p "$_trl_dir" 2>/dev/null; then
    _trl_dir=$(mktemp -d "${TMPDIR:-/tmp}/tokn-router-lan.XXXXXX") || {
      echo 'tokn-router: cannot create a folder for the CA' >&2; return 1; }
  fi
  _trl_tmp="$_trl_dir/ca.crt.download.$$"
  if command -v curl >/dev/null 2>&1; then
    curl --noproxy '*' -fsSL -o "$_trl_tmp" "$_trl_url"
  elif command -v wget >/dev/null 2>&1; then
    wget --no-proxy -q -O "$_trl_tmp" "$_trl_url"
  else
    echo 'tokn-router: need curl or wget to download the CA' >&2; return 1
  fi || {
    rm -f "$_trl_tmp"; echo "tokn-router: cannot download $_trl_url" >&2; return 1; }
  _trl_got=$(_tokn_router_fp "$_trl_tmp")
  if [ -z "$_trl_got" ]; then
    rm -f "$_trl_tmp"
    echo 'tokn-router: cannot compute the CA fingerprint (need openssl, or base64 and sha256sum/shasum)' >&2
    return 1
  fi
  if [ "$_trl_got" != "$_trl_want" ]; then
    rm -f "$_trl_tmp"
    echo "tokn-router: CA FINGERPRINT MISMATCH for $_trl_url: expected $(_tokn_router_colons "$_trl_want"), got $(_tokn_router_colons "$_trl_got"); nothing was trusted or exported" >&2
    return 1
  fi
  mv -f "$_trl_tmp" "$_trl_dir/ca.crt" || return 1
  _trl_sys=
  for _trl_f in @@system_bundles@@; do
    if [ -f "$_trl_f" ]; then _trl_sys=$_trl_f; break; fi
  done
  _trl_extra=
  if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ] \
    && [ "$SSL_CERT_FILE" != "$_trl_dir/ca-bundle.crt" ] && [ "$SSL_CERT_FILE" != "$_trl_sys" ]; then
    _trl_extra=$SSL_CERT_FILE
  fi
  _trl_bundle="$_trl_dir/ca.crt"
  if [ -n "$_trl_sys$_trl_extra" ]; then
    if {
      if [ -n "$_trl_sys" ]; then cat "$_trl_sys"; echo; fi
      if [ -n "$_trl_extra" ]; then cat "$_trl_extra"; echo; fi
      cat "$_trl_dir/ca.crt"
    } >"$_trl_dir/ca-bundle.crt.tmp.$$" && mv -f "$_trl_dir/ca-bundle.crt.tmp.$$" "$_trl_dir/ca-bundle.crt"; then
      _trl_bundle="$_trl_dir/ca-bundle.crt"
    fi
  fi
  if [ "$_trl_bundle" = "$_trl_dir/ca.crt" ]; then
    echo 'tokn-router: warning: no system CA bundle found; SSL_CERT_FILE and co trust only the tokn-router CA' >&2
  fi
  export OPENAI_BASE_URL=@@base_url@@
@@proxy@@  export HTTPS_PROXY=@@proxy_url@@
@@proxy@@  export HTTP_PROXY=@@proxy_url@@
@@proxy@@  export https_proxy=@@proxy_url@@
@@proxy@@  export http_proxy=@@proxy_url@@
@@proxy@@  export NO_PROXY=@@no_proxy@@
@@proxy@@  export no_proxy=@@no_proxy@@
  export SSL_CERT_FILE="$_trl_bundle"
  export REQUESTS_CA_BUNDLE="$_trl_bundle"
  export CURL_CA_BUNDLE="$_trl_bundle"
  export GIT_SSL_CAINFO="$_trl_bundle"
  export NODE_EXTRA_CA_CERTS="$_trl_dir/ca.crt"
  if [ -n "${TOKN_ROUTER_KEY:-}" ]; then
    export OPENAI_API_KEY="$TOKN_ROUTER_KEY"
    export ANTHROPIC_API_KEY="$TOKN_ROUTER_KEY"
@@proxy@@    export HTTPS_PROXY=@@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
@@proxy@@    export HTTP_PROXY=@@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
@@proxy@@    export https_proxy=@@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
@@proxy@@    export http_proxy=@@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
  else
    echo @@no_key_note@@ >&2
  fi
  echo "tokn-router: CA $(_tokn_router_colons "$_trl_got") verified and saved in $_trl_dir; compare it with the fingerprint the server printed at start-up" >&2
  unset _trl_url _trl_want _trl_dir _trl_tmp _trl_got _trl_sys _trl_extra _trl_f _trl_bundle _trl_b64
}
if _tokn_router_lan; then
  unset -f _tokn_router_lan _tokn_router_fp _tokn_router_colons
else
  unset -f _tokn_router_lan _tokn_router_fp _tokn_router_colons
  unset _trl_url _trl_want _trl_dir _trl_tmp _trl_got _trl_sys _trl_extra _trl_f _trl_bundle _trl_b64
  false
fi

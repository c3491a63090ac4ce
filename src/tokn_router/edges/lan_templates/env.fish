# tokn-router LAN set-up for @@api_url@@
# use: curl -fsSL '@@env_url@@?shell=@@shell@@' | source
function _tokn_router_lan
    set -l url @@ca_cert_url@@
    set -l want @@ca_sha256@@
    set -l dir
    if test -n "$XDG_CACHE_HOME"
        set dir "$XDG_CACHE_HOME/tokn-router/lan/"@@cache_name@@
    else if test -n "$HOME"
        set dir "$HOME/.cache/tokn-router/lan/"@@cache_name@@
    end
    if test -z "$dir"; or not mkdir -p "$dir" 2>/dev/null
        set dir (mktemp -d /tmp/tokn-router-lan.XXXXXX)
        or begin; echo 'tokn-router: cannot create a folder for the CA' >&2; return 1; end
    end
    set -l tmp "$dir/ca.crt.download.$fish_pid"
    if type -q curl
        curl --noproxy '*' -fsSL -o "$tmp" "$url"
    else if type -q wget
        wget --no-proxy -q -O "$tmp" "$url"
    else
        echo 'tokn-router: need curl or wget to download the CA' >&2; return 1
    end
    or begin; rm -f "$tmp"; echo "tokn-router: cannot download $url" >&2; return 1; end
    set -l got
    if type -q openssl
        set got (openssl x509 -in "$tmp" -noout -fingerprint -sha256 2>/dev/null | sed 's/^.*=//; s/://g' | tr 'ABCDEF' 'abcdef')
    else if type -q sha256sum
        set got (sed '/-----/d' "$tmp" | base64 -d 2>/dev/null | sha256sum | cut -d' ' -f1)
    else if type -q shasum
        set got (sed '/-----/d' "$tmp" | base64 -d 2>/dev/null | shasum -a 256 | cut -d' ' -f1)
    end
    if test -z "$got"
        rm -f "$tmp"
        echo 'tokn-router: cannot compute the CA fingerprint (need openssl, or base64 and sha256sum/shasum)' >&2
        return 1
    end
    if test "$got" != "$want"
        rm -f "$tmp"
        echo "tokn-router: CA FINGERPRINT MISMATCH for $url: expected $want, got $got; nothing was trusted or exported" >&2
        return 1
    end
    mv -f "$tmp" "$dir/ca.crt"; or return 1
    set -l sys
    for f in @@system_bundles@@
        if test -f "$f"; set sys "$f"; break; end
    end
    set -l extra
    if test -n "$SSL_CERT_FILE"; and test -f "$SSL_CERT_FILE"; and test "$SSL_CERT_FILE" != "$dir/ca-bundle.crt"; and test "$SSL_CERT_FILE" != "$sys"
        set extra "$SSL_CERT_FILE"
    end
    set -l bundle "$dir/ca.crt"
    if test -n "$sys$extra"
        begin
            for f in $sys $extra; cat "$f"; echo; end
            cat "$dir/ca.crt"
        end >"$dir/ca-bundle.crt.tmp"
        and mv -f "$dir/ca-bundle.crt.tmp" "$dir/ca-bundle.crt"
        and set bundle "$dir/ca-bundle.crt"
    end
    if test "$bundle" = "$dir/ca.crt"
        echo 'tokn-router: warning: no system CA bundle found; SSL_CERT_FILE and co trust only the tokn-router CA' >&2
    end
    set -gx OPENAI_BASE_URL @@base_url@@
@@proxy@@    set -gx HTTPS_PROXY @@proxy_url@@
@@proxy@@    set -gx HTTP_PROXY @@proxy_url@@
@@proxy@@    set -gx https_proxy @@proxy_url@@
@@proxy@@    set -gx http_proxy @@proxy_url@@
@@proxy@@    set -gx NO_PROXY @@no_proxy@@
@@proxy@@    set -gx no_proxy @@no_proxy@@
    set -gx SSL_CERT_FILE "$bundle"
    set -gx REQUESTS_CA_BUNDLE "$bundle"
    set -gx CURL_CA_BUNDLE "$bundle"
    set -gx GIT_SSL_CAINFO "$bundle"
    set -gx NODE_EXTRA_CA_CERTS "$dir/ca.crt"
    if test -n "$TOKN_ROUTER_KEY"
        set -gx OPENAI_API_KEY "$TOKN_ROUTER_KEY"
        set -gx ANTHROPIC_API_KEY "$TOKN_ROUTER_KEY"
@@proxy@@        set -gx HTTPS_PROXY @@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
@@proxy@@        set -gx HTTP_PROXY @@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
@@proxy@@        set -gx https_proxy @@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
@@proxy@@        set -gx http_proxy @@key_proxy_prefix@@"$TOKN_ROUTER_KEY"@@key_proxy_suffix@@
    else
        echo @@no_key_note@@ >&2
    end
    echo "tokn-router: CA SHA-256 $got verified and saved in $dir; compare it with the fingerprint the server printed at start-up" >&2
end
if _tokn_router_lan
    functions -e _tokn_router_lan
else
    functions -e _tokn_router_lan
    false
end

# tokn-router LAN set-up for @@api_url@@
# use: Invoke-RestMethod '@@env_url@@?shell=@@shell@@' | Invoke-Expression
& {
    $url = @@ca_cert_url@@
    $want = @@ca_sha256@@
    $base = if ($env:XDG_CACHE_HOME) { $env:XDG_CACHE_HOME } elseif ($HOME) { Join-Path $HOME '.cache' } else { [IO.Path]::GetTempPath() }
    $dir = [IO.Path]::Combine($base, 'tokn-router', 'lan', @@cache_name@@)
    try { New-Item -ItemType Directory -Force -Path $dir -ErrorAction Stop | Out-Null }
    catch {
        $dir = Join-Path ([IO.Path]::GetTempPath()) ('tokn-router-lan-' + [guid]::NewGuid())
        New-Item -ItemType Directory -Force -Path $dir | Out-Null
    }
    $tmp = Join-Path $dir ('ca.crt.download.' + $PID)
    try { Invoke-WebRequest -UseBasicParsing -NoProxy -Uri $url -OutFile $tmp -ErrorAction Stop }
    catch { throw "tokn-router: cannot download ${url}: $($_.Exception.Message)" }
    $pem = Get-Content -Raw -LiteralPath $tmp
    $m = [regex]::Match($pem, '-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----')
    if (-not $m.Success) {
        Remove-Item -Force -LiteralPath $tmp
        throw "tokn-router: $url did not return a PEM certificate"
    }
    $der = [Convert]::FromBase64String(($m.Groups[1].Value -replace '\s', ''))
    $sha = [System.Security.Cryptography.SHA256]::Create()
    $got = -join ($sha.ComputeHash($der) | ForEach-Object { $_.ToString('X2') })
    if ($got -ne $want) {
        Remove-Item -Force -LiteralPath $tmp
        throw "tokn-router: CA FINGERPRINT MISMATCH for ${url}: expected $want, got $got; nothing was trusted or exported"
    }
    $ca = Join-Path $dir 'ca.crt'
    Move-Item -Force -LiteralPath $tmp -Destination $ca
    $bundle = Join-Path $dir 'ca-bundle.crt'
    $sources = @(@(@@system_bundles@@) | Where-Object { Test-Path -LiteralPath $_ -PathType Leaf } | Select-Object -First 1)
    if ($env:SSL_CERT_FILE -and (Test-Path -LiteralPath $env:SSL_CERT_FILE -PathType Leaf) -and $env:SSL_CERT_FILE -ne $bundle -and $sources -notcontains $env:SSL_CERT_FILE) { $sources += $env:SSL_CERT_FILE }
    if ($sources.Count -gt 0) {
        $parts = @($sources | ForEach-Object { Get-Content -Raw -LiteralPath $_ }) + @($pem)
        Set-Content -NoNewline -LiteralPath "$bundle.tmp" -Value ($parts -join "`n")
        Move-Item -Force -LiteralPath "$bundle.tmp" -Destination $bundle
    } else {
        [Console]::Error.WriteLine('tokn-router: warning: no system CA bundle found; SSL_CERT_FILE and co trust only the tokn-router CA')
        $bundle = $ca
    }
    $env:OPENAI_BASE_URL = @@base_url@@
@@proxy@@    $env:HTTPS_PROXY = @@proxy_url@@
@@proxy@@    $env:HTTP_PROXY = @@proxy_url@@
@@proxy@@    $env:https_proxy = @@proxy_url@@
@@proxy@@    $env:http_proxy = @@proxy_url@@
@@proxy@@    $env:NO_PROXY = @@no_proxy@@
@@proxy@@    $env:no_proxy = @@no_proxy@@
    $env:SSL_CERT_FILE = $bundle
    $env:REQUESTS_CA_BUNDLE = $bundle
    $env:CURL_CA_BUNDLE = $bundle
    $env:GIT_SSL_CAINFO = $bundle
    $env:NODE_EXTRA_CA_CERTS = $ca
    if ($env:TOKN_ROUTER_KEY) {
        $env:OPENAI_API_KEY = $env:TOKN_ROUTER_KEY
        $env:ANTHROPIC_API_KEY = $env:TOKN_ROUTER_KEY
@@proxy@@        $env:HTTPS_PROXY = @@key_proxy_prefix@@ + $env:TOKN_ROUTER_KEY + @@key_proxy_suffix@@
@@proxy@@        $env:HTTP_PROXY = @@key_proxy_prefix@@ + $env:TOKN_ROUTER_KEY + @@key_proxy_suffix@@
@@proxy@@        $env:https_proxy = @@key_proxy_prefix@@ + $env:TOKN_ROUTER_KEY + @@key_proxy_suffix@@
@@proxy@@        $env:http_proxy = @@key_proxy_prefix@@ + $env:TOKN_ROUTER_KEY + @@key_proxy_suffix@@
    } else {
        [Console]::Error.WriteLine(@@no_key_note@@)
    }
    [Console]::Error.WriteLine("tokn-router: CA SHA-256 $got verified and saved in $dir; compare it with the fingerprint the server printed at start-up")
}

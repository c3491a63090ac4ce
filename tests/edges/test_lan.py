"""LAN bootstrap: ``/-/lan/bootstrap.json``, ``/-/lan/ca.crt``, ``/-/lan/env``.

Unit level through Quart's test client, then end to end: the real daemon in LAN mode
and its env script evaluated by ``sh`` (downloads the CA, checks the fingerprint,
exports variables that a real ``curl`` then uses through the proxy).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from quart_trio import QuartTrio

from tests.fakes import FakeUpstream
from tokn_router.accounts.config import Config
from tokn_router.accounts.pool import Pool
from tokn_router.accounts.refresher import Refresher
from tokn_router.edges.api import ApiServices, create_app
from tokn_router.edges.lan import LanInfo, parse_host_header
from tokn_router.edges.lan_scripts import LanURLs, _fill, env_script
from tokn_router.edges.proxy.ca import CertStore
from tokn_router.edges.proxy.shellenv import SHELLS, env_vars
from tokn_router.net.client import ProxySetting, make_client
from tokn_router.serve.relay import Relay

pytestmark = pytest.mark.anyio

CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
BAD_HOSTS = [
    "",
    "evil'$(id)",
    'a"b',
    "a b",
    "host;rm -rf ~",
    "host/path",
    "user@host",
    "host:99999",
    "host:0",
    "host:1:2",
    "-leading.example",
    "a." * 130 + "com",  # 263 characters
    "h\u00e9llo",
]
# Quart's test client cannot even build these requests; checked on the parser directly.
# (A 64+ character label makes werkzeug fail before any route runs: not LAN-specific.)
UNSENDABLE_HOSTS = ["[zz::1]:80", "[::1", "[::1]x", "x" * 64 + ".example", "x" * 300]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CertStore:
    return CertStore(tmp_path_factory.mktemp("lan") / "ca").load()


def _info(store: CertStore, proxy_port: int | None = 4142) -> LanInfo:
    return LanInfo(
        proxy_port=proxy_port, ca_cert_path=store.cert_path, ca_sha256=store.fingerprint_sha256()
    )


@pytest.fixture
async def make_app() -> AsyncIterator[Callable[[LanInfo | None], QuartTrio]]:
    """The real API app over an empty pool; ``svc.lan`` as given."""
    cfg = Config()
    pool = Pool(cfg)
    client = make_client(ProxySetting())

    async def persist(*_: Any) -> None:
        return None

    relay = Relay(pool, Refresher(pool, client, cfg.github, persist), client)

    def build(lan: LanInfo | None) -> QuartTrio:
        svc = ApiServices(
            config=lambda: cfg,
            pool=pool,
            relay=relay,
            report=lambda _r: None,
            spawn=lambda _fn: None,
            loopback_only=lan is None,
            lan=lan,
        )
        return create_app(svc)

    yield build
    await client.aclose()


# The listener address the test client's requests reach (the ASGI scope's "server").
SERVER = ("10.0.0.2", 4141)


async def _get(
    app: QuartTrio, path: str, host: str, server: tuple[str, int] = SERVER
) -> tuple[int, str, str]:
    resp = await app.test_client().get(path, headers={"Host": host}, scope_base={"server": server})
    return resp.status_code, resp.headers.get("content-type", ""), await resp.get_data(as_text=True)


# ----------------------------------------------------------------------- unit


async def test_bootstrap_json(make_app: Any, store: CertStore) -> None:
    app = make_app(_info(store))
    lan = ("192.168.1.5", 4141)
    status, ctype, body = await _get(app, "/-/lan/bootstrap.json", "192.168.1.5:4141", lan)
    assert status == 200 and ctype == "application/json"
    assert json.loads(body) == {
        "api_url": "http://192.168.1.5:4141",
        "proxy_url": "http://192.168.1.5:4142",
        "ca_cert_url": "http://192.168.1.5:4141/-/lan/ca.crt",
        "env_url": "http://192.168.1.5:4141/-/lan/env",
        "ca_sha256": store.fingerprint_sha256(),
    }
    status, _, body = await _get(app, "/-/lan/bootstrap.json", "[FE80::1]:8080", ("fe80::1", 8080))
    doc = json.loads(body)
    assert doc["api_url"] == "http://[fe80::1]:8080"
    assert doc["proxy_url"] == "http://[fe80::1]:4142"
    # the port is the listener's own, whatever the Host says (or leaves out)
    for host in ("192.168.1.5", "192.168.1.5:9999"):
        status, _, body = await _get(app, "/-/lan/bootstrap.json", host, lan)
        assert json.loads(body)["api_url"] == "http://192.168.1.5:4141"
        assert json.loads(body)["proxy_url"] == "http://192.168.1.5:4142"


async def test_bootstrap_without_proxy(make_app: Any, store: CertStore) -> None:
    app = make_app(_info(store, proxy_port=None))
    status, _, body = await _get(app, "/-/lan/bootstrap.json", "10.0.0.2:4141")
    assert status == 200
    assert json.loads(body)["proxy_url"] is None
    status, _, script = await _get(app, "/-/lan/env?shell=sh", "10.0.0.2:4141")
    assert "OPENAI_BASE_URL=http://10.0.0.2:4141/v1" in script
    assert not any(f"export {v}=" in script for v in (*PROXY_VARS, "NO_PROXY"))
    assert 'export SSL_CERT_FILE="$_trl_bundle"' in script


async def test_ca_crt_is_the_public_certificate_only(
    make_app: Any, store: CertStore, tmp_path: Path
) -> None:
    status, ctype, body = await _get(make_app(_info(store)), "/-/lan/ca.crt", "10.0.0.2:4141")
    assert status == 200
    assert ctype == "application/x-pem-file"
    assert body == store.pem()
    assert "PRIVATE KEY" not in body

    # even a path that (wrongly) names a key + certificate file serves only the certificate
    combined = tmp_path / "combined.pem"
    combined.write_bytes(store.key_path.read_bytes() + store.cert_path.read_bytes())
    leaky = LanInfo(4142, combined, store.fingerprint_sha256())
    status, _, body = await _get(make_app(leaky), "/-/lan/ca.crt", "10.0.0.2:4141")
    assert status == 200
    assert body == store.pem()
    assert "PRIVATE KEY" not in body


async def test_ca_crt_changed_on_disk(make_app: Any, store: CertStore, tmp_path: Path) -> None:
    other = CertStore(tmp_path / "other").load()
    stale = LanInfo(4142, other.cert_path, store.fingerprint_sha256())
    status, _, body = await _get(make_app(stale), "/-/lan/ca.crt", "10.0.0.2:4141")
    assert status == 503
    assert "changed since start-up" in json.loads(body)["error"]["message"]
    missing = LanInfo(4142, tmp_path / "nope.crt", store.fingerprint_sha256())
    status, _, body = await _get(make_app(missing), "/-/lan/ca.crt", "10.0.0.2:4141")
    assert status == 503
    assert json.loads(body)["error"]["code"] == "ca_unavailable"


@pytest.mark.parametrize("shell", SHELLS)
async def test_env_script_per_shell(shell: str, make_app: Any, store: CertStore) -> None:
    status, ctype, script = await _get(
        make_app(_info(store)), f"/-/lan/env?shell={shell}", "10.0.0.2:4141"
    )
    assert status == 200
    assert ctype.startswith("text/plain")
    fp = store.fingerprint_sha256().replace(":", "")
    assert (fp if shell == "pwsh" else fp.lower()) in script
    assert "http://10.0.0.2:4141/-/lan/ca.crt" in script
    assert "http://10.0.0.2:4141/v1" in script
    assert "http://10.0.0.2:4142" in script
    assert "localhost,127.0.0.1,::1,10.0.0.2" in script
    for name in (*PROXY_VARS, *CA_VARS, "OPENAI_BASE_URL", "NO_PROXY", "NODE_EXTRA_CA_CERTS"):
        assert name in script
    assert "PRIVATE KEY" not in script
    assert "10.0.0.2_4141" in script  # its own cache folder per server


async def test_env_default_shell_is_sh(make_app: Any, store: CertStore) -> None:
    status, _, script = await _get(make_app(_info(store)), "/-/lan/env", "10.0.0.2:4141")
    assert status == 200
    assert "export OPENAI_BASE_URL=" in script


async def test_unknown_shell(make_app: Any, store: CertStore) -> None:
    status, ctype, body = await _get(
        make_app(_info(store)), "/-/lan/env?shell=csh", "10.0.0.2:4141"
    )
    assert status == 400 and ctype == "application/json"
    err = json.loads(body)["error"]
    assert err["param"] == "shell"
    assert err["type"] == "invalid_request_error"
    assert "csh" in err["message"]


@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_bad_host_header(host: str, make_app: Any, store: CertStore) -> None:
    app = make_app(_info(store))
    for path in ("/-/lan/bootstrap.json", "/-/lan/ca.crt", "/-/lan/env?shell=sh"):
        status, _, body = await _get(app, path, host)
        assert status == 400, (path, host)
        assert json.loads(body)["error"]["code"] == "invalid_host"


async def test_routes_absent_without_lan_mode(make_app: Any) -> None:
    app = make_app(None)
    for path in ("/-/lan/bootstrap.json", "/-/lan/ca.crt", "/-/lan/env"):
        status, _, body = await _get(app, path, "127.0.0.1:4141")
        assert status == 404
        assert "no route" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize("host", BAD_HOSTS + UNSENDABLE_HOSTS)
def test_parse_host_header_rejects(host: str) -> None:
    with pytest.raises(ValueError):
        parse_host_header(host)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", ("example.com", None)),
        ("EXAMPLE.com:8080", ("example.com", 8080)),
        ("192.168.0.1:4141", ("192.168.0.1", 4141)),
        ("[::1]:4141", ("::1", 4141)),
        ("[2001:DB8:0:0::1]", ("2001:db8::1", None)),
        ("my_host.local.", ("my_host.local.", None)),
    ],
)
def test_parse_host_header(value: str, expected: tuple[str, int | None]) -> None:
    assert parse_host_header(value) == expected


# The variables each shell's template sets (the templates spell the names out).
_SET_RE = {
    "sh": r"^\s*export (\w+)=",
    "fish": r"^\s*set -gx (\w+) ",
    "pwsh": r"^\s*\$env:(\w+) = ",
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("proxy_port", [4142, None])
def test_env_script_sets_the_proxy_env_variables(shell: str, proxy_port: int | None) -> None:
    # The LAN templates must set the same variables as `proxy env` (shellenv.env_vars),
    # less the proxy ones when the server runs no proxy.
    urls = LanURLs.build("10.0.0.2", 4141, proxy_port, "AB:CD")
    script = env_script(shell, urls)
    names = set(re.findall(_SET_RE.get(shell, _SET_RE["sh"]), script, re.MULTILINE))
    expected = {"OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", *env_vars("", "", "")}
    if proxy_port is None:
        expected -= {*PROXY_VARS, "NO_PROXY", "no_proxy"}
    assert names == expected
    assert "@@" not in script


@pytest.mark.parametrize(
    ("template", "values", "message"),
    [
        ("a=@@a@@ b=@@b@@\n", {"a": "1"}, "needs values for: b"),
        ("a=@@a@@\n", {"a": "1", "b": "2"}, "does not use: b"),
        ("a=@@A@@\n", {}, "malformed"),
        ("a=@@a\n", {"a": "1"}, "malformed"),
        # a value for a proxy-only line is unused when the proxy is off
        ("x\n@@proxy@@p=@@p@@\n", {"p": "1"}, "does not use: p"),
    ],
)
def test_template_fill_fails_loudly(template: str, values: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _fill(template, values, proxy=False)


def test_template_fill_keeps_proxy_lines_and_values_verbatim() -> None:
    template = "a=@@a@@\n@@proxy@@p=@@p@@\nend\n"
    assert _fill(template, {"a": "'@@x@@'", "p": "1"}, proxy=True) == "a='@@x@@'\np=1\nend\n"
    assert _fill(template, {"a": "2"}, proxy=False) == "a=2\nend\n"


def test_env_script_refuses_a_line_break_in_a_commented_url() -> None:
    urls = LanURLs.build("10.0.0.2", 4141, None, "AB:CD")
    bad = dataclasses.replace(urls, env_url="http://x/\nrm -rf ~")
    with pytest.raises(ValueError, match="line break"):
        env_script("sh", bad)


# ------------------------------------------------------------------ end to end


def _local(url: str) -> str:
    """``http://0.0.0.0:PORT`` (what a LAN bind prints) → ``http://127.0.0.1:PORT``."""
    return url.replace("0.0.0.0", "127.0.0.1")


def _run_sh(
    command: str, env: dict[str, str], shell: str = "sh"
) -> tuple[int, dict[str, str], str, str]:
    """Run ``command`` in ``shell``; its status, final environment, stdout and stderr."""
    marker = "\n__TOKN_ENV__\n"
    proc = subprocess.run(
        [shell, "-c", f'{command}\n_rc=$?\nprintf "{marker}"\nenv -0\nexit $_rc'],
        env=env,
        capture_output=True,
        timeout=60,
    )
    out = proc.stdout.decode()
    before, _, env_dump = out.partition(marker)
    final = dict(item.split("=", 1) for item in env_dump.split("\0") if "=" in item)
    return proc.returncode, final, before, proc.stderr.decode()


@pytest.fixture
def lan_daemon(fake: FakeUpstream, write_config: Callable[..., Path], daemon: Any) -> Any:
    # an open LAN server (the set-up with client keys: tests/clients/test_team_server.py)
    write_config(
        {"server": {"auth": "none"}, "accounts": [fake.copilot_account("alice", "gho_alice")]}
    )
    return daemon("--host", "0.0.0.0", "--with-proxy", "--proxy-port", "0")


def _banner_fingerprint(d: Any) -> str:
    m = re.search(r"CA SHA-256 fingerprint: ([0-9A-F:]+)", d.stdout_text)
    assert m, d.stdout_text
    return m.group(1)


@pytest.mark.parametrize("shell", ["sh"] + [s for s in ("bash", "zsh") if shutil.which(s)])
def test_env_script_in_a_real_shell(
    shell: str, lan_daemon: Any, cli_env: dict[str, str], tmp_path: Path
) -> None:
    d = lan_daemon
    api, proxy = _local(d.url), _local(d.proxy_url)
    boot = httpx.get(api + "/-/lan/bootstrap.json").json()
    assert boot["api_url"] == api and boot["proxy_url"] == proxy
    assert boot["ca_sha256"] == _banner_fingerprint(d)

    cache = tmp_path / "my cache" / "it's here"
    env = {**cli_env, "XDG_CACHE_HOME": str(cache)}
    # what the user types, then real clients using the result
    rc, final, out, err = _run_sh(
        f"eval \"$(curl -fsSL '{api}/-/lan/env?shell={shell}')\" || exit 9\n"
        'curl -sS --max-time 20 "$OPENAI_BASE_URL/models"; echo\n'
        "curl -sS --max-time 20 https://api.openai.com/v1/models; echo",
        env,
        shell,
    )
    assert rc == 0, err
    assert f"CA {boot['ca_sha256']} verified" in err
    folder = cache / "tokn-router" / "lan" / f"127.0.0.1_{api.rsplit(':', 1)[1]}"
    assert final["OPENAI_BASE_URL"] == api + "/v1"
    for name in PROXY_VARS:
        assert final[name] == proxy
    assert final["NO_PROXY"] == final["no_proxy"] == "localhost,127.0.0.1,::1"
    for name in CA_VARS:
        assert final[name] == str(folder / "ca-bundle.crt")
    assert final["NODE_EXTRA_CA_CERTS"] == str(folder / "ca.crt")
    served = httpx.get(api + "/-/lan/ca.crt").text
    assert (folder / "ca.crt").read_text() == served
    bundle = (folder / "ca-bundle.crt").read_text()
    assert served.strip() in bundle
    # the test CA from the caller's SSL_CERT_FILE survives the merge
    assert Path(cli_env["SSL_CERT_FILE"]).read_text().strip() in bundle
    assert sorted(p.name for p in folder.iterdir()) == ["ca-bundle.crt", "ca.crt"]
    # both clients were answered by the pool: directly and through the MITM proxy
    direct, proxied = (json.loads(line) for line in out.strip().splitlines())
    assert "gpt-4.1" in {m["id"] for m in direct["data"]}
    assert "gpt-4.1" in {m["id"] for m in proxied["data"]}


def _tool_path(tmp_path: Path, tools: list[str]) -> str:
    """A PATH holding only ``tools`` (to exercise the fallbacks)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


BASE_TOOLS = ["sed", "tr", "cut", "cat", "mkdir", "mv", "rm", "mktemp", "env", "base64"]
FALLBACKS = [
    pytest.param(["curl", "sha256sum"], id="curl-base64-sha256sum"),
    pytest.param(["curl", "shasum"], id="curl-base64-shasum"),
    pytest.param(["wget", "openssl"], id="wget-openssl"),
]


@pytest.mark.parametrize("extra", FALLBACKS)
def test_env_script_fallback_tools(
    extra: list[str], lan_daemon: Any, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # part of this project's machine image (Debian): a missing one is a broken setup,
    # not a reason to pass silently
    missing = [t for t in extra if not shutil.which(t)]
    assert not missing, f"tools the LAN script falls back to are missing: {missing}"
    api = _local(lan_daemon.url)
    script = httpx.get(api + "/-/lan/env?shell=sh").text
    env = {
        **cli_env,
        "PATH": _tool_path(tmp_path, BASE_TOOLS + extra),
        "HOME": str(tmp_path / "home"),
        "TOKN_TEST_SCRIPT": script,
    }
    env.pop("XDG_CACHE_HOME", None)
    rc, final, _out, err = _run_sh('eval "$TOKN_TEST_SCRIPT"', env, "/bin/sh")
    assert rc == 0, err
    assert "verified" in err
    folder = tmp_path / "home" / ".cache" / "tokn-router" / "lan"
    (server_dir,) = folder.iterdir()
    assert final["SSL_CERT_FILE"] == str(server_dir / "ca-bundle.crt")
    assert (server_dir / "ca.crt").read_text() == httpx.get(api + "/-/lan/ca.crt").text


def test_env_script_rejects_a_tampered_fingerprint(
    lan_daemon: Any, cli_env: dict[str, str], tmp_path: Path
) -> None:
    api = _local(lan_daemon.url)
    script = httpx.get(api + "/-/lan/env?shell=sh").text
    want = _banner_fingerprint(lan_daemon).replace(":", "").lower()
    assert want in script
    tampered = script.replace(want, "ab" * 32)
    cache = tmp_path / "cache"
    env = {**cli_env, "XDG_CACHE_HOME": str(cache), "TOKN_TEST_SCRIPT": tampered}
    rc, final, _out, err = _run_sh('eval "$TOKN_TEST_SCRIPT"', env)
    assert rc != 0
    assert "CA FINGERPRINT MISMATCH" in err
    assert _banner_fingerprint(lan_daemon) in err  # what was actually served
    for name in ("OPENAI_BASE_URL", "HTTPS_PROXY", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"):
        assert final.get(name) == cli_env.get(name), name  # untouched
    assert not [n for n in final if n.startswith("_trl_")]
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []  # nothing unverified stays on disk


def test_private_key_is_never_served(lan_daemon: Any, env_home: Any) -> None:
    api = _local(lan_daemon.url)
    key_pem = (env_home.state_dir / "ca" / "ca.key").read_bytes()
    key_der_head = serialization.load_pem_private_key(key_pem, None).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths = [
        "/-/lan/bootstrap.json",
        "/-/lan/ca.crt",
        "/-/lan/env?shell=sh",
        "/-/lan/env?shell=pwsh",
        "/-/lan/ca.key",
        "/-/lan/../ca/ca.key",
        "/-/lan/ca.crt/../ca.key",
        "/-/lan/ca-bundle.crt",
    ]
    for path in paths:
        r = httpx.get(api + path)
        assert "PRIVATE KEY" not in r.text, path
        assert key_pem.strip().decode() not in r.text
        assert key_der_head not in r.content
        if "ca.key" in path or "bundle" in path:
            assert r.status_code == 404, path


def test_lan_without_proxy_and_loopback_without_lan(
    fake: FakeUpstream, daemon: Any, cli_env: dict[str, str], tmp_path: Path
) -> None:
    d = daemon("--host", "0.0.0.0")
    api = _local(d.url)
    assert httpx.get(api + "/-/lan/bootstrap.json").json()["proxy_url"] is None
    env = {**cli_env, "XDG_CACHE_HOME": str(tmp_path / "c")}
    env = {k: v for k, v in env.items() if k.lower() != "no_proxy"}
    rc, final, _out, err = _run_sh(f"eval \"$(curl -fsSL '{api}/-/lan/env')\"", env)
    assert rc == 0, err
    assert final["OPENAI_BASE_URL"] == api + "/v1"
    assert not any(v in final for v in (*PROXY_VARS, "NO_PROXY"))
    assert Path(final["SSL_CERT_FILE"]).is_file()

    local = daemon()  # loopback: not LAN mode, the routes do not exist
    assert httpx.get(local.url + "/-/lan/bootstrap.json").status_code == 404
    assert os.path.exists(final["NODE_EXTRA_CA_CERTS"])

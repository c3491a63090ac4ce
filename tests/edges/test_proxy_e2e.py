"""The MITM proxy as users run it: real clients configured by `tokn-router proxy env`."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import trustme

from tests.fakes import FakeUpstream
from tests.helpers import CACHED_LEDGER, CACHED_USAGE, PROXY_ENV_NAMES, cached_usage_of, ledger_rows

CHAT = "/chat/completions"
OPENAI_CHAT = "https://api.openai.com/v1/chat/completions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proxy_env(run_cli, proxy_url: str) -> dict[str, str]:
    """Evaluate `tokn-router proxy env --shell sh` in sh; return the variables it set."""
    script = run_cli("proxy", "env", "--shell", "sh")
    assert script.returncode == 0, script.stderr
    out = subprocess.run(
        ["sh", "-c", script.stdout + "\nenv -0"], capture_output=True, check=True
    ).stdout.decode()
    env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    assert env["HTTPS_PROXY"].rstrip("/") == proxy_url
    return env


def client_env(cli_env: dict[str, str], penv: dict[str, str]) -> dict[str, str]:
    env = dict(cli_env)
    for k in ("NO_PROXY", "no_proxy"):
        env.pop(k, None)
    keys = PROXY_ENV_NAMES
    env.update({k: penv[k] for k in keys if k in penv})
    return env


def curl(env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


@pytest.fixture
def routed(fake: FakeUpstream, write_config, daemon, run_cli, cli_env):
    write_config(
        {
            "proxy_mode": {"port": free_port()},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon("--with-proxy")
    penv = proxy_env(run_cli, d.proxy_url)
    return d, client_env(cli_env, penv)


def test_curl_reaches_openai_host_answered_by_pool(fake: FakeUpstream, routed, env_home) -> None:
    d, env = routed
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "via proxy"}]}
    r = curl(
        env,
        OPENAI_CHAT,
        "-H",
        "content-type: application/json",
        "-H",
        "authorization: Bearer sk-client-secret",
        "-d",
        json.dumps(body),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["choices"][0]["message"]["content"] == "Echo: via proxy"
    rec = fake.last(CHAT)
    assert rec.login == "alice"
    assert "sk-client-secret" not in json.dumps(rec.headers)  # client credentials dropped
    # models through the proxy too
    models = json.loads(curl(env, "https://api.openai.com/v1/models").stdout)
    assert any(m["id"] == "gpt-4.1" for m in models["data"])
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    rows = [r for r in ledger_rows(env_home.state_dir) if r["endpoint"] == "/v1/chat/completions"]
    params = json.loads(rows[-1]["params_json"])
    assert params["source"] == "proxy" and params["route_mode"] == "route"


def test_openai_sdk_through_proxy_streams(fake: FakeUpstream, routed) -> None:
    _, env = routed
    env = {**env, "OPENAI_API_KEY": "sk-sdk", "PYTHONPATH": ""}
    code = (
        "from openai import OpenAI\n"
        "c = OpenAI(max_retries=0)\n"
        "s = c.chat.completions.create(model='gpt-4.1', stream=True,"
        " messages=[{'role': 'user', 'content': 'sdk stream'}])\n"
        "print(''.join(x.choices[0].delta.content or '' for x in s if x.choices))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Echo: sdk stream"


def test_streaming_through_mitm_is_unbuffered(
    fake: FakeUpstream, write_config, daemon, run_cli, cli_env
) -> None:
    # a short keep-alive lets the relay notice the client leaving while upstream is silent
    write_config(
        {
            "server": {"sse_keepalive_secs": 0.3},
            "proxy_mode": {"port": free_port()},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon("--with-proxy")
    env = client_env(cli_env, proxy_env(run_cli, d.proxy_url))
    fake.script(CHAT, chunks=5, hang_after=1)
    proxy = env["HTTPS_PROXY"]
    ctx_file = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    body = {"model": "gpt-4.1", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with (
        httpx.Client(proxy=proxy, verify=ctx_file, timeout=20) as c,
        c.stream("POST", OPENAI_CHAT, json=body) as r,
    ):
        seen = ""
        for line in r.iter_lines():
            seen += line
            if "chunk0" in line:
                break  # arrived although upstream is still holding the rest
    assert "chunk0" in seen
    fake.wait_disconnect(1)


def test_non_intercepted_host_is_tunnelled_with_its_own_certificate(
    fake_tls: FakeUpstream, routed, ca_bundle: Path
) -> None:
    _, env = routed
    # 127.0.0.1:PORT is not intercepted: the client must see the fake's trustme cert
    with httpx.Client(
        proxy=env["HTTPS_PROXY"],
        verify=ssl.create_default_context(cafile=str(ca_bundle)),
        timeout=20,
    ) as c:
        r = c.get(fake_tls.url + "/echo")
    assert r.status_code == 200
    # and our CA is not involved: trusting only the tokn-router CA fails
    with (
        httpx.Client(
            proxy=env["HTTPS_PROXY"],
            verify=ssl.create_default_context(cafile=env["NODE_EXTRA_CA_CERTS"]),
            timeout=20,
        ) as c,
        pytest.raises(httpx.ConnectError),
    ):
        c.get(fake_tls.url + "/echo")


def test_passthrough_keeps_client_credentials_and_records_usage(
    fake_tls: FakeUpstream, write_config, daemon, run_cli, cli_env, env_home
) -> None:
    port = fake_tls.port
    write_config(
        {
            "proxy_mode": {
                "intercept_hosts": [f"localhost:{port}"],
                "route_mode": "passthrough",
                "port": free_port(),
            }
        }
    )
    d = daemon("--with-proxy")
    env = client_env(cli_env, proxy_env(run_cli, d.proxy_url))
    token, _ = fake_tls.issue_copilot_token("gho_carol")
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "mine"}]}
    # `proxy env` exempts localhost through NO_PROXY; this host is meant to go through it
    r = curl(
        env,
        f"https://localhost:{port}/chat/completions",
        "--noproxy",
        "",
        "-H",
        f"authorization: Bearer {token}",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps(body),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["choices"][0]["message"]["content"] == "Echo: mine"
    rec = fake_tls.last(CHAT)
    assert rec.token == token and rec.login == "carol"
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    rows = ledger_rows(env_home.state_dir)
    (row,) = [r for r in rows if r["endpoint"] == "/chat/completions"]
    assert json.loads(row["params_json"])["route_mode"] == "passthrough"
    assert json.loads(row["params_json"])["source"] == "proxy"
    assert json.loads(row["usage_json"])["input"] == rec.usage["prompt_tokens"]


def test_switch_injects_pooled_credential(
    make_fake,
    trustme_ca: trustme.CA,
    fake: FakeUpstream,
    write_config,
    daemon,
    run_cli,
    cli_env,
    http_proxy,
) -> None:
    # "api.githubcopilot.com" is served by a TLS fake reached through an outbound proxy
    # that maps the name (and port 443) to it: nothing leaves the machine.
    gh = make_fake(tls_cert=trustme_ca.issue_cert("api.githubcopilot.com"))
    http_proxy.hosts["api.githubcopilot.com:443"] = f"127.0.0.1:{gh.port}"
    acc = gh.copilot_account("pooled", "gho_pooled", base_url="https://api.githubcopilot.com")
    acc["refresh_url"] = fake.url + "/copilot_internal/v2/token"
    token, exp = gh.issue_copilot_token("gho_pooled")
    acc.update(access_token=token, access_token_expires_at=exp)
    write_config(
        {
            "proxy": {"url": http_proxy.url, "no_proxy": ["127.0.0.1"]},
            "proxy_mode": {"port": free_port()},
            "accounts": [acc],
        }
    )
    d = daemon("--with-proxy", "--proxy-route-mode", "switch")
    env = client_env(cli_env, proxy_env(run_cli, d.proxy_url))
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "switched"}]}
    r = curl(
        env,
        "https://api.githubcopilot.com/chat/completions",
        "-H",
        "authorization: Bearer client-token",
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps(body),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["choices"][0]["message"]["content"] == "Echo: switched"
    rec = gh.last(CHAT)
    assert rec.token == token  # the pooled account's credential, not the client's
    assert rec.header("editor-version")  # identity headers injected
    # a host that maps to no provider with accounts: 400
    r = curl(
        env,
        OPENAI_CHAT,
        "-H",
        "content-type: application/json",
        "-d",
        json.dumps(body),
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
    )
    assert r.stdout.strip() == "400"


def test_route_mode_precedence(
    fake: FakeUpstream, write_config, daemon, run_cli, cli_env, env_home
) -> None:
    write_config(
        {
            "proxy_mode": {
                "route_mode": "route",
                "port": free_port(),
                "provider_modes": {"openai": "switch"},
            },
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon("--with-proxy")
    env = client_env(cli_env, proxy_env(run_cli, d.proxy_url))
    body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "p"}]})
    code = lambda *extra: curl(  # noqa: E731
        env,
        OPENAI_CHAT,
        "-H",
        "content-type: application/json",
        "-d",
        body,
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        *extra,
    ).stdout.strip()
    assert code() == "400"  # provider_modes: openai → switch, no openai accounts
    assert code("-H", "X-Route-Mode: route") == "200"  # header wins
    port = d.proxy_url.rsplit(":", 1)[1]
    assert code("--proxy", f"http://route@127.0.0.1:{port}") == "200"  # proxy user name
    assert code("-H", "X-Route-Mode: bogus") == "400"
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    rows = ledger_rows(env_home.state_dir)
    modes = [json.loads(r["params_json"])["route_mode"] for r in rows]
    # every intercepted request has its row, refusals included
    assert modes == ["switch", "route", "route", "bogus"]
    assert all(json.loads(r["params_json"])["source"] == "proxy" for r in rows)
    assert [r["status"] for r in rows] == [400, 200, 200, 400]


def test_bad_clients_leave_the_proxy_serving(fake: FakeUpstream, routed) -> None:
    d, env = routed
    host, port = "127.0.0.1", int(d.proxy_url.rsplit(":", 1)[1])
    garbage = socket.create_connection((host, port))
    garbage.sendall(b"\x16\x03\x01garbage\r\n\r\n")
    silent = socket.create_connection((host, port))
    half = socket.create_connection((host, port))
    half.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
    half.recv(100)
    half.sendall(b"\x16\x03\x01\x00")  # start a handshake, then vanish
    half.close()
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "still here"}]}
    r = curl(env, OPENAI_CHAT, "-H", "content-type: application/json", "-d", json.dumps(body))
    assert json.loads(r.stdout)["choices"][0]["message"]["content"] == "Echo: still here"
    # help page on the proxy port
    assert "tokn-router" in httpx.get(d.proxy_url + "/").text
    garbage.close()
    silent.close()


def test_proxy_start_alone_and_sigterm(
    fake: FakeUpstream, write_config, daemon, run_cli, cli_env
) -> None:
    write_config(
        {
            "proxy_mode": {"port": free_port()},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon(cmd=("proxy", "start"), ready=False)
    url = d.wait_output(r"proxy listening on (http://\S+)", timeout=20).group(1)
    env = client_env(cli_env, proxy_env(run_cli, url))
    fake.script(CHAT, chunks=6, chunk_delay=0.1)
    result: list[str] = []
    first = threading.Event()

    def consume() -> None:
        with (
            httpx.Client(
                proxy=env["HTTPS_PROXY"],
                verify=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]),
                timeout=30,
            ) as c,
            c.stream(
                "POST",
                OPENAI_CHAT,
                json={
                    "model": "gpt-4.1",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                },
            ) as r,
        ):
            for line in r.iter_lines():
                result.append(line)
                first.set()

    t = threading.Thread(target=consume)
    t.start()
    assert first.wait(20)
    d.send_signal(signal.SIGTERM)
    t.join(30)
    assert d.wait_exit(20) == 0
    assert "chunk5" in "".join(result)


def test_non_loopback_proxy_requires_client_keys(write_config, daemon) -> None:
    write_config({"proxy_mode": {"host": "0.0.0.0"}})
    d = daemon("--with-proxy", "--proxy-port", "0")
    port = int(d.proxy_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        head = s.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 407 ")
    assert "proxy-authenticate: basic" in head.lower()


def test_intercept_hosts_follow_a_config_edit(
    fake_tls: FakeUpstream, write_config, daemon, run_cli, cli_env, env_home, wait_for
) -> None:
    port = fake_tls.port
    cfg = {"proxy_mode": {"route_mode": "passthrough", "port": free_port()}}
    write_config(cfg)
    d = daemon("--with-proxy")
    env = client_env(cli_env, proxy_env(run_cli, d.proxy_url))
    url = f"https://localhost:{port}/echo"
    assert curl(env, url, "--noproxy", "").returncode == 0  # tunnelled, not intercepted
    pos = d.output_pos("stderr")
    cfg["proxy_mode"]["intercept_hosts"] = [f"localhost:{port}"]
    write_config(cfg)
    d.send_signal(signal.SIGHUP)
    d.wait_output(r"config reloaded", stream="stderr", start=pos)
    assert curl(env, url, "--noproxy", "").returncode == 0
    # now intercepted (passthrough): the request has its ledger row
    wait_for(lambda: any(r["endpoint"] == "/echo" for r in _rows_or_empty(env_home.state_dir)))


def _rows_or_empty(state_dir: Path) -> list[dict]:
    try:
        return ledger_rows(state_dir)
    except sqlite3.OperationalError:
        return []


def test_passthrough_reads_anthropic_cache_usage_like_the_api(
    fake_tls: FakeUpstream, write_config, daemon, run_cli, cli_env, env_home
) -> None:
    """The same native Messages answer, served by the pool and passed through: same row."""
    port = fake_tls.port
    write_config(
        {
            "proxy_mode": {
                "intercept_hosts": [f"localhost:{port}"],
                "route_mode": "passthrough",
                "port": free_port(),
            },
            "accounts": [fake_tls.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon("--with-proxy")
    env = client_env(cli_env, proxy_env(run_cli, d.proxy_url))
    fake_tls.script("/v1/messages", usage=CACHED_USAGE, times=None)
    token, _ = fake_tls.issue_copilot_token("gho_carol")
    body = {
        "model": "claude-sonnet-4.5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "cache me"}],
    }
    verify = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    url = f"https://localhost:{port}/v1/messages"
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=verify, timeout=20) as c:
        for stream in (False, True):
            r = c.post(
                url, json={**body, "stream": stream}, headers={"authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200, r.text
    # the same answers served by the pool on the API listener
    for stream in (False, True):
        r = httpx.post(d.url + "/v1/messages", json={**body, "stream": stream}, timeout=20)
        assert r.status_code == 200, r.text
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    rows = ledger_rows(env_home.state_dir)
    sources = [(json.loads(r["params_json"])["source"], r["endpoint"]) for r in rows]
    assert sources == [("proxy", "/v1/messages")] * 2 + [("api", "/v1/messages")] * 2
    assert [cached_usage_of(r) for r in rows] == [CACHED_LEDGER] * 4

"""Daemon lifecycle, request guards, disconnects, signals, reloads and outbound proxies."""

from __future__ import annotations

import json
import signal
import socket
import threading

import httpx
import pytest

from tests.fakes import FakeUpstream

CHAT = "/chat/completions"


def chat_body(**extra: object) -> dict:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.fixture
def one_account(fake: FakeUpstream, write_config) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})


def _err(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_request_errors_are_openai_shaped(one_account: None, daemon) -> None:
    d = daemon()
    url = d.url + "/v1/chat/completions"
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in _err(r)["message"]
    r = httpx.post(url, json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and _err(r)["param"] == "model"
    r = httpx.post(url, json={"model": "gpt-4.1"})
    assert r.status_code == 400 and _err(r)["param"] == "messages"
    r = httpx.post(url, content=b"model=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    _err(r)
    r = httpx.post(url, json=chat_body(model="no-such-model"))
    assert r.status_code == 404
    err = _err(r)
    assert err["code"] == "model_not_found" and "no-such-model" in err["message"]
    r = httpx.post(url, json=[1, 2])
    assert r.status_code == 400
    r = httpx.get(d.url + "/v1/nothing-here")
    assert r.status_code == 404
    _err(r)
    r = httpx.post(url, json=chat_body(), headers={"X-Route-Mode": "passthrough"})
    assert r.status_code == 400 and "proxy" in _err(r)["message"]


def test_body_over_limit_is_413(fake: FakeUpstream, write_config, daemon) -> None:
    write_config(
        {
            "server": {"max_body_bytes": 4096},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon()
    big = chat_body(messages=[{"role": "user", "content": "x" * 10000}])
    r = httpx.post(d.url + "/v1/chat/completions", json=big)
    assert r.status_code == 413
    _err(r)
    assert fake.requests_to(CHAT) == []


def test_default_limit_is_32_mib(one_account: None, daemon) -> None:
    d = daemon()
    payload = (
        b'{"model":"gpt-4.1","messages":[{"role":"user","content":"'
        + b"x" * (33 * 1024 * 1024)
        + b'"}]}'
    )
    r = httpx.post(
        d.url + "/v1/chat/completions",
        content=payload,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413


def test_no_accounts_starts_and_explains(write_config, daemon) -> None:
    write_config({})
    d = daemon()
    assert "tokn-router login" in d.stdout_text
    assert httpx.get(d.url + "/v1/models").json() == {"object": "list", "data": []}
    r = httpx.post(d.url + "/v1/chat/completions", json=chat_body())
    assert r.status_code == 503
    assert "tokn-router login" in _err(r)["message"]
    assert r.headers["retry-after"]


def test_dns_rebinding_guard(one_account: None, daemon) -> None:
    d = daemon()
    r = httpx.get(d.url + "/healthz", headers={"Host": "evil.example.com"})
    assert r.status_code == 403
    for host in ("localhost", "127.0.0.1", "[::1]", f"localhost:{d.url.rsplit(':', 1)[1]}"):
        assert httpx.get(d.url + "/healthz", headers={"Host": host}).status_code == 200


def test_malformed_host_header_is_a_clean_400(one_account: None, daemon) -> None:
    d = daemon()
    r = httpx.get(d.url + "/healthz", headers={"Host": "a" * 70})
    assert r.status_code == 400
    assert _err(r)["code"] == "invalid_host"
    assert "Traceback" not in d.stderr_text


def test_non_loopback_bind_requires_client_keys(one_account: None, daemon) -> None:
    d = daemon("--host", "0.0.0.0")
    assert "client keys required (0 active" in d.stdout_text
    port = d.url.rsplit(":", 1)[1]
    r = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Host": "192.0.2.1"})
    assert r.status_code == 401 and _err(r)["code"] == "invalid_api_key"
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": "192.0.2.1"})
    assert r.status_code == 200  # no Host guard on a deliberate remote bind


def test_old_insecure_allow_remote_flag_is_accepted(one_account: None, daemon) -> None:
    d = daemon("--host", "0.0.0.0", "--insecure-allow-remote")
    assert "--insecure-allow-remote is no longer needed" in d.stdout_text
    port = d.url.rsplit(":", 1)[1]
    r = httpx.get(f"http://127.0.0.1:{port}/v1/models")
    assert r.status_code == 401  # it no longer opens the server to everyone


def test_bind_failure_is_one_line(one_account: None, daemon) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = daemon("--port", str(port), ready=False, cmd=("serve",))
        assert d.wait_exit(15) == 1
    err = [line for line in d.stderr_text.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0]
    assert "Traceback" not in d.stderr_text


def test_client_disconnect_cancels_upstream(fake: FakeUpstream, write_config, daemon) -> None:
    # upstream falls silent after two pieces: the keep-alive write notices the client is gone
    write_config(
        {
            "server": {"sse_keepalive_secs": 0.3},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon()
    fake.script(CHAT, chunks=6, hang_after=2)
    with httpx.stream(
        "POST", d.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=20
    ) as r:
        it = r.iter_lines()
        got = [next(it) for _ in range(3)]
        assert any("chunk0" in line for line in got)
    # the client went away: the daemon must drop the upstream request at once
    fake.wait_disconnect(1, timeout=10)


def test_disconnect_while_streaming_closes_upstream(
    fake: FakeUpstream, one_account: None, daemon
) -> None:
    d = daemon()
    fake.script(CHAT, chunks=200, chunk_delay=0.05)
    with httpx.stream(
        "POST", d.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=20
    ) as r:
        it = r.iter_lines()
        next(it)
    fake.wait_disconnect(1, timeout=10)
    assert not fake.last(CHAT).completed


def test_mid_stream_drop_ends_with_an_error_event(
    fake: FakeUpstream, one_account: None, daemon
) -> None:
    d = daemon()
    fake.script(CHAT, chunks=6, drop_after=2)
    with httpx.stream(
        "POST", d.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=20
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    last = json.loads(lines[-1][6:])
    assert "error" in last and "upstream" in last["error"]["message"]
    assert "chunk0" in "".join(lines)


def test_openai_sdk_sees_mid_stream_failure(fake: FakeUpstream, one_account: None, daemon) -> None:
    import openai

    d = daemon()
    fake.script(CHAT, chunks=6, drop_after=2)
    client = openai.OpenAI(base_url=d.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(**chat_body(stream=True)):
            pass


def test_sigterm_lets_in_flight_stream_finish(
    fake: FakeUpstream, one_account: None, daemon, env_home
) -> None:
    d = daemon()
    fake.script(CHAT, chunks=8, chunk_delay=0.15)
    lines: list[str] = []
    first = threading.Event()

    def consume() -> None:
        with httpx.stream(
            "POST", d.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=30
        ) as r:
            for line in r.iter_lines():
                lines.append(line)
                if "chunk0" in line:
                    first.set()

    t = threading.Thread(target=consume)
    t.start()
    assert first.wait(15)
    d.send_signal(signal.SIGTERM)
    t.join(30)
    assert d.wait_exit(20) == 0
    text = "\n".join(lines)
    assert "chunk7" in text and "data: [DONE]" in text
    # the stream that finished during the grace period has its ledger row, usage included
    import sqlite3

    conn = sqlite3.connect(env_home.state_dir / "usage.db")
    try:
        (status, usage) = conn.execute("SELECT status, usage_json FROM requests").fetchone()
    finally:
        conn.close()
    assert status == 200
    assert json.loads(usage)["output"] == fake.last(CHAT).usage["completion_tokens"]


def test_sighup_reloads_accounts(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    write_config(
        {
            "accounts": [
                fake.copilot_account("alice", "gho_alice"),
                fake.copilot_account("bob", "gho_bob"),
            ]
        }
    )
    pos = d.output_pos("stderr")
    d.send_signal(signal.SIGHUP)
    d.wait_output(r"accounts reloaded: \+bob", stream="stderr", start=pos)
    ids = {a["id"] for a in httpx.get(d.url + "/healthz").json()["accounts"]}
    assert ids == {"alice", "bob"}
    for _ in range(4):
        httpx.post(d.url + "/v1/chat/completions", json=chat_body(), timeout=20)
    assert {r.login for r in fake.requests_to(CHAT)} == {"alice", "bob"}


def test_config_edit_reloads_without_dropping_streams(
    fake: FakeUpstream, write_config, daemon
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    fake.script(CHAT, chunks=6, chunk_delay=0.2)
    with httpx.stream(
        "POST", d.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=30
    ) as r:
        it = r.iter_lines()
        next(it)
        pos = d.output_pos("stderr")
        write_config({"accounts": [fake.copilot_account("bob", "gho_bob")]})
        d.wait_output(r"accounts reloaded", stream="stderr", start=pos)
        rest = "\n".join(it)
    assert "chunk5" in rest and "[DONE]" in rest
    httpx.post(d.url + "/v1/chat/completions", json=chat_body(), timeout=20)
    assert fake.last(CHAT).login == "bob"


def test_broken_config_edit_keeps_serving(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon()
    pos = d.output_pos("stderr")
    write_config("[server\nbroken")
    d.wait_output(r"config reload failed", stream="stderr", start=pos)
    r = httpx.post(d.url + "/v1/chat/completions", json=chat_body(), timeout=20)
    assert r.status_code == 200


@pytest.mark.parametrize("kind", ["http", "socks5", "socks5h"])
def test_outbound_proxy_carries_upstream_traffic(
    fake: FakeUpstream, write_config, daemon, http_proxy, socks_proxy, kind: str
) -> None:
    proxy = http_proxy if kind == "http" else socks_proxy
    # a name only the proxy can resolve proves the proxy did the connecting
    proxy.hosts["copilot.upstream.test"] = "127.0.0.1"
    base = f"http://copilot.upstream.test:{fake.port}"
    acc = fake.copilot_account(
        "alice", "gho_alice", base_url=base, refresh_url=base + "/copilot_internal/v2/token"
    )
    url = proxy.url if kind != "socks5h" else proxy.url.replace("socks5://", "socks5h://")
    write_config({"proxy": {"url": url}, "accounts": [acc]})
    d = daemon()
    r = httpx.post(d.url + "/v1/chat/completions", json=chat_body(), timeout=20)
    assert r.status_code == 200, r.text
    hosts = {rec.host for rec in proxy.records}
    assert "copilot.upstream.test" in hosts


def test_no_proxy_flag_and_list_bypass(
    fake: FakeUpstream, write_config, daemon, http_proxy
) -> None:
    write_config(
        {
            "proxy": {"url": http_proxy.url, "no_proxy": ["127.0.0.1"]},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon()
    assert (
        httpx.post(d.url + "/v1/chat/completions", json=chat_body(), timeout=20).status_code == 200
    )
    assert http_proxy.records == []
    write_config(
        {
            "proxy": {"url": "http://127.0.0.1:9"},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d2 = daemon("--no-proxy")
    assert (
        httpx.post(d2.url + "/v1/chat/completions", json=chat_body(), timeout=20).status_code == 200
    )


def test_tls_upstream_trusts_ssl_cert_file(fake_tls: FakeUpstream, write_config, daemon) -> None:
    acc = fake_tls.copilot_account("alice", "gho_alice")
    write_config({"accounts": [acc]})
    d = daemon(env={"TOKN_ROUTER_GITHUB_API_URL": fake_tls.url})
    r = httpx.post(d.url + "/v1/chat/completions", json=chat_body(), timeout=20)
    assert r.status_code == 200, r.text


def test_compressed_upstream_stream_is_decoded(
    fake: FakeUpstream, one_account: None, daemon
) -> None:
    # we ask for identity; an upstream that compresses anyway must still work
    import gzip

    events = (
        b'data: {"choices":[{"delta":{"content":"zip"},"index":0}],"model":"gpt-4.1"}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    fake.script(
        CHAT,
        status=200,
        body=gzip.compress(events),
        headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
    )
    d = daemon()
    with httpx.stream(
        "POST", d.url + "/v1/chat/completions", json=chat_body(stream=True), timeout=20
    ) as r:
        assert "content-encoding" not in r.headers
        text = r.read().decode()
    assert '"content":"zip"' in text and "[DONE]" in text
    assert '"usage"' not in text  # the usage chunk was still found and hidden


# ------------------------------------------------------------------ shutdown


def test_sigterm_with_idle_keepalive_clients_exits_at_once(
    fake: FakeUpstream, one_account: None, daemon, env_home
) -> None:
    # agents keep their connections open between requests: that must not hold the
    # shutdown for shutdown_grace_secs (10 s), on either listener
    import time

    import openai

    from tests.helpers import ledger_rows

    d = daemon("--with-proxy", "--proxy-port", "0")
    api = openai.OpenAI(base_url=d.url + "/v1", api_key="x", max_retries=0)
    proxy = httpx.Client(base_url=d.proxy_url, timeout=20)
    idle = socket.create_connection(("127.0.0.1", int(d.proxy_url.rsplit(":", 1)[1])))
    try:
        api.chat.completions.create(**chat_body())
        assert proxy.get("/").status_code == 200  # the proxy's help page, kept alive
        started = time.monotonic()
        d.send_signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        took = time.monotonic() - started
    finally:
        api.close()
        proxy.close()
        idle.close()
    assert took < 1.0, f"SIGTERM took {took:.1f}s with idle keep-alive clients"
    assert [r["status"] for r in ledger_rows(env_home.state_dir)] == [200]


def test_idle_keepalive_connection_is_closed_on_shutdown(one_account: None, daemon) -> None:
    # the server closes the idle connection itself (hypercorn's keep-alive timer
    # works again), so the client sees EOF, not a reset at process exit
    d = daemon()
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += s.recv(65536)
        head, _, body = got.partition(b"\r\n\r\n")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(
                b":"
            )[1]
        )
        while len(body) < length:
            body += s.recv(65536)
        d.send_signal(signal.SIGTERM)
        rest = s.recv(65536)  # blocks until the server closes the connection
        assert rest == b""
    assert d.wait_exit(10) == 0


def test_shutdown_cut_streams_end_with_error_events(
    fake: FakeUpstream, write_config, daemon, env_home
) -> None:
    from tests.helpers import ledger_rows

    write_config(
        {
            "server": {"shutdown_grace_secs": 1},
            "accounts": [fake.copilot_account("alice", "gho_alice")],
        }
    )
    d = daemon()
    # each upstream sends two deltas, then falls silent: still in flight at SIGTERM
    for path in (CHAT, "/v1/messages", "/responses"):
        fake.script(path, chunks=6, hang_after=2)
    requests = {
        "chat": ("/v1/chat/completions", chat_body(stream=True)),
        "messages": (
            "/v1/messages",
            {
                "model": "claude-sonnet-4.5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            },
        ),
        "responses": ("/v1/responses", {"model": "gpt-4.1", "input": "hi", "stream": True}),
    }
    texts: dict[str, str] = {}
    started = threading.Barrier(len(requests) + 1, timeout=20)

    def consume(name: str) -> None:
        path, body = requests[name]
        with httpx.stream("POST", d.url + path, json=body, timeout=30) as r:
            assert r.status_code == 200
            it = r.iter_bytes()
            first = next(it)
            started.wait()
            texts[name] = (first + b"".join(it)).decode()

    threads = [threading.Thread(target=consume, args=(n,)) for n in requests]
    for t in threads:
        t.start()
    started.wait()
    d.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert d.wait_exit(20) == 0
    assert set(texts) == set(requests)

    def events(text: str) -> list[tuple[str | None, dict]]:
        out = []
        for block in text.split("\n\n"):
            name = next((ln[7:] for ln in block.splitlines() if ln.startswith("event: ")), None)
            data = next((ln[6:] for ln in block.splitlines() if ln.startswith("data: ")), None)
            if data and data != "[DONE]":
                out.append((name, json.loads(data)))
        return out

    chat_last = events(texts["chat"])[-1][1]
    assert chat_last["error"]["message"] == "server shutting down"
    name, data = events(texts["messages"])[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["message"] == "server shutting down"
    name, data = events(texts["responses"])[-1]
    assert name == "response.failed"
    assert data["response"]["error"]["message"] == "server shutting down"
    rows = ledger_rows(env_home.state_dir)
    assert len(rows) == 3
    assert {r["request_error"] for r in rows} == {"server shutting down"}

"""A team server: client keys on both listeners, their limits, attribution and /metrics.

Real daemons (``tokn-router serve``) against the fake upstream; keys made with the
real ``tokn-router keys`` commands while the daemon runs; clients are raw sockets,
httpx, the openai and anthropic SDKs, and curl configured by the LAN env script.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeUpstream
from tests.helpers import ledger_rows, stop
from tokn_router.clients.keys import KeyStore

CHAT_BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hello"}]}
MESSAGES_BODY = {
    "model": "claude-sonnet-4.5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hello"}],
}


def _local(url: str) -> str:
    return url.replace("0.0.0.0", "127.0.0.1")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _new_key(run_cli: Any, name: str, *flags: str) -> str:
    r = run_cli("keys", "create", name, *flags)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert re.fullmatch(r"tkr_[A-Za-z0-9_-]{43}", key)
    return key


def _bogus_key() -> str:
    return "tkr_" + secrets.token_urlsafe(32)


def _openai_error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]


def _anthropic_error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert body["type"] == "error", body
    return body["error"]


def _metrics(
    url: str, key: str | None = None
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted labels: value}}`` of ``/metrics``, read by the official parser."""
    r = httpx.get(url + "/metrics", headers=_bearer(key) if key else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _sample(m: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        v for ls, v in m.get(name, {}).items() if all((k, val) in ls for k, val in labels.items())
    )


def _connect(port: int, proxy_auth: str | None = None) -> str:
    """The response head to ``CONNECT api.openai.com:443`` on the proxy."""
    head = "CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n"
    if proxy_auth is not None:
        head += f"Proxy-Authorization: {proxy_auth}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode("latin-1")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _ca_path(d: Any) -> Path:
    m = re.search(r"CA certificate: (\S+)", d.stdout_text)
    assert m, d.stdout_text
    return Path(m.group(1))


def _proxied(proxy_url: str, ca: Path, user: str, key: str | None) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(ca))
    auth = f"{user}:{key}@" if key else ""
    return httpx.Client(proxy=f"http://{auth}127.0.0.1:{_port(proxy_url)}", verify=ctx, timeout=20)


@pytest.fixture
def accounts(fake: FakeUpstream, write_config: Callable[..., Path]) -> Callable[..., Path]:
    def write(**extra: Any) -> Path:
        return write_config({**extra, "accounts": [fake.copilot_account("alice", "gho_alice")]})

    return write


# ------------------------------------------------------------------ a LAN server


def test_keys_on_both_listeners_of_a_lan_server(
    accounts: Callable[..., Path], daemon: Any, run_cli: Any, env_home: Any, wait_for: Any
) -> None:
    accounts()
    ann = _new_key(run_cli, "ann")
    doomed = _new_key(run_cli, "doomed")
    # an expired key: made through the store with a creation time in the past
    expired, _ = KeyStore(env_home.state_dir).create(
        "old", expires=int(time.time()) - 60, now=time.time() - 3600
    )
    d = daemon("--host", "0.0.0.0", "--with-proxy", "--proxy-port", "0")
    assert "API 0.0.0.0: client keys required (2 active)" in d.stdout_text
    api = _local(d.url)
    chat, messages = api + "/v1/chat/completions", api + "/v1/messages"

    # -- API listener: missing, bad, expired keys; each in its API's own error shape
    refusals: list[httpx.Response] = []
    for headers in ({}, _bearer(_bogus_key()), {"x-api-key": expired}, _bearer("sk-dummy")):
        r = httpx.post(chat, json=CHAT_BODY, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert _openai_error(r)["type"] == "authentication_error"
        refusals.append(r)
        r = httpx.post(messages, json=MESSAGES_BODY, headers=headers)
        assert r.status_code == 401
        assert _anthropic_error(r)["type"] == "authentication_error"
        refusals.append(r)
    # a bad key and an expired one read the same: nothing tells which keys exist
    assert refusals[2].json() == refusals[4].json()
    for r in refusals:
        assert not any(name in r.text for name in ("ann", "doomed", "old"))
    assert httpx.get(api + "/metrics").status_code == 401

    # -- valid keys, from the real SDKs: Bearer (OpenAI) and x-api-key (Anthropic)
    oa = openai.OpenAI(base_url=api + "/v1", api_key=ann, max_retries=0)
    assert oa.chat.completions.create(**CHAT_BODY).choices[0].message.content == "Echo: hello"
    an = anthropic.Anthropic(base_url=api, api_key=doomed, max_retries=0)
    assert an.messages.create(**MESSAGES_BODY).content[0].text == "Echo: hello"

    # /healthz stays open for the container's health check, and carries no secret
    health = httpx.get(api + "/healthz")
    assert health.status_code == 200
    for secret in (ann, doomed, expired, "gho_alice"):
        assert secret not in health.text

    # -- revoked and created while the daemon runs
    assert run_cli("keys", "revoke", "doomed").returncode == 0
    wait_for(lambda: httpx.post(chat, json=CHAT_BODY, headers=_bearer(doomed)).status_code == 401)
    bob = _new_key(run_cli, "bob")
    wait_for(lambda: httpx.post(chat, json=CHAT_BODY, headers=_bearer(bob)).status_code == 200)

    # -- the MITM proxy: 407 with a challenge at CONNECT, the key in the URL's password
    pport = _port(d.proxy_url)
    for auth in (None, _basic("default", _bogus_key()), f"Bearer {expired}", _basic("x", doomed)):
        head = _connect(pport, auth)
        assert head.startswith("HTTP/1.1 407 "), head
        assert 'proxy-authenticate: basic realm="tokn-router"' in head.lower()
        assert "ann" not in head
    assert _connect(pport, f"Bearer {ann}").startswith("HTTP/1.1 200 ")
    assert _connect(pport, _basic(ann, "")).startswith("HTTP/1.1 200 ")  # the key as user name

    ca = _ca_path(d)
    with _proxied(d.proxy_url, ca, "default", None) as anonymous, pytest.raises(httpx.ProxyError):
        anonymous.get("https://api.openai.com/v1/models")
    # the user name still picks the route mode; "default" leaves it to the server
    with _proxied(d.proxy_url, ca, "switch", bob) as switch:
        r = switch.post("https://api.openai.com/v1/chat/completions", json=CHAT_BODY)
        assert r.status_code == 400 and "switch mode" in r.text
    with _proxied(d.proxy_url, ca, "default", bob) as client:
        r = client.post("https://api.openai.com/v1/chat/completions", json=CHAT_BODY)
        assert (
            r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Echo: hello"
        )
        # revoked while its tunnel stays open: the next request inside it is refused
        assert run_cli("keys", "revoke", "bob").returncode == 0
        r = wait_for(
            lambda: (
                resp
                if (resp := client.get("https://api.openai.com/v1/models")).status_code == 407
                else None
            )
        )
        assert "invalid client key" in _openai_error(r)["message"]

    # -- /metrics with a key: parsed by the Prometheus parser, no secret in it
    text = httpx.get(api + "/metrics", headers=_bearer(ann)).text
    for secret in (ann, bob, expired, "gho_alice", "tid="):
        assert secret not in text
    m = _metrics(api, ann)
    assert (
        _sample(m, "tokn_router_client_refusals_total", listener="api", reason="missing_key") == 3
    )
    assert (
        _sample(m, "tokn_router_client_refusals_total", listener="api", reason="invalid_key") >= 7
    )
    assert _sample(m, "tokn_router_client_refusals_total", listener="proxy") >= 5

    # -- attribution: every row names its key
    stop(d)
    rows = ledger_rows(env_home.state_dir)
    keys = [json.loads(r["params_json"]).get("key") for r in rows]
    # (doomed: until the daemon saw the revocation, its requests were still served)
    assert keys.count("ann") == 1 and keys.count("doomed") >= 1
    assert keys.count("bob") == 3  # the API, then switch and route through the proxy
    assert None not in keys  # nothing anonymous got through
    proxied = [r for r in rows if json.loads(r["params_json"])["source"] == "proxy"]
    assert {json.loads(r["params_json"])["key"] for r in proxied} == {"bob"}

    r = run_cli("usage", "--by", "key", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    groups = {g["name"]: g for g in report["groups"]}
    assert report["by"] == "key" and set(groups) == {"ann", "bob", "doomed"}
    assert groups["doomed"]["requests"] == keys.count("doomed")
    assert groups["bob"]["requests"] == 3 and groups["ann"]["input_tokens"] > 0
    text = run_cli("usage", "--by", "key").stdout
    assert re.search(r"^KEY\s+REQUESTS", text, re.M) and re.search(r"^ann\s+1\b", text, re.M)


def _run_sh(script: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def test_env_script_takes_the_key_from_the_users_environment(
    accounts: Callable[..., Path],
    daemon: Any,
    run_cli: Any,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    accounts()
    key = _new_key(run_cli, "carol")
    d = daemon("--host", "0.0.0.0", "--with-proxy", "--proxy-port", "0")
    api = _local(d.url)
    script = httpx.get(api + "/-/lan/env?shell=sh").text
    assert "tkr_" not in script and "TOKN_ROUTER_KEY" in script  # the server serves no key
    env = {k: v for k, v in cli_env.items() if k.lower() != "no_proxy"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    use = (
        f"eval \"$(curl -fsSL '{api}/-/lan/env?shell=sh')\" || exit 9\n"
        'curl -sS --max-time 20 -H "Authorization: Bearer $OPENAI_API_KEY" '
        '"$OPENAI_BASE_URL/models"; echo\n'
        "curl -sS --max-time 20 https://api.openai.com/v1/models; echo\n"
    )
    rc, out, err = _run_sh(use, {**env, "TOKN_ROUTER_KEY": key})
    assert rc == 0, err
    direct, proxied = (json.loads(line) for line in out.strip().splitlines())
    assert "gpt-4.1" in {m["id"] for m in direct["data"]}
    assert "gpt-4.1" in {m["id"] for m in proxied["data"]}  # the key went in the proxy URL

    # without the variable the script says so, and the server refuses the requests
    rc, out, err = _run_sh(use, env)
    assert rc == 0, err
    assert "TOKN_ROUTER_KEY is not set" in err
    direct_body = out.strip().splitlines()[0]
    assert json.loads(direct_body)["error"]["code"] == "invalid_api_key"


# ----------------------------------------------------------------- limits, loopback


def _stream(url: str, key: str, opened: threading.Event, release: threading.Event) -> None:
    body = {**CHAT_BODY, "stream": True}
    with (
        httpx.Client(timeout=30) as c,
        c.stream("POST", url, json=body, headers=_bearer(key)) as r,
    ):
        assert r.status_code == 200
        chunks = r.iter_raw()  # held: dropping the iterator would close the stream
        next(chunks)
        opened.set()
        release.wait(20)  # then leave with the stream still open upstream


def test_limits_and_metrics_on_loopback(
    fake: FakeUpstream, accounts: Callable[..., Path], daemon: Any, run_cli: Any, wait_for: Any
) -> None:
    # a short keep-alive: the daemon notices at once that the first stream's client left
    accounts(model_aliases={"fast": "gpt-4.1"}, server={"sse_keepalive_secs": 0.2})
    rpm = _new_key(run_cli, "rpm2", "--rpm", "2")
    picky = _new_key(run_cli, "picky", "--models", "gpt-4.1")
    single = _new_key(run_cli, "single", "--max-streams", "1")
    d = daemon()
    api = d.url
    chat, messages = api + "/v1/chat/completions", api + "/v1/messages"

    # loopback: keys are optional; a placeholder is anonymous, a tkr_ value must verify
    assert httpx.post(chat, json=CHAT_BODY).status_code == 200
    assert httpx.post(chat, json=CHAT_BODY, headers=_bearer("sk-dummy")).status_code == 200
    assert httpx.post(chat, json=CHAT_BODY, headers=_bearer(_bogus_key())).status_code == 401

    # rpm: the third request within a minute is refused, saying which limit and when
    for _ in range(2):
        assert httpx.post(chat, json=CHAT_BODY, headers=_bearer(rpm)).status_code == 200
    r = httpx.post(chat, json=CHAT_BODY, headers=_bearer(rpm))
    assert r.status_code == 429 and r.headers["x-tokn-router-limit"] == "rpm"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    err = _openai_error(r)
    assert err["code"] == "rate_limit_exceeded" and "2 requests per minute" in err["message"]
    assert "resets at" in err["message"]
    r = httpx.post(messages, json=MESSAGES_BODY, headers={"x-api-key": rpm})
    assert r.status_code == 429 and _anthropic_error(r)["type"] == "rate_limit_error"

    # models: another model is a 403 in the API's shape; an alias of an allowed one passes
    r = httpx.post(messages, json=MESSAGES_BODY, headers={"x-api-key": picky})
    assert r.status_code == 403 and _anthropic_error(r)["type"] == "permission_error"
    assert "may not use model 'claude-sonnet-4.5'" in r.json()["error"]["message"]
    ok = httpx.post(chat, json={**CHAT_BODY, "model": "fast"}, headers=_bearer(picky))
    assert ok.status_code == 200
    # a bad body still gets the handler's own 400 after the gate read it
    r = httpx.post(chat, content=b"{not json", headers=_bearer(picky))
    assert r.status_code == 400 and _openai_error(r)["code"] == "invalid_json"

    # max_streams: a second stream while one is open is refused; freed when it ends
    fake.script("/chat/completions", hang_after=1)
    opened, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_stream, args=(chat, single, opened, release))
    t.start()
    try:
        assert opened.wait(20)
        m = _metrics(api)
        assert _sample(m, "tokn_router_streams_in_flight", key="single") == 1
        r = httpx.post(chat, json={**CHAT_BODY, "stream": True}, headers=_bearer(single))
        assert r.status_code == 429 and r.headers["x-tokn-router-limit"] == "max_streams"
        assert "retry-after" not in r.headers  # it frees up when a stream ends, not at a time
        assert "1 concurrent streams" in _openai_error(r)["message"]
        # a request that is not a stream is not held back by the stream cap
        assert httpx.post(chat, json=CHAT_BODY, headers=_bearer(single)).status_code == 200
    finally:
        release.set()
        t.join(30)
    wait_for(lambda: _sample(_metrics(api), "tokn_router_streams_in_flight", key="single") == 0)
    r = httpx.post(chat, json={**CHAT_BODY, "stream": True}, headers=_bearer(single))
    assert r.status_code == 200

    # /metrics: open on loopback (keys optional), every family parsed
    m = wait_for(
        lambda: (
            x
            if _sample(x := _metrics(api), "tokn_router_requests_total", key="rpm2") >= 3
            else None
        )
    )
    assert _sample(m, "tokn_router_requests_total", key="-", status_class="2xx") == 2
    assert _sample(m, "tokn_router_requests_total", key="rpm2", status_class="4xx") == 2
    assert _sample(m, "tokn_router_request_errors_total", key="rpm2") == 2
    assert _sample(m, "tokn_router_client_refusals_total", reason="rpm", key="rpm2") == 2
    assert _sample(m, "tokn_router_client_refusals_total", reason="models", key="picky") == 1
    assert _sample(m, "tokn_router_tokens_total", kind="input", key="rpm2", model="gpt-4.1") > 0
    assert _sample(m, "tokn_router_tokens_total", kind="output", key="-") > 0
    assert _sample(m, "tokn_router_upstream_latency_seconds_count", account="alice") >= 5
    assert _sample(m, "tokn_router_time_to_first_token_seconds_count", account="alice") >= 5
    assert _sample(m, "tokn_router_account_state", account="alice", state="healthy") == 1
    assert _sample(m, "tokn_router_account_state", account="alice", state="disabled") == 0
    assert "tokn_router_account_cooldown_remaining_seconds" in m
    assert _sample(m, "tokn_router_ledger_queue_depth") >= 0
    assert _sample(m, "tokn_router_ledger_rows_dropped_total") == 0
    assert _sample(m, "tokn_router_ledger_rows_written_total") >= 0
    stop(d)


# ------------------------------------------------------------- budget and restart


def test_budget_is_counted_from_the_ledger_and_survives_a_restart(
    fake: FakeUpstream, write_config: Callable[..., Path], daemon: Any, run_cli: Any, env_home: Any
) -> None:
    # a Z.ai account: its static key works the same after a restart
    write_config({"accounts": [fake.zai_account("zai-1", "zai-key-1")]})
    key = _new_key(run_cli, "dana", "--budget-tokens", "1", "--per", "day")
    body = {**CHAT_BODY, "model": "glm-4.6"}
    d = daemon()
    chat = d.url + "/v1/chat/completions"
    r = httpx.post(chat, json=body, headers=_bearer(key))
    assert r.status_code == 200  # under budget before it: the cost is known only after
    used = r.json()["usage"]["prompt_tokens"] + r.json()["usage"]["completion_tokens"]
    r = httpx.post(chat, json=body, headers=_bearer(key))
    assert r.status_code == 429 and r.headers["x-tokn-router-limit"] == "budget_tokens"
    err = _openai_error(r)
    assert err["code"] == "budget_exceeded"
    assert f"budget of 1 tokens per day ({used} used in the last 24 h)" in err["message"]
    retry = int(r.headers["retry-after"])
    assert 86_000 < retry <= 86_400  # when the first request leaves the 24 h window
    stop(d)

    listed = json.loads(run_cli("keys", "list", "--json").stdout)["keys"][0]
    assert listed["use"] == {
        "per": "day",
        "credits": 0.0,
        "tokens": used,
        "budget_credits": None,
        "budget_tokens": 1,
    }
    assert listed["last_used_ts"] is not None
    assert f"{used}/1 tokens per day" in run_cli("keys", "list").stdout

    # a new process reads the spending back from the ledger
    d = daemon()
    r = httpx.post(d.url + "/v1/chat/completions", json=body, headers=_bearer(key))
    assert r.status_code == 429 and f"({used} used" in _openai_error(r)["message"]
    other = httpx.post(d.url + "/v1/chat/completions", json=body)
    assert other.status_code == 200, other.text  # anonymous requests have no budget
    stop(d)
    assert len(ledger_rows(env_home.state_dir)) == 2  # refusals have no ledger row

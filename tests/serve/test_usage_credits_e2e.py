"""Credits in the ledger, end to end: a real daemon, the Copilot fake saying what each
answer cost (``copilot_nano_aiu``), every API whole and streamed, native and translated,
the MITM proxy's passthrough, and what `tokn-router usage --json` reports."""

from __future__ import annotations

import json
import signal
import ssl
from typing import Any

import httpx

from tests.edges.test_proxy_e2e import client_env, free_port, proxy_env
from tests.fakes import FakeUpstream
from tests.helpers import ledger_rows

HELLO = [{"role": "user", "content": "what does this cost"}]
# (endpoint, model, stream, how it is served)
API_CASES: list[tuple[str, str, bool, str]] = [
    ("/v1/chat/completions", "gpt-4.1", False, "chat"),
    ("/v1/chat/completions", "gpt-4.1", True, "chat"),
    ("/v1/responses", "gpt-4.1", False, "native /responses"),
    ("/v1/responses", "gpt-4.1", True, "native /responses"),
    ("/v1/messages", "claude-sonnet-4.5", False, "native /v1/messages"),
    ("/v1/messages", "claude-sonnet-4.5", True, "native /v1/messages"),
    ("/v1/messages", "gpt-4.1", True, "translated from chat"),
    ("/v1/messages", "gpt-4.1", False, "translated from chat"),
    ("/v1/responses", "claude-sonnet-4.5", True, "translated from chat"),
    ("/v1/responses", "claude-sonnet-4.5", False, "translated from chat"),
]


def _body(endpoint: str, model: str, stream: bool) -> dict[str, Any]:
    if endpoint == "/v1/responses":
        return {"model": model, "input": HELLO, "stream": stream}
    body: dict[str, Any] = {"model": model, "messages": HELLO, "stream": stream}
    if endpoint == "/v1/messages":
        body["max_tokens"] = 64
    return body


def _post(client: httpx.Client, url: str, body: dict[str, Any], **kw: Any) -> str:
    with client.stream("POST", url, json=body, **kw) as r:
        text = r.read().decode()
        assert r.status_code == 200, text
    return text


def test_every_api_records_the_cost_copilot_reports(
    fake_tls: FakeUpstream, write_config, daemon, run_cli, cli_env, env_home
) -> None:
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
    expected: list[int | None] = []
    with httpx.Client(timeout=30) as client:
        for i, (endpoint, model, stream, _how) in enumerate(API_CASES):
            nano = (i + 1) * 100_000_000  # 0.1, 0.2, ... credits: tells the rows apart
            fake_tls.copilot_nano_aiu = nano
            text = _post(client, d.url + endpoint, _body(endpoint, model, stream))
            assert "Echo" in text  # the answer itself is untouched
            expected.append(nano)
        # upstream says nothing: a list-price estimate instead
        fake_tls.copilot_nano_aiu = None
        _post(
            client, d.url + "/v1/chat/completions", _body("/v1/chat/completions", "gpt-4.1", False)
        )
        estimated_usage = fake_tls.last("/chat/completions").usage
        expected.append(None)

    # the proxy's passthrough reads the cost with the same normaliser
    env = client_env(cli_env, proxy_env(run_cli, d.proxy_url))
    token, _ = fake_tls.issue_copilot_token("gho_carol")
    verify = ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
    with httpx.Client(proxy=env["HTTPS_PROXY"], verify=verify, timeout=30) as c:
        for stream, nano in ((True, 3_000_000_000), (False, 4_000_000_000)):
            fake_tls.copilot_nano_aiu = nano
            body = _body("/v1/chat/completions", "gpt-4.1", stream)
            if stream:  # passed through as is: the client asks for usage itself
                body["stream_options"] = {"include_usage": True}
            _post(
                c,
                f"https://localhost:{port}/chat/completions",
                body,
                headers={"authorization": f"Bearer {token}"},
            )
            expected.append(nano)
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0

    rows = ledger_rows(env_home.state_dir)
    assert len(rows) == len(expected)
    for row, nano, case in zip(rows, expected, [*API_CASES, None, "proxy", "proxy"], strict=True):
        u = json.loads(row["usage_json"])
        assert row["status"] == 200, case
        if nano is None:
            continue
        assert u["nano_aiu"] == nano, case
        assert u["credits"] == nano / 1e9, case
        assert "credits_est" not in u, case  # measured: never also estimated
        assert u["input"] and u["output"], case  # token counts kept beside the cost
    proxied = [json.loads(r["params_json"])["route_mode"] for r in rows[-2:]]
    assert proxied == ["passthrough", "passthrough"]

    est = json.loads(rows[len(API_CASES)]["usage_json"])
    assert "credits" not in est and "nano_aiu" not in est
    cached = estimated_usage["prompt_tokens_details"]["cached_tokens"]
    fresh = estimated_usage["prompt_tokens"] - cached
    # gpt-4.1: 2 input / 0.5 cached / 8 output USD per 1M tokens; 1 credit = $0.01
    want = (fresh * 2 + cached * 0.5 + estimated_usage["completion_tokens"] * 8) / 1e6 * 100
    assert abs(est["credits_est"] - want) < 1e-6

    out = run_cli("usage", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    measured = [n for n in expected if n is not None]
    t = report["totals"]
    assert t["credits"] == round(sum(measured) / 1e9, 6)
    assert t["credits_measured_requests"] == len(measured)
    assert t["credits_estimated"] == round(est["credits_est"], 6)
    assert t["credits_estimated_requests"] == 1
    by_model = {m["model"]: m for m in report["by_model"]}
    sonnet = [n for n, c in zip(expected, API_CASES, strict=False) if c[1] == "claude-sonnet-4.5"]
    assert by_model["claude-sonnet-4.5"]["credits"] == round(sum(n or 0 for n in sonnet) / 1e9, 6)
    alice = next(a for a in report["by_account"] if a["account_id"] == "alice")
    assert alice["credits"] == round(sum(measured[: len(API_CASES)]) / 1e9, 6)
    text = run_cli("usage").stdout
    assert (
        "Credits: " in text and "measured (12 requests)" in text and "estimated (1 request)" in text
    )

"""The request log line: one per request at ``TOKN_ROUTER_LOG=info``, never a secret."""

from __future__ import annotations

import logging
import re
import ssl

import httpx
import pytest

from tests.fakes import FakeUpstream
from tests.helpers import stop
from tokn_router.serve.common import log_request
from tokn_router.usage.inflight import RequestLog

LINE = re.compile(r"INFO tokn_router\.request: (.*)$", re.M)
BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "log me"}]}


def test_one_line_per_api_and_proxy_request(fake: FakeUpstream, write_config, daemon) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice")]})
    d = daemon("--with-proxy", "--proxy-port", "0", env={"TOKN_ROUTER_LOG": "info"})
    client_key = "sk-client-secret-123"
    auth = {"authorization": f"Bearer {client_key}"}
    r = httpx.post(d.url + "/v1/chat/completions", json=BODY, headers=auth, timeout=30)
    assert r.status_code == 200
    whole = fake.last("/chat/completions").usage
    with httpx.stream(
        "POST",
        d.url + "/v1/chat/completions",
        json={**BODY, "stream": True},
        headers=auth,
        timeout=30,
    ) as s:
        assert s.status_code == 200
        s.read()
    streamed = fake.last("/chat/completions").usage
    ca = re.search(r"CA certificate: (.+)", d.stdout_text)
    assert ca is not None
    verify = ssl.create_default_context(cafile=ca.group(1).strip())
    with httpx.Client(proxy=d.proxy_url, verify=verify, trust_env=False, timeout=30) as c:
        r = c.post("https://api.openai.com/v1/chat/completions", json=BODY, headers=auth)
    assert r.status_code == 200, r.text
    copilot_token = fake.last("/chat/completions").token
    proxied = fake.last("/chat/completions").usage
    stop(d)  # stderr is complete once the daemon exited

    err = d.stderr_text
    lines = LINE.findall(err)
    assert len(lines) == 3, err
    for line, usage in zip(lines, (whole, streamed, proxied), strict=True):
        assert usage is not None
        assert line.startswith("POST /v1/chat/completions 200 ")
        assert re.search(r" \d+ms ", line)
        assert " model=gpt-4.1 account=alice " in line
        tokens = f"tokens=in:{usage['prompt_tokens']},out:{usage['completion_tokens']}"
        assert tokens in line
    assert lines[0].endswith(",cached:2")
    assert lines[1].endswith(" stream")
    assert lines[2].endswith(" via=proxy:route")
    for secret in ("gho_alice", client_key, copilot_token or "tid="):
        assert secret not in err


def test_a_model_id_cannot_forge_a_line(caplog: pytest.LogCaptureFixture) -> None:
    rlog = RequestLog(endpoint="/v1/chat/completions", model="x\nINFO forged", status=400)
    rlog.latency_ms = 1.0
    caplog.set_level(logging.INFO, logger="tokn_router.request")
    log_request(rlog)
    assert caplog.messages == [
        "POST /v1/chat/completions 400 1ms model=x\\nINFO forged account=- tokens=-"
    ]

"""``tokn-router serve`` / ``proxy start`` start-up as a user sees it: banner, busy ports."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import FakeUpstream
from tests.helpers import stop


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")


def _one_line(d: Any) -> str:
    """The one error line of a daemon that failed to start (log lines aside)."""
    assert d.wait_exit(20) == 1
    err = d.stderr_text
    assert "Traceback" not in err + d.stdout_text
    lines = [ln for ln in err.splitlines() if ln.strip() and not _LOG_LINE.match(ln)]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("serve", "--port", "{port}"), "--port"),
        (("serve", "--port", "0", "--with-proxy", "--proxy-port", "{port}"), "--proxy-port"),
        (("proxy", "start", "--port", "{port}"), "--port"),
    ],
    ids=["api", "serve-with-proxy", "proxy-start"],
)
def test_port_in_use_is_one_line_saying_what_to_do(
    daemon: Any, busy_port: int, args: tuple[str, ...], flag: str
) -> None:
    cmd = tuple(a.format(port=busy_port) for a in args)
    line = _one_line(daemon(cmd=cmd, ready=False))
    assert line.startswith(f"tokn-router: error: cannot listen on 127.0.0.1:{busy_port}: ")
    assert "Address already in use" in line
    assert "another tokn-router running?" in line and f"{flag} N" in line
    assert "nursery" not in line and "sub-exception" not in line


def test_banner_version_client_hint_and_one_proxy_line(
    fake: FakeUpstream, write_config: Any, daemon: Any, run_cli: Any
) -> None:
    write_config({"accounts": [fake.copilot_account("alice", "gho_alice0123456789")]})
    version = run_cli("--version").stdout.split()[-1]
    d = daemon("--with-proxy", "--proxy-port", "0")
    stop(d)
    out = d.stdout_text.splitlines()
    assert out[0] == f"tokn-router {version}"
    hint = f"point your client here: OPENAI_BASE_URL={d.url}/v1 ANTHROPIC_BASE_URL={d.url}"
    assert out.index(hint) == out.index(f"listening on {d.url}") - 1
    both = d.stdout_text + d.stderr_text
    assert both.count("proxy listening on") == 1
    assert f"proxy listening on {d.proxy_url} (route mode: route)" in d.stdout_text


def test_proxy_only_banner_points_at_the_proxy(daemon: Any) -> None:
    d = daemon("--port", "0", cmd=("proxy", "start"), ready=False)
    m = d.wait_output(r"proxy listening on (http://\S+)", 20)
    d.wait_output("point your client here", 20)
    stop(d)
    url = m.group(1)
    assert f"point your client here: HTTPS_PROXY={url} " in d.stdout_text
    assert "tokn-router proxy env" in d.stdout_text
    assert (d.stdout_text + d.stderr_text).count("proxy listening on") == 1

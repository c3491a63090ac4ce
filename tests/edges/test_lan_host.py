"""LAN mode never reflects a forged ``Host``: URLs name only this machine's addresses.

Unit level through Quart's test client (the ASGI scope's ``server`` is the address a
request reached), then the real daemon on ``0.0.0.0`` over raw sockets.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from quart_trio import QuartTrio

from tests.fakes import FakeUpstream
from tests.helpers import ledger_rows
from tokn_router.accounts.config import Config
from tokn_router.accounts.pool import Pool
from tokn_router.accounts.refresher import Refresher
from tokn_router.edges import lan
from tokn_router.edges.api import ApiServices, create_app
from tokn_router.edges.lan import LanInfo, machine_addresses
from tokn_router.edges.proxy.ca import CertStore
from tokn_router.edges.proxy.shellenv import SHELLS
from tokn_router.net.client import ProxySetting, make_client
from tokn_router.serve.relay import Relay

pytestmark = pytest.mark.anyio

ROUTES = ["/-/lan/bootstrap.json", "/-/lan/ca.crt"] + [f"/-/lan/env?shell={s}" for s in SHELLS]
FORGED = ["attacker.example:4141", "attacker.example", "evil.example.:80", "203.0.113.7:4141"]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CertStore:
    return CertStore(tmp_path_factory.mktemp("lan-host") / "ca").load()


@pytest.fixture
async def make_app() -> AsyncIterator[Callable[[LanInfo], QuartTrio]]:
    cfg = Config()
    pool = Pool(cfg)
    client = make_client(ProxySetting())

    async def persist(*_: Any) -> None:
        return None

    relay = Relay(pool, Refresher(pool, client, cfg.github, persist), client)

    def build(info: LanInfo) -> QuartTrio:
        svc = ApiServices(
            config=lambda: cfg,
            pool=pool,
            relay=relay,
            report=lambda _r: None,
            spawn=lambda _fn: None,
            loopback_only=False,
            lan=info,
        )
        return create_app(svc)

    yield build
    await client.aclose()


def _info(store: CertStore, bind_host: str | None = None) -> LanInfo:
    return LanInfo(4142, store.cert_path, store.fingerprint_sha256(), bind_host=bind_host)


async def _get(
    app: QuartTrio, path: str, host: str, server: tuple[str, int]
) -> tuple[int, dict[str, Any] | str]:
    resp = await app.test_client().get(path, headers={"Host": host}, scope_base={"server": server})
    text = await resp.get_data(as_text=True)
    is_json = resp.headers.get("content-type") == "application/json"
    return resp.status_code, json.loads(text) if is_json else text


@pytest.mark.parametrize("host", FORGED)
async def test_a_forged_host_is_refused_and_never_echoed(
    host: str, make_app: Any, store: CertStore
) -> None:
    for info in (_info(store), _info(store, "10.0.0.2")):
        app = make_app(info)
        for path in ROUTES:
            status, body = await _get(app, path, host, ("10.0.0.2", 4141))
            assert status == 403, (path, host)
            assert isinstance(body, dict)
            err = body["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert err["code"] == "forbidden_host" and err["type"] == "permission_error"
            name = host.rsplit(":", 1)[0].rstrip(".")
            assert name not in json.dumps(body)  # never echoed
            assert "http://10.0.0.2:4141" in err["message"]  # where to go instead


async def test_hosts_naming_this_machine_are_served(make_app: Any, store: CertStore) -> None:
    wildcard = make_app(_info(store))  # 0.0.0.0: any interface address, and loopback
    for host, server, api in [
        ("10.0.0.2:4141", ("10.0.0.2", 4141), "http://10.0.0.2:4141"),
        ("10.0.0.2:4141", ("::ffff:10.0.0.2", 4141), "http://10.0.0.2:4141"),  # dual stack
        ("127.0.0.1:4141", ("10.0.0.2", 4141), "http://127.0.0.1:4141"),
        ("localhost:4141", ("10.0.0.2", 4141), "http://localhost:4141"),
        ("10.0.0.2:1", ("10.0.0.2", 4141), "http://10.0.0.2:4141"),  # the listener's port
    ]:
        status, body = await _get(wildcard, "/-/lan/bootstrap.json", host, server)
        assert status == 200, (host, body)
        assert isinstance(body, dict)
        assert body["api_url"] == api
        assert body["env_url"] == api + "/-/lan/env"
        status, script = await _get(wildcard, "/-/lan/env?shell=sh", host, server)
        assert status == 200 and f"OPENAI_BASE_URL={api}/v1" in str(script)
    # a specific bind: that address only, not the machine's others
    bound = make_app(_info(store, "192.168.1.5"))
    status, body = await _get(bound, "/-/lan/bootstrap.json", "192.168.1.5", ("192.168.1.5", 4141))
    assert status == 200
    for other in ("127.0.0.1:4141", "localhost:4141", "10.0.0.2:4141"):
        status, _ = await _get(bound, "/-/lan/bootstrap.json", other, ("192.168.1.5", 4141))
        assert status == 403, other


async def test_a_malformed_host_is_still_a_400(make_app: Any, store: CertStore) -> None:
    app = make_app(_info(store))
    status, body = await _get(app, "/-/lan/bootstrap.json", "evil'$(id)", ("10.0.0.2", 4141))
    assert status == 400
    assert isinstance(body, dict) and body["error"]["code"] == "invalid_host"
    assert "$(id)" not in json.dumps(body)


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.0.2.0/24 2 0 2
           |-- 192.0.2.2
              /32 host LOCAL
           |-- 192.0.2.9
              /32 link UNICAST
"""
IF_INET6 = """fd000000000000000000000000000002 04 40 00 82     eth0
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
"""


def test_proc_tables_give_the_local_addresses() -> None:
    assert lan._ipv4_locals(FIB_TRIE) == {"127.0.0.1", "192.0.2.2"}
    assert lan._ipv6_locals(IF_INET6) == {"fd00::2", "fe80::fc:ff:fe00:1", "::1"}


async def test_machine_addresses_include_loopback() -> None:
    found = await machine_addresses()
    assert "127.0.0.1" in found


# --------------------------------------------------------------------- daemon


def _raw_get(ip: str, port: int, path: str, host: str) -> tuple[int, str]:
    with socket.create_connection((ip, port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.partition(b"\r\n\r\n")[2]) < _length(raw):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def _length(raw: bytes) -> int:
    for line in raw.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_daemon_refuses_a_forged_host(
    fake: FakeUpstream, write_config: Any, daemon: Any, env_home: Any, wait_for: Any
) -> None:
    # an open LAN server: client keys are tested in tests/clients/test_team_server.py
    write_config(
        {"server": {"auth": "none"}, "accounts": [fake.copilot_account("alice", "gho_alice")]}
    )
    d = daemon("--host", "0.0.0.0", "--with-proxy", "--proxy-port", "0")
    port = int(d.url.rsplit(":", 1)[1])
    wait_for(lambda: "access_token" in env_home.config_path.read_text())  # token persisted
    config_before = env_home.config_path.read_text()
    for path in ROUTES:
        for host in (f"attacker.example:{port}", "203.0.113.7"):
            status, body = _raw_get("127.0.0.1", port, path, host)
            assert status == 403, (path, host, body[:200])
            assert "attacker" not in body and "203.0.113.7" not in body
            assert json.loads(body)["error"]["code"] == "forbidden_host"
    # the machine's own addresses are served, each with URLs naming it; tests reach
    # only loopback ones (no traffic to any other address, even this machine's own)
    for ip in ("127.0.0.1", "127.0.0.2"):
        status, body = _raw_get(ip, port, "/-/lan/bootstrap.json", f"{ip}:{port}")
        assert status == 200, body
        assert json.loads(body)["api_url"] == f"http://{ip}:{port}"
        status, script = _raw_get(ip, port, "/-/lan/env?shell=sh", f"{ip}:{port}")
        assert status == 200 and f"OPENAI_BASE_URL=http://{ip}:{port}/v1" in script
    # nothing lost: still serving, config untouched, the ledger keeps its row
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(20) == 0
    assert [row["status"] for row in ledger_rows(env_home.state_dir)] == [200]
    assert env_home.config_path.read_text() == config_before

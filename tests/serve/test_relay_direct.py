"""Relay.open with the daemon's transport as ``direct``: no AsyncClient.send in the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2 as httpx
import trio

from tests.fakes import Exchange, serve_h11
from tokn_router.accounts import config
from tokn_router.accounts.pool import Pool
from tokn_router.accounts.refresher import Refresher
from tokn_router.net.transport import TrioH11Transport, cancel_safe_body
from tokn_router.serve.relay import Relay, Route
from tokn_router.usage.inflight import RequestLog


class Counting(httpx.AsyncClient):
    sent = 0

    async def send(self, request: httpx.Request, **kw: Any) -> httpx.Response:
        self.sent += 1
        return await super().send(request, **kw)


async def _open(direct: bool) -> tuple[bool, Counting]:
    async def app(ex: Exchange) -> None:
        await ex.respond(b'{"ok": true}', headers=[("Content-Type", "application/json")])

    async with serve_h11(app) as srv:
        cfg = config.parse(
            "[[accounts]]\n"
            'id = "z"\nprovider = "zai-coding-plan"\napi_key = "zk-1"\n'
            f'base_url = "{srv.url}"\n',
            Path("config.toml"),
        )
        pool = Pool(cfg)
        transport = TrioH11Transport()
        client = Counting(transport=transport)

        async def persist(*_: Any) -> None:
            return None

        relay = Relay(
            pool,
            Refresher(pool, client, cfg.github, persist),
            client,
            direct=transport if direct else None,
        )
        route = Route(model="glm-4.6", candidates=list(pool.states))
        opened = await relay.open(
            route, "/chat/completions", lambda st, tok: (b"{}", {}), RequestLog(endpoint="x")
        )
        resp = opened.response
        assert resp.status_code == 200
        assert str(resp.request.url) == srv.url + "/chat/completions"
        cancel_safe = cancel_safe_body(resp) is not None
        assert await resp.aread() == b'{"ok": true}'
        return cancel_safe, client


def test_without_a_proxy_requests_go_straight_to_the_transport() -> None:
    async def main() -> None:
        cancel_safe, client = await _open(direct=True)
        assert client.sent == 0
        assert cancel_safe  # a stream is relayed without the pump task

    trio.run(main)


def test_with_a_proxy_the_clients_mounts_decide() -> None:
    async def main() -> None:
        cancel_safe, client = await _open(direct=False)
        assert client.sent == 1
        assert not cancel_safe

    trio.run(main)

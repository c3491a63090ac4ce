"""Which handler answers which API path, for every front end.

The Quart adapter registers each :class:`Endpoint` under its path and aliases;
the MITM proxy's route mode maps an intercepted path onto the same table. Both
run the handler through :func:`serve_endpoint`, so an unexpected failure is a
500 in the endpoint's own error shape (Claude Code reads only the Anthropic one),
and so the client-key gate (:mod:`tokn_router.serve.gate`) sits in one place:
every endpoint here, ``/metrics`` included, is refused without a valid key when
keys are required.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tokn_router.errors import RequestError
from tokn_router.serve.agents import (
    MESSAGES,
    RESPONSES,
    handle_agent,
    handle_count_tokens,
    handle_embeddings,
)
from tokn_router.serve.call import Answer, Call
from tokn_router.serve.chat import handle_chat, handle_models
from tokn_router.serve.common import Services, error_answer, request_error_answer
from tokn_router.serve.gate import Ticket
from tokn_router.serve.metrics import CONTENT_TYPE
from tokn_router.wire.errors import Shape

log = logging.getLogger("tokn_router.api")

Handler = Callable[[Services, Call], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str  # the canonical path (``/v1/...``), also the ledger's endpoint
    aliases: tuple[str, ...]  # the same endpoint without ``/v1``
    handler: Handler
    shape: Shape  # the error shape its clients read
    metered: bool = True  # spends the accounts: counts against a key's rpm, budget, streams


async def _messages(svc: Services, call: Call) -> Answer:
    return await handle_agent(svc, call, MESSAGES)


async def handle_metrics(svc: Services, call: Call) -> Answer:
    """The Prometheus text of the daemon's :class:`~tokn_router.serve.metrics.Metrics`."""
    if svc.gate is None:
        return error_answer("openai", 404, f"no route for {call.method} {call.path}")
    headers = [("Content-Type", CONTENT_TYPE), ("Cache-Control", "no-store")]
    return Answer(200, svc.gate.metrics.render(), headers)


async def _responses(svc: Services, call: Call) -> Answer:
    return await handle_agent(svc, call, RESPONSES)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/chat/completions", ("/chat/completions",), handle_chat, "openai"),
    Endpoint("GET", "/v1/models", ("/models",), handle_models, "openai", metered=False),
    Endpoint("POST", "/v1/responses", ("/responses",), _responses, "openai"),
    Endpoint("POST", "/v1/messages", ("/messages",), _messages, "anthropic"),
    Endpoint(
        "POST",
        "/v1/messages/count_tokens",
        ("/messages/count_tokens",),
        handle_count_tokens,
        "anthropic",
        metered=False,  # counted offline: no account is spent
    ),
    Endpoint("POST", "/v1/embeddings", ("/embeddings",), handle_embeddings, "openai"),
    Endpoint("GET", "/metrics", (), handle_metrics, "openai", metered=False),
)

_BY_PATH = {(e.method, p): e for e in ENDPOINTS for p in (e.path, *e.aliases)}


def find_endpoint(method: str, path: str) -> Endpoint | None:
    return _BY_PATH.get((method, path))


async def serve_endpoint(svc: Services, endpoint: Endpoint, call: Call) -> Answer:
    """Pass the gate, run the endpoint's handler; whatever goes wrong, the answer is in its shape."""
    if svc.gate is None:
        return await _run(svc, endpoint, call)
    admitted = await svc.gate.admit(
        call, endpoint=endpoint.path, shape=endpoint.shape, metered=endpoint.metered
    )
    if not isinstance(admitted, Ticket):
        return admitted
    try:
        answer = await _run(svc, endpoint, call)
    except BaseException:  # cancelled: the client left before an answer
        admitted.release()
        raise
    return admitted.attach(answer)


async def _run(svc: Services, endpoint: Endpoint, call: Call) -> Answer:
    try:
        return await endpoint.handler(svc, call)
    except RequestError as e:
        return request_error_answer(endpoint.shape, e)
    except Exception as e:
        log.exception("internal error on %s %s", call.method, call.path)
        return error_answer(endpoint.shape, 500, f"internal error: {type(e).__name__}")


__all__ = ["ENDPOINTS", "Endpoint", "Handler", "find_endpoint", "serve_endpoint"]

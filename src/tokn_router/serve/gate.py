"""The client-key gate: who may use the router, and whether this request is within limits.

One :class:`Gate` per daemon, used by both front ends:

* the API listener: :func:`tokn_router.serve.routes.serve_endpoint` calls
  :meth:`Gate.admit`, which reads the key (``Authorization: Bearer`` or
  ``x-api-key``), checks it and the key's limits, and answers a refusal in the
  endpoint's own error shape (401, 403 for a model the key may not use, 429);
* the MITM proxy: its listener calls :meth:`Gate.proxy_head` for every
  ``CONNECT`` and absolute-form request (407 with ``Proxy-Authenticate``), and
  the route-mode handler calls :meth:`Gate.proxy_identity` again for each request
  inside a tunnel, so a key revoked while a tunnel is open stops at its next
  request. Limits then apply in :meth:`Gate.admit` as on the API.

Whether keys are required follows :func:`tokn_router.clients.policy.auth_mode`
for each listener's bind address and ``[server] auth`` (read per request, so a
config reload applies at once). The daemon reloads the key store every second
(:meth:`Gate.reload_keys`) and reports every finished request to
:meth:`Gate.finished`, which feeds the budgets and the metrics.

An admitted request holds a :class:`Ticket` until its answer is complete (for a
stream: until the stream ends or the client leaves); that is what
``max_streams`` and the streams-in-flight gauge count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Literal

import msgspec

from tokn_router.accounts.config import Config
from tokn_router.clients import extract, policy
from tokn_router.clients.activity import Activity
from tokn_router.clients.keys import KeyStore
from tokn_router.clients.ledger import spend_of
from tokn_router.clients.limits import Denial, Limits, check_model
from tokn_router.clients.policy import Accepted, AuthMode, Rejected
from tokn_router.errors import ConfigError, RequestError
from tokn_router.serve.call import Answer, BodySource, Call, StreamBody, json_answer
from tokn_router.serve.metrics import Metrics, key_label
from tokn_router.usage.record import RequestRecord, to_row
from tokn_router.wire.errors import Shape, error_body, shaped_error_body

log = logging.getLogger("tokn_router.clients")

Listener = Literal["api", "proxy"]
LIMIT_HEADER = "X-Tokn-Router-Limit"  # which limit refused the request: rpm, budget_credits, …
_CHALLENGE = 'Bearer realm="tokn-router"'


class _Peek(msgspec.Struct):
    """The two fields a limit needs before the handler reads the body."""

    model: Any = None
    stream: Any = None


_peek = msgspec.json.Decoder(_Peek).decode
_usage = msgspec.json.Decoder(dict[str, Any]).decode


def _replay(data: bytes) -> BodySource:
    async def body() -> AsyncIterator[bytes]:
        yield data

    return body


def _failing(error: RequestError) -> BodySource:
    # the handler meets the same error, so it is answered and recorded as before
    async def body() -> AsyncIterator[bytes]:
        raise error
        yield b""  # pragma: no cover - makes this an async generator

    return body


class Ticket:
    """An admitted request; released once its answer is complete."""

    __slots__ = ("_gate", "_released", "_reserved", "key")

    def __init__(self, gate: Gate, key: str | None, *, reserved: bool) -> None:
        self._gate = gate
        self.key = key
        self._reserved = reserved  # counted in the key's streams (max_streams)
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._reserved and self.key is not None:
            self._gate.activity.stream_closed(self.key)

    def attach(self, answer: Answer) -> Answer:
        """Release now for a whole answer; for a stream, when it ends or is closed."""
        body = answer.body
        if not isinstance(body, StreamBody):
            self.release()
            return answer
        if not self._reserved and self.key is not None:
            self._gate.activity.stream_opened(self.key)
            self._reserved = True
        gauge = self._gate.metrics.streams.labels(key_label(self.key))
        gauge.inc()

        def end() -> None:
            gauge.dec()
            self.release()

        body.on_end(end)  # runs once
        return answer


class Gate:
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        keys: KeyStore,
        metrics: Metrics,
        api_host: str,
        proxy_host: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.keys = keys
        self.metrics = metrics
        self.hosts: dict[Listener, str] = {"api": api_host, "proxy": proxy_host}
        self.activity = Activity()
        self.clock = clock
        self._reload_error: str | None = None

    # ------------------------------------------------------------------ keys

    def reload_keys(self) -> bool:
        """Pick up changes of the key store (a stat when nothing changed); True if reloaded.

        A broken store keeps the keys loaded before, so a bad edit never opens
        (or shuts) the door by accident; the error is logged once until it changes.
        """
        try:
            changed = self.keys.reload_if_changed()
        except ConfigError as e:
            if str(e) != self._reload_error:
                self._reload_error = str(e)
                log.error("client keys not reloaded, keeping the previous ones: %s", e)
            return False
        self._reload_error = None
        if changed:
            log.info("client keys reloaded: %d active", self.active_keys())
        return changed

    def active_keys(self) -> int:
        now = self.clock()
        return sum(1 for r in self.keys.records() if r.status(now) == "active")

    def mode(self, listener: Listener) -> AuthMode:
        return policy.auth_mode(self.hosts[listener], self.config().server.auth)

    def _authenticate(
        self, listener: Listener, presented: extract.Presented | None
    ) -> Accepted | Rejected:
        mode = self.mode(listener)
        if mode is AuthMode.OFF:
            return Accepted(None)
        name = None
        if presented is not None:
            rec = self.keys.verify(presented.key, self.clock())
            name = rec.name if rec is not None else None
        outcome = policy.decide(mode, presented, name, proxy=listener == "proxy")
        if isinstance(outcome, Rejected):
            log.debug("%s: refused a request: %s", listener, outcome.message)
        return outcome

    def _refused(
        self, listener: Listener, presented: extract.Presented | None, endpoint: str | None
    ) -> None:
        reason = "missing_key" if presented is None else "invalid_key"
        status = 407 if listener == "proxy" else 401
        self.metrics.refusal(listener, reason, None, endpoint, status)

    # ------------------------------------------------------------ the proxy

    def proxy_head(
        self, headers: Iterable[tuple[str, str]]
    ) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The 407 to send for a proxy request (``CONNECT`` or absolute form), or None."""
        presented = extract.proxy_key(list(headers))
        outcome = self._authenticate("proxy", presented)
        if isinstance(outcome, Accepted):
            return None
        self._refused("proxy", presented, None)
        body = error_body(outcome.status, outcome.message, code=outcome.code)
        return (
            outcome.status,
            [
                ("Proxy-Authenticate", outcome.proxy_authenticate),
                ("Content-Type", "application/json"),
            ],
            body,
        )

    def proxy_identity(
        self, proxy_authorization: str | None, endpoint: str | None, shape: Shape = "openai"
    ) -> str | Answer | None:
        """The key name of a request inside the proxy (None: anonymous), or its 407 answer."""
        headers = [("proxy-authorization", proxy_authorization)] if proxy_authorization else []
        presented = extract.proxy_key(headers)
        outcome = self._authenticate("proxy", presented)
        if isinstance(outcome, Accepted):
            return outcome.key_name
        self._refused("proxy", presented, endpoint)
        return json_answer(
            outcome.status,
            shaped_error_body(shape, outcome.status, outcome.message, code=outcome.code),
            {"Proxy-Authenticate": outcome.proxy_authenticate},
        )

    # ------------------------------------------------------------- admission

    async def admit(
        self, call: Call, *, endpoint: str, shape: Shape, metered: bool = True
    ) -> Ticket | Answer:
        """Check the key (API listener) and the key's limits; a Ticket or the refusal.

        ``metered`` endpoints spend the accounts (chat, agents, embeddings): only
        they count against rpm, budgets and streams. A request through the proxy
        was identified by :meth:`proxy_identity` already.
        """
        if call.source == "api":
            presented = extract.api_key(call.headers.items())
            outcome = self._authenticate("api", presented)
            if isinstance(outcome, Rejected):
                self._refused("api", presented, endpoint)
                return json_answer(
                    outcome.status,
                    shaped_error_body(shape, outcome.status, outcome.message, code=outcome.code),
                    {"WWW-Authenticate": _CHALLENGE},
                )
            call.client_key = outcome.key_name
        name = call.client_key
        if name is None or not metered:
            return Ticket(self, name, reserved=False)
        rec = self.keys.get(name)
        lim = rec.limits if rec is not None else Limits()
        stream = False
        if lim.models or lim.max_streams is not None:
            model, stream = await self._peek(call)
            if model is not None and (denial := self._model_denial(name, lim, model)):
                return self._deny(call, name, endpoint, shape, denial)
        now = self.clock()
        decision = self.activity.check(name, lim, now, stream=stream)
        if isinstance(decision, Denial):
            return self._deny(call, name, endpoint, shape, decision)
        self.activity.started(name, now)
        reserved = stream and lim.max_streams is not None
        if reserved:
            self.activity.stream_opened(name)
        return Ticket(self, name, reserved=reserved)

    def _model_denial(self, name: str, lim: Limits, model: str) -> Denial | None:
        denial = check_model(name, lim, model)
        target = self.config().model_aliases.get(model)
        if denial is not None and target is not None and check_model(name, lim, target) is None:
            return None  # an alias of an allowed model
        return denial

    async def _peek(self, call: Call) -> tuple[str | None, bool]:
        """``model`` and ``stream`` of a JSON body, which the handler then reads again."""
        try:
            data = await call.read_body(self.config().server.max_body_bytes)
        except RequestError as e:
            call.body = _failing(e)
            return None, False
        call.body = _replay(data)
        try:
            p = _peek(data)
        except msgspec.MsgspecError:
            return None, False  # not a JSON object: the handler says so in its 400
        return (p.model if isinstance(p.model, str) else None), p.stream is True

    def _deny(self, call: Call, name: str, endpoint: str, shape: Shape, d: Denial) -> Answer:
        log.info("client key '%s': refused (%s): %s", name, d.limit, d.message)
        self.metrics.refusal(call.source, d.limit, name, endpoint, d.status)
        headers: dict[str, str] = {LIMIT_HEADER: d.limit}
        if d.retry_after_secs is not None:
            headers["Retry-After"] = str(d.retry_after_secs)
        return json_answer(
            d.status, shaped_error_body(shape, d.status, d.message, code=d.code), headers
        )

    # --------------------------------------------------------------- reports

    def finished(self, record: RequestRecord) -> None:
        """A request ended (its ledger row was reported): budgets and metrics."""
        # the ledger's own reading of the row, so budgets count what `usage` shows
        try:
            credits, tokens = spend_of(_usage(to_row(record)[11]))
        except (TypeError, ValueError, OverflowError, msgspec.MsgspecError) as e:
            # a malformed record: the writer skips it too (and says so)
            log.debug("request %s: no spending read: %s", record.request_id, e)
            credits, tokens = None, 0
        if record.key is not None and record.route_mode != "passthrough":
            self.activity.spent(record.key, self.clock(), credits, tokens)
        self.metrics.observe(record, credits)

    def seed(self, events: Iterable[tuple[str, float, float | None, int]]) -> int:
        """Spending read from the ledger at start-up (oldest first)."""
        return self.activity.seed(events)


__all__ = ["LIMIT_HEADER", "Gate", "Ticket"]

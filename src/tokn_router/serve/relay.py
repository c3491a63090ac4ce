"""The request path shared by every front end: route → account → upstream.

:meth:`Relay.route` resolves a client model id to the accounts that serve it;
:meth:`Relay.open` sends the request to the first one that accepts, failing
over before the first byte is sent to the client. What each upstream status
means for the account (relay, refresh once, cool down, shut a rate window) is
the pure table in :mod:`tokn_router.serve.policy`; a token refresh is
single-flight per account. A conversation stays on the account that served it
(:mod:`tokn_router.serve.sticky`); success answers feed the account's window
readings (:mod:`tokn_router.wire.quota`).

The caller then relays the opened response and closes the request's
:class:`~tokn_router.usage.inflight.RequestLog`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx2 as httpx
import trio

from tokn_router.accounts import providers
from tokn_router.accounts.pool import AccountState, Pool
from tokn_router.accounts.refresher import Refresher
from tokn_router.accounts.windows import IN_ROTATION
from tokn_router.errors import RequestError
from tokn_router.serve.policy import Action, decide
from tokn_router.serve.sticky import SessionTable
from tokn_router.usage.inflight import RequestLog
from tokn_router.wire.errors import upstream_error_text
from tokn_router.wire.quota import LimitKind, classify_limit, retry_after_secs
from tokn_router.wire.translate.models import closest_ids

log = logging.getLogger("tokn_router.relay")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request may go: the upstream model id and the candidate accounts."""

    model: str  # the id sent upstream
    candidates: list[AccountState]
    premium: bool = True  # the model spends premium quota (unknown: it does)


# (account, token) -> (body bytes, headers) for one attempt
BuildRequest = Callable[[AccountState, str], tuple[bytes, dict[str, str]]]
# The upstream path: one for every account, or chosen per account (the agent
# APIs go native on accounts whose model lists the endpoint, else translate).
UpstreamPath = str | Callable[[AccountState], str]


@dataclass(slots=True)
class Opened:
    state: AccountState
    response: httpx.Response


class Relay:
    """Routes and sends requests; ``direct``, when given, carries every upstream request.

    The daemon passes its transport as ``direct`` when no outbound proxy is set:
    requests then skip ``AsyncClient.send`` (auth, redirects, cookies, hooks:
    none of which apply upstream; a sixth of a non-stream request's CPU), and
    a streamed body comes back as the transport's own cancel-safe stream
    (``serve/pump.py`` reads it without a helper task). With a proxy, the
    client's mounts decide the route and ``direct`` stays ``None``.
    """

    def __init__(
        self,
        pool: Pool,
        refresher: Refresher,
        client: httpx.AsyncClient,
        *,
        direct: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.pool = pool
        self.refresher = refresher
        self.client = client
        self.direct = direct
        self.sessions = SessionTable()

    # ---------------------------------------------------------------- routing

    async def route(
        self,
        requested: str,
        *,
        account_id: str | None,
        aliases: dict[str, str],
        resolve: Callable[[str, set[str]], str | None] | None = None,
    ) -> Route:
        """Resolve a client model id to candidates, or raise 404/503 RequestError."""
        if not self.pool.states:
            raise RequestError(
                503,
                "no account is configured: add one with `tokn-router login` "
                "(or `tokn-router import`) and the daemon picks it up",
                code="no_accounts",
                headers={"Retry-After": "60"},
            )
        model = aliases.get(requested, requested)
        provider_id: str | None = None
        prefix, sep, rest = model.partition("/")
        if sep and prefix in providers.PROVIDERS:
            provider_id, model = prefix, rest
        if account_id is not None:
            st = self.pool.find(account_id)
            if st is None:
                raise RequestError(
                    400,
                    f"X-Tokn-Account names an unknown account '{account_id}'",
                    code="unknown_account",
                )
        await self.pool.wait_ready()
        for attempt in range(2):
            resolved = model
            if resolve is not None:
                resolved = resolve(model, self.pool.known_models()) or model
            cands = self.pool.candidates(resolved, provider_id=provider_id, account_id=account_id)
            if cands:
                premium = self.pool.is_premium(cands, resolved)
                return Route(model=resolved, candidates=cands, premium=premium)
            if attempt == 0 and not await self._fetch_missing_models():
                break
        raise self._unknown_model(requested, account_id)

    async def _fetch_missing_models(self) -> bool:
        """Read model lists not fetched yet (start-up race); True if any was read."""
        pending = [
            s for s in self.pool.states if not s.models and s.token() and s.usable(time.time())
        ]
        if not pending:
            return False
        async with trio.open_nursery() as n:
            for st in pending:
                n.start_soon(self.refresher.fetch_models, st)
        return any(s.models for s in pending)

    def _unknown_model(self, requested: str, account_id: str | None) -> RequestError:
        close = closest_ids(requested.split("/")[-1], self.pool.known_models())
        where = f" on account '{account_id}'" if account_id else ""
        hint = f"; closest: {', '.join(close)}" if close else ""
        return RequestError(
            404,
            f"model '{requested}' is not served by any configured account{where}{hint}",
            code="model_not_found",
            param="model",
        )

    # --------------------------------------------------------------- sending

    async def open(
        self, route: Route, path: UpstreamPath, build: BuildRequest, rlog: RequestLog
    ) -> Opened:
        """Send to the first account that accepts; fail over before the first byte."""
        last_error = "no account was available"
        tried: list[AccountState] = []
        candidates, sticky = self._sticky_order(route, rlog)
        for st in candidates:
            if not st.usable(time.time(), route.premium):
                continue
            tried.append(st)
            opened, last_error = await self._try_account(st, route, path, build, rlog)
            if opened is not None:
                if sticky is not None:
                    self._bind(sticky, opened, rlog)
                return opened
        states = route.candidates
        soonest = self.pool.soonest_available(states, route.premium)
        retry_after = max(1, int(soonest - time.time()) + 1) if soonest else 30
        if not tried:
            msg = "every account that serves this model is cooling down"
            reasons = [f"{s.id}: {s.last_error}" for s in states if s.last_error]
            if reasons:
                last_error = reasons[0]
        else:
            msg = f"all {len(tried)} account(s) failed"
            last_error = f"{tried[-1].id}: {last_error}"
        # the row names the account that failed last (or the one the request was
        # pinned to), not "-": that is where to look
        blamed = tried[-1] if tried else (states[0] if len(states) == 1 else None)
        if blamed is not None:
            rlog.account_id = blamed.id
            rlog.provider_id = blamed.provider.id
        raise RequestError(
            503,
            f"{msg}; last upstream error: {last_error}",
            code="all_accounts_unavailable",
            headers={"Retry-After": str(retry_after)},
        )

    # -------------------------------------------------------- sticky sessions

    def _sticky_order(
        self, route: Route, rlog: RequestLog
    ) -> tuple[list[AccountState], _Sticky | None]:
        """The candidates with the conversation's account first while it is fit to serve."""
        session = rlog.extra.get("session")
        idle = float(self.pool.cfg.pool.sticky_idle_secs)
        if not isinstance(session, dict) or idle <= 0:
            return route.candidates, None
        key = session["key"]
        now = time.time()
        pinned = None if session.get("new") else self.sessions.lookup(key, now, idle)
        sticky = _Sticky(key, idle, pinned)
        if pinned is None:
            return route.candidates, sticky
        st = next((s for s in route.candidates if s.id == pinned), None)
        if st is None:
            # its account does not serve this model (e.g. a side request on a
            # small model): route it normally and keep the conversation's binding
            sticky.keep_binding = True
            return route.candidates, sticky
        if not st.usable(now, route.premium):
            sticky.reason = "unavailable"  # cooling down, or a window is used up
            return route.candidates, sticky
        if self.pool.tier(st, now, premium=route.premium) != IN_ROTATION and any(
            self.pool.tier(s, now, premium=route.premium) == IN_ROTATION for s in route.candidates
        ):
            sticky.reason = "reserve"  # below its reserve while another account has room
            return route.candidates, sticky
        return [st, *(s for s in route.candidates if s is not st)], sticky

    def _bind(self, sticky: _Sticky, opened: Opened, rlog: RequestLog) -> None:
        if opened.response.status_code >= 400 or sticky.keep_binding:
            return  # the request's own fault, or another model's account: not the session's
        served = opened.state.id
        if sticky.pinned is not None and served != sticky.pinned:
            reason = sticky.reason or "failed"
            session = rlog.extra["session"]
            session["switched_from"] = sticky.pinned
            session["switch_reason"] = reason
            log.info(
                "session %s moved from account %s to %s (%s)",
                sticky.key[:12],
                sticky.pinned,
                served,
                reason,
            )
        self.sessions.bind(sticky.key, served, time.time(), sticky.idle)

    async def _try_account(
        self,
        st: AccountState,
        route: Route,
        path: UpstreamPath,
        build: BuildRequest,
        rlog: RequestLog,
    ) -> tuple[Opened | None, str]:
        refreshed = False
        while True:
            if st.needs_credential():
                gen = st.generation
                if not await self.refresher.refresh(st, seen_generation=gen) and st.token() is None:
                    # the refresher holds the account back (and retries in the
                    # background): no exchange on every request, and no upstream
                    # cooldown that would outlast GitHub's recovery
                    reason = st.disabled_reason or st.last_error or "no credential"
                    rlog.attempts.append({"account_id": st.id, "status": 0, "error": reason})
                    return None, reason
            token = st.token()
            if not token:
                reason = "no credential"
                rlog.attempts.append({"account_id": st.id, "status": 0, "error": reason})
                return None, reason
            gen = st.generation
            body, headers = build(st, token)
            url = st.base_url() + (path if isinstance(path, str) else path(st))
            try:
                req = self.client.build_request("POST", url, content=body, headers=headers)
                if self.direct is not None:
                    resp = await self.direct.handle_async_request(req)
                    resp.request = req
                else:
                    resp = await self.client.send(req, stream=True)
            except httpx.TimeoutException as e:
                reason = f"timeout talking to {st.provider.id} ({type(e).__name__})"
                rlog.attempts.append({"account_id": st.id, "status": 0, "error": reason})
                self.pool.cool_down(st, None, reason)
                return None, reason
            except httpx.HTTPError as e:
                reason = f"cannot reach {url}: {type(e).__name__}: {e}"
                rlog.attempts.append({"account_id": st.id, "status": 0, "error": reason})
                self.pool.cool_down(st, None, reason)
                return None, reason
            status = resp.status_code
            decision = decide(status, can_refresh=st.provider.needs_refresh() and not refreshed)
            if decision.action is Action.ANSWER:
                self.pool.succeeded(st)
                self.pool.observe(st, resp.headers.multi_items(), premium=route.premium)
            if decision.action in (Action.ANSWER, Action.RELAY):
                rlog.attempts.append({"account_id": st.id, "status": status})
                return Opened(st, resp), ""
            try:
                err_body = await resp.aread()
            except httpx.HTTPError:
                err_body = b""
            finally:
                with trio.CancelScope(shield=True):
                    await resp.aclose()
            reason = upstream_error_text(status, err_body, resp.headers.get("content-type", ""))
            limit = classify_limit(status, resp.headers, err_body)
            if limit is not None and limit.kind is not LimitKind.BURST:
                reason = f"{reason} [{_window_name(limit.kind)} used up: {limit.detail}]"
            rlog.attempts.append({"account_id": st.id, "status": status, "error": reason})
            if decision.action is Action.REFRESH:
                refreshed = True
                log.info("account %s: upstream %s, refreshing the token once", st.id, status)
                if await self.refresher.refresh(st, seen_generation=gen):
                    continue
                decision = decide(status, can_refresh=False)
            if limit is not None:
                decision = decide(status, can_refresh=False, limit=limit.kind)
            if decision.window is not None and limit is not None:
                self.pool.exhaust(st, limit, reason, premium=route.premium)
                return None, reason
            retry_after = None
            if decision.honour_retry_after:
                retry_after = retry_after_secs(resp.headers)
            self.pool.cool_down(st, retry_after, reason)
            return None, reason


@dataclass(slots=True)
class _Sticky:
    """One request's view of its conversation's binding."""

    key: str
    idle: float
    pinned: str | None  # the account the conversation was on
    reason: str | None = None  # why it cannot stay there (before any attempt)
    keep_binding: bool = False  # served elsewhere without moving the conversation


def _window_name(kind: LimitKind) -> str:
    return {
        LimitKind.SESSION: "the session window",
        LimitKind.WEEKLY: "the weekly window",
        LimitKind.QUOTA: "the quota",
    }.get(kind, kind.value)

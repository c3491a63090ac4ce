"""Keeping accounts usable: mint short-lived credentials, read model lists.

One :meth:`Refresher.run_account` task per account refreshes its credential
before it expires and re-reads its ``/models`` every ten minutes. The request
path calls :meth:`Refresher.refresh` after an upstream 401; the refresh is
single-flight per account, so concurrent 401s trigger one exchange and the
others reuse its result.

A failed exchange (GitHub down, a 5xx) is retried in the background with a
capped exponential back-off. While no usable token is left the account is
held back, for at most ``request_retry`` seconds at a time: after that a
request may try the exchange once more, so an account comes back soon after
GitHub does even deep into the back-off. Such request-time attempts do not
grow the back-off: clients hammering an account cannot push its recovery out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2 as httpx
import msgspec
import trio

from tokn_router.accounts.pool import AccountState, Pool
from tokn_router.accounts.providers.base import Credential
from tokn_router.accounts.schema import GithubConfig
from tokn_router.errors import AuthError, ToknError, UpstreamError

log = logging.getLogger("tokn_router.pool")

MODELS_TTL_SECS = 600.0
# Back-off of the background exchange retries: 5 s, 10 s, 20 s ... capped at 5 min.
RETRY_FIRST_SECS = 5.0
RETRY_CAP_SECS = 300.0
# The longest a failing account is held back before a request may retry the exchange.
REQUEST_RETRY_SECS = 30.0
# A token this close to expiry no longer counts as usable when a refresh fails.
EXPIRY_MARGIN_SECS = 60.0


CONTROL_TIMEOUT_SECS = 15.0  # default; the daemon passes [upstream] connect_timeout_secs


def backoff_delay(failures: int, first: float, cap: float) -> float:
    """Seconds before background retry number ``failures`` (1 = the first retry)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, first * 2 ** min(failures - 1, 32)))


Persist = Callable[[str, Credential], Awaitable[None]]
"""Stores a refreshed credential (the daemon writes it to the config file)."""


class _ModelList(msgspec.Struct):
    data: list[dict[str, Any]] = msgspec.field(default_factory=list)


_models_decoder = msgspec.json.Decoder(_ModelList)


class Refresher:
    """Mints short-lived credentials and reads model lists for accounts."""

    def __init__(
        self,
        pool: Pool,
        client: httpx.AsyncClient,
        github: GithubConfig,
        persist: Persist,
        *,
        retry_first: float = RETRY_FIRST_SECS,
        retry_cap: float = RETRY_CAP_SECS,
        request_retry: float = REQUEST_RETRY_SECS,
        control_timeout: float = CONTROL_TIMEOUT_SECS,
    ) -> None:
        self.pool = pool
        # The token exchange and /models are control-plane calls: a GitHub that accepts
        # the connection and never answers must not hold them for the stream read
        # timeout (minutes); they give up after this many seconds.
        self.control_timeout = control_timeout
        self.client = client
        self.github = github
        self.persist = persist
        self.retry_first = retry_first
        self.retry_cap = retry_cap
        self.request_retry = request_retry

    def retry_delay(self, st: AccountState) -> float:
        """When the background task tries a failing exchange again."""
        return backoff_delay(st.exchange_failures, self.retry_first, self.retry_cap)

    async def refresh(
        self, st: AccountState, *, seen_generation: int | None = None, background: bool = False
    ) -> bool:
        """Refresh one account's credential once, single-flight.

        When ``seen_generation`` is given and another task already replaced
        that credential, the refresh is skipped and the new one reused.
        Only ``background`` attempts (the account's own task) count towards
        the retry back-off. Returns True when a usable credential is in place.
        """
        if not st.provider.needs_refresh():
            return st.token() is not None
        async with st.refresh_lock:
            if seen_generation is not None and st.generation != seen_generation:
                return st.credential is not None
            try:
                cred = await self._mint(st)
            except AuthError as e:
                if e.status in (401, 404):
                    if not st.disabled_reason:
                        st.disabled_reason = str(e)
                        log.error("account %s disabled: %s", st.id, e)
                else:
                    self._failed(st, str(e), background)
                return False
            except UpstreamError as e:
                self._failed(st, str(e), background)
                return False
            except httpx.HTTPError as e:
                self._failed(st, f"token exchange failed: {type(e).__name__}: {e}", background)
                return False
            st.set_credential(cred)
            self.pool.credential_minted(st)
            st.wake.set()  # the account's task reads the model list now
            try:
                await self.persist(st.id, cred)
            except ToknError as e:
                log.warning("account %s: could not persist the refreshed token: %s", st.id, e)
            return True

    def _hold(self, st: AccountState) -> float:
        # counted as at least one failure: a request-time attempt right after a
        # reset must not leave the account open to an exchange per request
        delay = backoff_delay(max(st.exchange_failures, 1), self.retry_first, self.retry_cap)
        return min(delay, self.request_retry)

    def _failed(self, st: AccountState, reason: str, background: bool) -> None:
        if background:
            st.exchange_failures += 1
        now = time.time()
        cred = st.credential
        left = None if cred is None or cred.expires_at is None else cred.expires_at - now
        if cred is not None and (left is None or left > EXPIRY_MARGIN_SECS):
            # the current token still works: keep serving with it and try
            # again later, not on every request
            st.refresh_at = now + self._hold(st)
            log.warning(
                "account %s: token refresh failed (the current token still works): %s",
                st.id,
                reason,
            )
            self.pool.credential_failed(st, reason, None)
            return
        hold = self._hold(st)
        log.warning("account %s: %s (held back for %.0fs)", st.id, reason, hold)
        self.pool.credential_failed(st, reason, hold)

    async def _mint(self, st: AccountState) -> Credential:
        req = st.provider.refresh_request(st.account, self.github)
        try:
            resp = await self.client.get(req.url, headers=req.headers, timeout=self.control_timeout)
        except httpx.HTTPError as e:
            raise UpstreamError(
                f"token exchange failed: cannot reach {req.url}: {type(e).__name__}: {e}"
            ) from None
        return st.provider.parse_refresh(resp.status_code, resp.content)

    async def fetch_models(self, st: AccountState) -> None:
        """Read the account's live model list; the static one stays when that fails.

        A 401 or 403 means the token went stale before its time (revoked, or
        replaced by another client): as on the request path, refresh it once
        (single-flight) and ask again, instead of settling for the static list
        until the next read ten minutes later.
        """
        answer = await self._get_models(st)
        if answer is None:
            return
        gen, resp = answer
        if resp.status_code in (401, 403) and st.provider.needs_refresh():
            log.info(
                "account %s: /models answered %s, refreshing the token once",
                st.id,
                resp.status_code,
            )
            if not await self.refresh(st, seen_generation=gen):
                log.info("account %s: token refresh failed; using the static list", st.id)
                return
            answer = await self._get_models(st)
            if answer is None:
                return
            _, resp = answer
        if resp.status_code != 200:
            log.info(
                "account %s: /models answered %s; using the static list", st.id, resp.status_code
            )
            return
        try:
            data = _models_decoder.decode(resp.content).data
        except msgspec.DecodeError:
            return
        st.models = {e["id"]: e for e in data if isinstance(e.get("id"), str)}
        st.models_fetched_at = time.monotonic()

    async def _get_models(self, st: AccountState) -> tuple[int, httpx.Response] | None:
        """``GET /models`` with the current token: (its credential generation, the answer)."""
        token = st.token()
        if not token:
            return None
        gen = st.generation
        url = st.base_url() + "/models"
        try:
            resp = await self.client.get(
                url,
                headers=st.provider.model_headers(st.account, token),
                timeout=self.control_timeout,
            )
        except httpx.HTTPError as e:
            log.info("account %s: cannot list models (%s); using the static list", st.id, e)
            return None
        return gen, resp

    async def run_account(self, st: AccountState) -> None:
        """One account's background task: keep the credential fresh, list models."""
        while not st.removed:
            if st.disabled_reason or not st.account.enabled:
                st.ready.set()
                await self._wait(st, None)
                continue
            if st.needs_credential():
                ok = await self.refresh(st, background=True)
                if not ok:
                    st.ready.set()
                    if st.disabled_reason:
                        continue
                    await self._wait(st, self.retry_delay(st))
                    continue
            if not st.models or time.monotonic() - st.models_fetched_at > MODELS_TTL_SECS:
                await self.fetch_models(st)
            st.ready.set()
            await self._wait(st, self._next_wake(st))

    def _next_wake(self, st: AccountState) -> float:
        delay = MODELS_TTL_SECS
        if st.provider.needs_refresh() and st.credential is not None:
            delay = min(delay, max(0.5, st.refresh_at - time.time()))
        return delay

    async def _wait(self, st: AccountState, delay: float | None) -> None:
        st.wake = trio.Event()
        if delay is None:
            await st.wake.wait()
        else:
            with trio.move_on_after(delay):
                await st.wake.wait()

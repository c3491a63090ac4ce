"""The account pool: who can serve a request, in which order, and who is cooling down.

Each configured account has an :class:`AccountState` holding its live
credential, cooldown and model list. The pool picks candidates round robin,
ordered by quota headroom (:mod:`tokn_router.accounts.windows`), applies pins
(``provider/model``, ``X-Tokn-Account``), and records outcomes: cooldowns with
``Retry-After`` or exponential back-off capped at 16x, and per-window
exhaustion (session, weekly, quota) until that window's reset.

Credentials and model lists are kept fresh by
:class:`~tokn_router.accounts.refresher.Refresher`, one task per account; this
module holds only the state and the choices, and does no I/O.

It is one module of over 400 lines because account state, cooldowns, windows and the
choice of an account are one set of rules over the same fields.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from tokn_router.accounts import providers
from tokn_router.accounts.providers.base import Credential, Provider
from tokn_router.accounts.schema import Account, Config
from tokn_router.accounts.windows import Choice, Windows, is_premium, order, tier
from tokn_router.wire.quota import Limit, read_windows

log = logging.getLogger("tokn_router.pool")

MAX_BACKOFF_FACTOR = 16


@dataclass(eq=False)
class AccountState:
    account: Account
    provider: Provider
    credential: Credential | None = None
    generation: int = 0  # bumps at each new credential
    refresh_at: float = 0.0  # wall-clock time the credential should be replaced
    cooldown_until: float = 0.0  # wall-clock seconds
    failures: int = 0
    # The token exchange failed and no usable token is left: requests skip the
    # account until then. Kept apart from cooldown_until (an upstream verdict
    # such as a 429) because a minted credential ends it at once.
    credential_hold_until: float = 0.0
    exchange_failures: int = 0  # consecutive failed exchanges (the refresher's back-off)
    disabled_reason: str | None = None
    last_error: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> upstream entry
    models_fetched_at: float = 0.0
    refresh_lock: trio.Lock = field(default_factory=trio.Lock)
    wake: trio.Event = field(default_factory=trio.Event)
    # set once the first credential + model-list attempt is over (success or not),
    # so requests arriving during start-up wait instead of seeing a partial pool
    ready: trio.Event = field(default_factory=trio.Event)
    removed: bool = False
    windows: Windows = field(default_factory=Windows)  # rate windows and quotas

    @property
    def id(self) -> str:
        return self.account.id

    def usable(self, now: float, premium: bool = True) -> bool:
        """Enabled, not cooling down, and no window a (premium) request spends is used up."""
        return (
            self.account.enabled
            and not self.disabled_reason
            and not self.removed
            and self.available_at(now, premium) <= now
        )

    def available_at(self, now: float, premium: bool = True) -> float:
        """When the account takes such a request again (<= now: it does)."""
        return max(
            self.cooldown_until,
            self.credential_hold_until,
            self.windows.exhausted_until(now, premium=premium),
        )

    def serves(self, model: str) -> bool:
        if self.models:
            return model in self.models
        return model in self.provider.static_models

    def token(self) -> str | None:
        if self.credential is not None:
            return self.credential.token
        return self.provider.token(self.account)

    def base_url(self) -> str:
        return self.provider.base_url(self.account, self.credential)

    def needs_credential(self) -> bool:
        """A short-lived credential that is missing or about to expire."""
        if not self.provider.needs_refresh():
            return False
        cred = self.credential
        if cred is None or not cred.token:
            return True
        return time.time() >= self.refresh_at

    def set_credential(self, cred: Credential | None) -> None:
        """Install a credential and schedule its replacement.

        Refresh at ``refresh_in`` when upstream said so (GitHub suggests one
        well before expiry), else five minutes before ``expires_at``, so a
        request never goes out with a token that expires on the way.
        """
        self.credential = cred
        self.generation += 1
        now = time.time()
        if cred is None:
            self.refresh_at = 0.0
            return
        due = math.inf
        if cred.refresh_in is not None:
            due = now + max(1.0, float(cred.refresh_in))
        if cred.expires_at is not None:
            due = min(due, cred.expires_at - 300)
        self.refresh_at = due

    def health(self, now: float) -> dict[str, Any]:
        """The account's block of ``/healthz``.

        ``cooling_down`` covers a back-off and a used-up window alike (then
        ``cooldown_window`` names it); ``quota_exhausted``: the premium quota is
        used up, free (0x) models are still served.
        """
        state = "healthy"
        until = self.available_at(now, premium=False)
        if not self.account.enabled or self.disabled_reason:
            state = "disabled"
        elif until > now:
            state = "cooling_down"
        elif self.available_at(now, premium=True) > now:
            state = "quota_exhausted"
        elif self.provider.needs_refresh() and self.credential is None:
            state = "no_credential"
        out: dict[str, Any] = {
            "id": self.id,
            "provider": self.provider.id,
            "state": state,
            "models": len(self.models),
        }
        if state in ("cooling_down", "quota_exhausted"):
            premium = state == "quota_exhausted"
            until = self.available_at(now, premium=premium)
            out["cooldown_until"] = int(until)
            out["retry_after_secs"] = math.ceil(until - now)
            shut = self.windows.blocking(now, premium=premium)
            if shut is not None and shut[1].exhausted_until >= self.cooldown_until:
                out["cooldown_window"] = shut[0]
        if self.windows:
            out["windows"] = self.windows.as_json(now)
        if self.account.reserve_percent:
            out["reserve_percent"] = self.account.reserve_percent
        if self.disabled_reason:
            out["disabled_reason"] = self.disabled_reason
        elif not self.account.enabled:
            out["disabled_reason"] = "enabled = false in the config"
        if self.last_error:
            out["last_error"] = self.last_error
        if self.credential and self.credential.expires_at:
            out["token_expires_at"] = self.credential.expires_at
        return out


def _initial_credential(account: Account, provider: Provider) -> Credential | None:
    if provider.needs_refresh():
        if account.access_token:
            return Credential(
                token=account.access_token,
                expires_at=account.access_token_expires_at,
                api_base=account.api_base_url,
            )
        return None
    if account.api_key:
        return Credential(token=account.api_key)
    return None


# Fields the daemon writes back itself after a token exchange: a change in them
# is not an edit by the user.
_MINTED_FIELDS = {"access_token": None, "access_token_expires_at": None, "api_base_url": None}


def _edited(old: Account, new: Account) -> bool:
    return msgspec.structs.replace(old, **_MINTED_FIELDS) != msgspec.structs.replace(
        new, **_MINTED_FIELDS
    )


def _install_stored(st: AccountState) -> None:
    """Install the credential stored in the config.

    A stored Copilot token without the endpoint its exchange named is
    exchanged again at once: the API base guessed from the token's
    ``proxy-ep`` is only the last resort (used while GitHub is unreachable).
    """
    cred = _initial_credential(st.account, st.provider)
    st.set_credential(cred)
    if (
        cred is not None
        and st.provider.needs_refresh()
        and cred.api_base is None
        and not st.account.base_url
    ):
        st.refresh_at = 0.0


class Pool:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.states: list[AccountState] = []
        self._rr = 0
        # windows saved by an earlier run, for accounts not configured yet
        self._restored: dict[str, Any] = {}
        self.windows_version = 0  # bumps whenever a window changes (the daemon saves them)
        self._windows_event = trio.Event()
        self.apply_config(cfg)

    # ----------------------------------------------------------------- config

    def apply_config(self, cfg: Config) -> tuple[list[AccountState], list[AccountState]]:
        """Adopt a (re)loaded config; returns (added, removed) states.

        Existing accounts keep their live credential, cooldown and model list
        unless their credentials changed in the file; an account whose table
        was edited (beyond the minted token the daemon itself writes back)
        also loses its cooldown and error. In-flight requests hold their own
        reference, so removed accounts finish what they serve.
        """
        self.cfg = cfg
        old = {s.id: s for s in self.states}
        new_states: list[AccountState] = []
        added: list[AccountState] = []
        for acc in cfg.accounts:
            prov = providers.get(acc.provider)
            st = old.pop(acc.id, None)
            if st is None or st.provider is not prov:
                if st is not None:
                    st.removed = True
                    old[acc.id + "\0replaced"] = st
                st = AccountState(account=acc, provider=prov)
                _install_stored(st)
                if acc.id in self._restored:
                    st.windows = Windows.load(self._restored.pop(acc.id))
                added.append(st)
            else:
                creds_changed = (
                    st.account.refresh_token != acc.refresh_token
                    or st.account.api_key != acc.api_key
                    or st.account.base_url != acc.base_url
                    or (
                        acc.access_token
                        and (st.credential is None or acc.access_token != st.credential.token)
                        and acc.access_token != st.account.access_token
                    )
                )
                edited = _edited(st.account, acc)
                st.account = acc
                if creds_changed:
                    _install_stored(st)
                    st.models = {}
                    st.models_fetched_at = 0.0
                if creds_changed or edited:
                    # a fixed account starts fresh: its old cooldown and error
                    # were about the account as it was
                    self.reset(st)
            new_states.append(st)
        removed = list(old.values())
        for st in removed:
            st.removed = True
            st.wake.set()
        self.states = new_states
        return added, removed

    # ------------------------------------------------------------- selection

    def serving(self, model: str, *, provider_id: str | None = None) -> list[AccountState]:
        return [
            s
            for s in self.states
            if s.account.enabled
            and not s.disabled_reason
            and (provider_id is None or s.provider.id == provider_id)
            and s.serves(model)
        ]

    def candidates(
        self,
        model: str,
        *,
        provider_id: str | None = None,
        account_id: str | None = None,
    ) -> list[AccountState]:
        """Accounts that can serve ``model``, in the order to try them.

        Round robin, then :func:`~tokn_router.accounts.windows.order`: the most
        headroom first, below-reserve accounts as a last resort, cooling ones last.
        """
        if account_id is not None:
            return [s for s in self.states if s.id == account_id and s.serves(model)]
        found = self.serving(model, provider_id=provider_id)
        if not found:
            return []
        start = self._rr % len(found)
        self._rr += 1
        rotated = found[start:] + found[:start]
        premium = self.is_premium(rotated, model)
        now = time.time()
        choices = [self.choice(s, now, premium=premium) for s in rotated]
        return [rotated[i] for i in order(choices)]

    def is_premium(self, states: Iterable[AccountState], model: str) -> bool:
        """Does a request for ``model`` spend premium quota? (Unknown: yes.)"""
        return is_premium(s.models.get(model) for s in states)

    def choice(self, st: AccountState, now: float, *, premium: bool) -> Choice:
        return Choice(
            headroom=st.windows.headroom(now, premium=premium),
            reserve=st.account.reserve_percent,
            exhausted=not st.usable(now, premium),
        )

    def tier(self, st: AccountState, now: float, *, premium: bool) -> int:
        """0: in rotation, 1: below its reserve, 2: cooling down or window used up."""
        return tier(self.choice(st, now, premium=premium))

    def pick(self, states: list[AccountState]) -> AccountState:
        """One of ``states`` in round-robin order (shares the pool's rotation)."""
        self._rr += 1
        return states[self._rr % len(states)]

    def find(self, account_id: str) -> AccountState | None:
        return next((s for s in self.states if s.id == account_id), None)

    # -------------------------------------------------------------- outcomes

    def succeeded(self, st: AccountState) -> None:
        st.failures = 0
        st.last_error = None

    def reset(self, st: AccountState) -> None:
        """Forget an account's cooldown, error and back-off; its refresher retries at once."""
        st.cooldown_until = 0.0
        st.failures = 0
        st.credential_hold_until = 0.0
        st.exchange_failures = 0
        st.disabled_reason = None
        st.last_error = None
        if st.credential is None or st.credential.token is None:
            st.refresh_at = 0.0
        st.wake.set()

    def credential_failed(self, st: AccountState, reason: str, hold: float | None) -> None:
        """The token exchange failed; with ``hold``, skip the account that long.

        A hold is not an upstream failure: it does not grow :meth:`cool_down`'s
        back-off, and a credential minted later ends it at once.
        """
        st.last_error = reason
        if hold is not None:
            st.credential_hold_until = time.time() + hold

    def credential_minted(self, st: AccountState) -> None:
        st.credential_hold_until = 0.0
        st.exchange_failures = 0
        st.last_error = None

    def cool_down(self, st: AccountState, retry_after: float | None, reason: str) -> float:
        """Put an account aside; returns the cooldown length in seconds."""
        st.failures += 1
        if retry_after is None:
            base = float(self.cfg.pool.failure_cooldown_secs)
            factor = min(2 ** (st.failures - 1), MAX_BACKOFF_FACTOR)
            retry_after = base * factor
        st.cooldown_until = max(st.cooldown_until, time.time() + retry_after)
        st.last_error = reason
        log.warning("account %s cooling down for %.0fs: %s", st.id, retry_after, reason)
        return retry_after

    def soonest_available(
        self, states: Iterable[AccountState], premium: bool = True
    ) -> float | None:
        now = time.time()
        ends = [e for s in states if (e := s.available_at(now, premium)) > now]
        return min(ends) if ends else None

    # ---------------------------------------------------------------- windows

    def observe(
        self, st: AccountState, headers: Iterable[tuple[str, str]], *, premium: bool
    ) -> None:
        """Remember the window and quota readings of a success answer."""
        readings = read_windows(headers)
        if (readings or st.windows) and st.windows.observe(readings, time.time(), premium=premium):
            self._note_windows()

    def exhaust(self, st: AccountState, limit: Limit, reason: str, *, premium: bool) -> float:
        """Shut the window ``limit`` names until its reset; returns the seconds until then."""
        now = time.time()
        name, until = st.windows.exhaust(
            limit, now, premium=premium, fallback_secs=float(self.cfg.pool.window_cooldown_secs)
        )
        st.last_error = reason
        self._note_windows()
        free = (
            "; free (0x) models are still served" if st.windows.by_name[name].premium_only else ""
        )
        log.warning(
            "account %s: %s window used up until %s (%s)%s",
            st.id,
            name,
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until)),
            limit.detail,
            free,
        )
        return until - now

    def _note_windows(self) -> None:
        self.windows_version += 1
        self._windows_event.set()

    async def wait_windows_change(self, seen: int) -> int:
        """Wait until :attr:`windows_version` moves past ``seen`` (one waiter: the daemon)."""
        while self.windows_version == seen:
            self._windows_event = trio.Event()
            await self._windows_event.wait()
        return self.windows_version

    def windows_snapshot(self) -> dict[str, Any]:
        """Every account's windows, for the state file (see ``accounts/window_store.py``)."""
        return {s.id: s.windows.dump() for s in self.states if s.windows}

    def restore_windows(self, saved: Mapping[str, Any]) -> None:
        """Adopt windows saved by an earlier run (a used-up week stays used up)."""
        for st in self.states:
            if st.id in saved:
                st.windows = Windows.load(saved[st.id])
        known = {s.id for s in self.states}
        self._restored = {k: v for k, v in saved.items() if k not in known}

    # ---------------------------------------------------------------- models

    def model_entries(self) -> list[tuple[AccountState, dict[str, Any]]]:
        """The union of upstream model entries, de-duplicated by id (first wins)."""
        seen: set[str] = set()
        out: list[tuple[AccountState, dict[str, Any]]] = []
        for st in self.states:
            if not st.account.enabled or st.disabled_reason:
                continue
            entries: Iterable[dict[str, Any]] = st.models.values()
            if not st.models:
                entries = (
                    {"id": m, "object": "model", "owned_by": st.provider.id}
                    for m in st.provider.static_models
                )
            for entry in entries:
                mid = entry.get("id")
                if isinstance(mid, str) and mid not in seen:
                    seen.add(mid)
                    out.append((st, entry))
        return out

    async def wait_ready(self, limit: float = 15.0) -> None:
        """Wait (bounded) until every account finished its first refresh/model read."""
        if all(st.ready.is_set() for st in self.states):
            return  # the steady state: no cancel scope, no checkpoint on the hot path
        with trio.move_on_after(limit):
            for st in list(self.states):
                await st.ready.wait()

    def known_models(self) -> set[str]:
        return {e["id"] for _, e in self.model_entries()}

"""Whether a listener demands client keys, and what happens to a request without one.

The rule: a listener bound to a non-loopback address requires keys unless the
config says ``[server] auth = "none"``; on loopback keys are optional unless it
says ``auth = "keys"``. Pure functions; the caller passes the bind address, the
setting, the key found in the request and what the key store made of it.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from tokn_router.clients.extract import KEY_PREFIX, Presented

AUTH_SETTINGS = ("none", "keys")  # values of [server] auth; unset = decided by the bind


class AuthMode(enum.Enum):
    REQUIRED = "required"  # no valid key, no service
    # A valid key is honoured (attribution, limits); no key or a value that is not
    # shaped like one of ours (``sk-dummy``, which SDKs insist on) is anonymous; a
    # ``tkr_…`` value that does not verify is refused, so a revoked key is noticed.
    OPTIONAL = "optional"
    OFF = "off"  # keys are not looked at


def is_loopback_bind(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``[::1]``, ``localhost``: only this machine can connect."""
    host = host.strip()
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_mode(bind_host: str, setting: str | None) -> AuthMode:
    """The mode of a listener bound to ``bind_host`` under ``[server] auth = setting``.

    ``setting`` is None when unset. Raises ValueError for any other value than
    those in :data:`AUTH_SETTINGS` (the config schema rejects them first).
    """
    if setting is not None and setting not in AUTH_SETTINGS:
        raise ValueError(f"unknown auth setting {setting!r} (use 'none' or 'keys')")
    if setting == "none":
        return AuthMode.OFF
    if setting == "keys" or not is_loopback_bind(bind_host):
        return AuthMode.REQUIRED
    return AuthMode.OPTIONAL


# One message per case, the same whatever key was sent: no hint of which keys exist.
MISSING_MESSAGE = (
    f"a client key is required: send it as 'Authorization: Bearer {KEY_PREFIX}…' "
    "or 'x-api-key' (ask the server's admin for one)"
)
MISSING_PROXY_MESSAGE = (
    "a client key is required: put it in the proxy URL as the password "
    f"(http://route:{KEY_PREFIX}…@host:port) or send 'Proxy-Authorization: Bearer {KEY_PREFIX}…'"
)
INVALID_MESSAGE = "invalid client key: it is unknown, revoked or expired"


@dataclass(frozen=True, slots=True)
class Accepted:
    """Serve the request; ``key_name`` is None for an anonymous request."""

    key_name: str | None
    ok: bool = True


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refuse with ``status``: 401 on the API, 407 (with a challenge) on the proxy."""

    message: str
    status: int = 401
    code: str = "invalid_api_key"
    ok: bool = False

    @property
    def proxy_authenticate(self) -> str:
        """The ``Proxy-Authenticate`` value of a 407, so clients send their userinfo."""
        return 'Basic realm="tokn-router"'


AuthOutcome = Accepted | Rejected


def decide(
    mode: AuthMode,
    presented: Presented | None,
    verified_name: str | None,
    *,
    proxy: bool = False,
) -> AuthOutcome:
    """Accept or reject a request given the listener's mode and the key check.

    ``verified_name`` is the name of the key the store verified ``presented`` as
    (None when nothing was presented or it did not verify). ``proxy`` selects the
    proxy's status (407) and wording.
    """
    if mode is AuthMode.OFF:
        return Accepted(None)
    if verified_name is not None and presented is not None:
        return Accepted(verified_name)
    status = 407 if proxy else 401
    if presented is None or (mode is AuthMode.OPTIONAL and not presented.looks_like_key):
        if mode is AuthMode.OPTIONAL:
            return Accepted(None)
        return Rejected(MISSING_PROXY_MESSAGE if proxy else MISSING_MESSAGE, status=status)
    return Rejected(INVALID_MESSAGE, status=status)

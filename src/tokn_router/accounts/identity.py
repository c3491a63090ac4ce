"""The editor identity Copilot expects: one consistent set, overridable without a release.

Three layers, later ones winning, each value tagged with where it came from:

1. ``default``: the packaged set, ``tokn_router/data/identity.toml`` (a VS Code
   release, the Copilot Chat release built for it, and their API version);
2. ``[identity]``: the config's global section (:class:`~tokn_router.accounts.schema.IdentityConfig`),
   for following a newer release before tokn-router ships one;
3. ``account``: an account's ``[accounts.settings]`` (the keys it has).

:func:`resolve` builds an :class:`Identity` from the first two; the header
builder (:mod:`tokn_router.accounts.providers.copilot`) applies the third.
The daemon installs the config's identity with :func:`configure` at start and
at every config reload; :func:`current` is what requests use (the packaged set
and a per-process install id until then, e.g. in tests and one-off commands).

Per-account device ids (``VScode-SessionId``, ``VScode-MachineId``,
``Editor-Device-Id``) are stable and random-looking, derived by hashing the
account id with a random *install id* kept in the state dir (``install-id.json``):
never from a token, so nothing secret can leak through them, and two installs
never share them. They keep the shapes VS Code uses (a 64-hex machine id, a UUID
device id, a UUID plus a millisecond timestamp for the session).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

import msgspec

from tokn_router.accounts.schema import AccountSettings, IdentityConfig
from tokn_router.errors import ConfigError

_DATA_PACKAGE = "tokn_router.data"
_DATA_FILE = "identity.toml"
INSTALL_ID_FILE = "install-id.json"

Source = Literal["default", "[identity]", "account"]


class IdentitySet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One consistent set of identity values (the packaged file's keys)."""

    editor_version: str
    editor_plugin_version: str
    user_agent: str
    copilot_integration_id: str
    openai_intent: str
    github_api_version: str
    token_api_version: str
    user_agent_library: str


FIELDS: tuple[str, ...] = IdentitySet.__struct_fields__
# The set's keys an account can override in [accounts.settings].
ACCOUNT_FIELDS: tuple[str, ...] = tuple(f for f in FIELDS if f in AccountSettings.__struct_fields__)


@cache
def packaged() -> IdentitySet:
    """The packaged set (read once)."""
    from importlib import resources

    text = resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE).read_text(encoding="utf-8")
    return msgspec.convert(tomllib.loads(text), IdentitySet)


# The packaged values, for code that needs no override (and older importers).
EDITOR_VERSION = packaged().editor_version
EDITOR_PLUGIN_VERSION = packaged().editor_plugin_version
USER_AGENT = packaged().user_agent
COPILOT_INTEGRATION_ID = packaged().copilot_integration_id
OPENAI_INTENT = packaged().openai_intent
GITHUB_API_VERSION = packaged().github_api_version
TOKEN_API_VERSION = packaged().token_api_version
USER_AGENT_LIBRARY = packaged().user_agent_library


# ------------------------------------------------------------------ install id


@dataclass(frozen=True, slots=True)
class InstallId:
    """A random id per installation (state dir), the seed of the device ids."""

    id: str  # 32 hex digits
    created_ms: int  # unix milliseconds (the session id's timestamp part)

    @classmethod
    def new(cls) -> InstallId:
        return cls(secrets.token_hex(16), int(time.time() * 1000))


def _read_install_id(path: Path) -> InstallId | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable install id ({e}); delete the file") from None
    iid, created = (data.get("id"), data.get("created_ms")) if isinstance(data, dict) else (0, 0)
    if not (isinstance(iid, str) and len(iid) == 32 and isinstance(created, int)):
        raise ConfigError(f"{path}: not an install id; delete the file to make a new one")
    try:
        int(iid, 16)
    except ValueError:
        raise ConfigError(f"{path}: not an install id; delete the file to make a new one") from None
    return InstallId(iid, created)


def load_install_id(state_dir: Path) -> InstallId:
    """The state dir's install id, created on first use.

    Created with a hard link from a complete temp file, so two processes
    starting at once (a daemon and a CLI command) agree on one id.
    """
    path = state_dir / INSTALL_ID_FILE
    found = _read_install_id(path)
    if found is not None:
        return found
    new = InstallId.new()
    data = json.dumps({"id": new.id, "created_ms": new.created_ms}) + "\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".install-id.", dir=state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
            with contextlib.suppress(FileExistsError):  # another process won: use its id
                os.link(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the install id: {e.strerror}") from None
    found = _read_install_id(path)
    assert found is not None
    return found


@dataclass(frozen=True, slots=True)
class DeviceIds:
    session_id: str  # VScode-SessionId: a UUID followed by a millisecond timestamp
    machine_id: str  # VScode-MachineId: 64 hex digits
    device_id: str  # Editor-Device-Id: a UUID


def uuid_form(hex32: str) -> str:
    """32 hex digits in the 8-4-4-4-12 UUID layout (string slicing: no uuid objects)."""
    h = hex32
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _uuid(digest: str) -> str:
    # a version-4 (random) UUID's fixed bits, so the id looks like the editor's
    variant = _VARIANT[digest[16]]
    return uuid_form(digest[:12] + "4" + digest[13:16] + variant + digest[17:32])


def uuid_v4_of(digest: str) -> str:
    """A version-4-shaped UUID made of (at least) 32 hex digits of a digest."""
    return _uuid(digest)


@lru_cache(maxsize=1024)
def device_ids(install: InstallId, account_id: str) -> DeviceIds:
    """The stable device ids of ``account_id`` on this install (pure; cached)."""

    def h(label: str) -> str:
        seed = f"tokn-router/{label}\0{install.id}\0{account_id}".encode()
        return hashlib.sha256(seed).hexdigest()

    return DeviceIds(
        session_id=_uuid(h("session")) + str(install.created_ms),
        machine_id=h("machine"),
        device_id=_uuid(h("device")),
    )


# -------------------------------------------------------------------- identity


@dataclass(frozen=True, slots=True)
class Identity:
    """The identity set in force, where each value came from, and the install id."""

    values: IdentitySet
    sources: Mapping[str, Source]
    install: InstallId
    device_ids: bool = True
    # headers built from this identity, per (builder, account, settings): requests reuse
    # them; a config reload makes a new Identity, so nothing stale survives it
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def for_account(self, settings: AccountSettings) -> tuple[IdentitySet, dict[str, Source]]:
        """This set with the account's own settings applied, and the sources."""
        overrides = {
            f: getattr(settings, f) for f in ACCOUNT_FIELDS if getattr(settings, f) is not None
        }
        sources: dict[str, Source] = dict(self.sources)
        if not overrides:
            return self.values, sources
        sources.update(dict.fromkeys(overrides, "account"))
        return msgspec.structs.replace(self.values, **overrides), sources


def resolve(section: IdentityConfig | None, install: InstallId | None = None) -> Identity:
    """The packaged set with ``[identity]`` over it."""
    base = packaged()
    overrides = {}
    if section is not None:
        overrides = {f: getattr(section, f) for f in FIELDS if getattr(section, f) is not None}
    sources: dict[str, Source] = {f: "[identity]" if f in overrides else "default" for f in FIELDS}
    return Identity(
        values=msgspec.structs.replace(base, **overrides) if overrides else base,
        sources=sources,
        install=install or _process_install(),
        device_ids=section.device_ids if section is not None else True,
    )


@cache
def _process_install() -> InstallId:
    # until the daemon installs the state dir's id: one per process, never persisted
    return InstallId.new()


@dataclass(slots=True)
class _Current:
    identity: Identity | None = field(default=None)


_CURRENT = _Current()


def configure(ident: Identity) -> None:
    """Make ``ident`` the identity of every request from now on (daemon start, reload)."""
    _CURRENT.identity = ident


def current() -> Identity:
    """The identity in force: the configured one, else the packaged set."""
    ident = _CURRENT.identity
    if ident is None:
        ident = _CURRENT.identity = resolve(None)
    return ident


__all__ = [
    "ACCOUNT_FIELDS",
    "COPILOT_INTEGRATION_ID",
    "EDITOR_PLUGIN_VERSION",
    "EDITOR_VERSION",
    "FIELDS",
    "GITHUB_API_VERSION",
    "INSTALL_ID_FILE",
    "OPENAI_INTENT",
    "TOKEN_API_VERSION",
    "USER_AGENT",
    "USER_AGENT_LIBRARY",
    "DeviceIds",
    "Identity",
    "IdentitySet",
    "InstallId",
    "Source",
    "configure",
    "current",
    "device_ids",
    "load_install_id",
    "packaged",
    "resolve",
    "uuid_form",
    "uuid_v4_of",
]

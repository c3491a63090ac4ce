"""Client keys: create, list, revoke, rotate and verify, stored as keyed hashes.

A key is ``tkr_`` + 43 URL-safe characters (256 random bits). It is shown once,
when created or rotated; the store keeps only ``HMAC-SHA256(secret, key)``, where
``secret`` is 32 random bytes in ``keys.secret`` beside it. A stolen ``keys.json``
alone therefore cannot be used to test guesses offline. Both files live in the
state dir, mode ``0600``, apart from the config file so that stays the user's own.

Writes follow the config's rules (:mod:`tokn_router.accounts.config`): under an
exclusive lock file the current file is re-read, changed, written to a temp file,
fsynced and renamed over the original, so two commands never lose each other's
change and a reader never sees half a file. A running daemon calls
:meth:`KeyStore.reload_if_changed` to pick up changes made by the CLI.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec

from tokn_router._fs import atomic_write
from tokn_router.accounts.config import ensure_state_dir, state_dir
from tokn_router.clients.extract import KEY_PREFIX
from tokn_router.clients.limits import Limits
from tokn_router.errors import ConfigError, ToknError, UsageError

KEYS_FILE = "keys.json"
SECRET_FILE = "keys.secret"
FORMAT = 1
PREFIX_LEN = 8  # what listings show: "tkr_" and 4 random characters
_RANDOM_BYTES = 32
_KEY_RE = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9_-]{{43}}$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

Status = Literal["active", "expired", "revoked"]


class KeyRecord(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One key as stored: everything but the key itself."""

    name: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
    prefix: str  # the key's first characters, harmless to show
    digest: str  # hex HMAC-SHA256 of the key under the store's secret
    created: int  # unix seconds
    rotated: int | None = None  # last rotation, unix seconds
    expires: int | None = None  # unix seconds; None = never
    revoked: int | None = None  # unix seconds; a revoked key stays listed
    last_used: int | None = None  # unix seconds; filled from the ledger later
    limits: Limits = msgspec.field(default_factory=Limits)

    def __repr__(self) -> str:  # keep the digest out of logs and tracebacks
        return f"KeyRecord(name={self.name!r}, prefix={self.prefix!r}, status={self.status()!r})"

    def status(self, now: float | None = None) -> Status:
        if self.revoked is not None:
            return "revoked"
        now = time.time() if now is None else now
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


class _File(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: int = FORMAT
    hash: Literal["hmac-sha256"] = "hmac-sha256"
    keys: list[KeyRecord] = msgspec.field(default_factory=list)


_decode = msgspec.json.Decoder(_File).decode
_encode = msgspec.json.Encoder().encode


def generate() -> str:
    """A new key: ``tkr_`` + 43 URL-safe characters."""
    return KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(
            f"invalid key name {name!r}: use 1-64 letters, digits and . _ @ - "
            "(starting with a letter or digit)"
        )
    return name


def _tighten(path: Path) -> None:
    """Make a secret file ``0600`` if it is ours and looser (copied by hand, say)."""
    with contextlib.suppress(OSError):
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            path.chmod(0o600)


T = TypeVar("T")
_Sig = tuple[int, int, int, int]


class KeyStore:
    """The keys of one state dir, loaded in memory for :meth:`verify`.

    Every method that changes keys takes the lock and re-reads the file first, so
    the in-memory view may lag behind other processes only between reloads.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / KEYS_FILE
        self.secret_path = state_dir / SECRET_FILE
        self._records: list[KeyRecord] = []
        self._secret: bytes | None = None
        self._sig: _Sig | None = None

    # ------------------------------------------------------------------ reading

    def _stat(self) -> _Sig | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot read: {e.strerror}") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _read(self) -> list[KeyRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot read: {e.strerror}") from None
        try:
            parsed = _decode(data)
        except msgspec.ValidationError as e:
            raise ConfigError(f"{self.path}: invalid key store: {e}") from None
        except msgspec.DecodeError:
            raise ConfigError(f"{self.path}: not a key store (invalid JSON)") from None
        if parsed.format != FORMAT:
            raise ConfigError(f"{self.path}: unsupported key store format {parsed.format}")
        return parsed.keys

    def _read_secret(self, *, create: bool) -> bytes | None:
        try:
            text = self.secret_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            if not create:
                return None
            return self._create_secret()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not text"
            raise ConfigError(f"{self.secret_path}: cannot read: {reason}") from None
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if len(secret) < 16:
            raise ConfigError(f"{self.secret_path}: not a key store secret")
        _tighten(self.secret_path)
        return secret

    def _create_secret(self) -> bytes:
        secret = secrets.token_bytes(_RANDOM_BYTES)
        try:
            fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read_secret(create=False) or secret  # another process won the race
        except OSError as e:
            raise ToknError(f"{self.secret_path}: cannot create: {e.strerror}") from None
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        return secret

    def load(self, *, strict: bool = True) -> KeyStore:
        """(Re)read the keys; raises :class:`ConfigError` and keeps the old view on failure.

        ``strict`` also refuses keys without the secret that verifies them (the
        daemon's view); listings pass False, since names and limits are still there.
        """
        sig = self._stat()
        records = self._read()
        secret = self._read_secret(create=False)
        if strict and records and secret is None:
            raise ConfigError(
                f"{self.secret_path} is missing, so no key in {self.path} can be verified; "
                "give each key a new value with `tokn-router keys rotate NAME`"
            )
        self._records, self._secret, self._sig = records, secret, sig
        if sig is not None:
            _tighten(self.path)
        return self

    def reload_if_changed(self) -> bool:
        """Reload when the file changed since the last (re)load; True if it did.

        A broken file raises :class:`ConfigError` and the keys loaded before stay in
        force, so a bad edit never opens or closes the door by accident.
        """
        if self._stat() == self._sig:
            return False
        self.load()
        return True

    def records(self) -> list[KeyRecord]:
        return list(self._records)

    def get(self, name: str) -> KeyRecord | None:
        return next((r for r in self._records if r.name == name), None)

    # ------------------------------------------------------------------ checking

    def _digest(self, key: str, secret: bytes) -> str:
        return hmac.new(secret, key.encode("ascii"), hashlib.sha256).hexdigest()

    def identify(
        self, presented: str, now: float | None = None
    ) -> tuple[KeyRecord | None, Literal["ok", "unknown", "expired", "revoked"]]:
        """The record a key belongs to and its state, for the daemon's own log.

        Every stored digest is compared, in constant time, whatever matches, so the
        time taken says nothing about which keys exist or how close a guess came.
        """
        if self._secret is None or not _KEY_RE.match(presented):
            return None, "unknown"
        digest = self._digest(presented, self._secret)
        found: KeyRecord | None = None
        for rec in self._records:
            if hmac.compare_digest(rec.digest, digest):
                found = rec
        if found is None:
            return None, "unknown"
        state = found.status(now)
        return (found, "ok") if state == "active" else (found, state)

    def verify(self, presented: str, now: float | None = None) -> KeyRecord | None:
        """The active key record ``presented`` belongs to; None if unknown, expired or revoked."""
        rec, state = self.identify(presented, now)
        return rec if state == "ok" else None

    # ------------------------------------------------------------------ changing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        ensure_state_dir(self.state_dir)
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ToknError(f"{self.path}: cannot lock the key store: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _update(self, edit: Callable[[list[KeyRecord], bytes], T]) -> T:
        """Run ``edit`` on a fresh read under the lock, then write the result atomically."""
        with self._locked():
            records = self._read()
            secret = self._read_secret(create=True)
            assert secret is not None
            result = edit(records, secret)
            data = _encode(_File(keys=records)) + b"\n"
            try:
                atomic_write(self.path, data, 0o600)
            except OSError as e:
                raise ToknError(f"{self.path}: cannot write: {e.strerror}") from None
            self._records, self._secret, self._sig = records, secret, self._stat()
            return result

    def _new_key(self, secret: bytes) -> tuple[str, str]:
        key = generate()
        return key, self._digest(key, secret)

    def create(
        self,
        name: str,
        *,
        limits: Limits | None = None,
        expires: int | None = None,
        now: float | None = None,
    ) -> tuple[str, KeyRecord]:
        """Make a key called ``name``; returns (the key, its record). Shown once, never stored.

        A name in use by an active or expired key is refused; a revoked key's name
        may be taken again (its ledger rows then count for the new key too).
        """
        check_name(name)
        ts = int(time.time() if now is None else now)
        if expires is not None and expires <= ts:
            raise UsageError("the expiry must be in the future")

        def edit(records: list[KeyRecord], secret: bytes) -> tuple[str, KeyRecord]:
            old = next((r for r in records if r.name == name), None)
            if old is not None and old.revoked is None:
                raise UsageError(
                    f"a key named '{name}' already exists (rotate it with "
                    f"`tokn-router keys rotate {name}`, or revoke it first)"
                )
            key, digest = self._new_key(secret)
            rec = KeyRecord(
                name=name,
                prefix=key[:PREFIX_LEN],
                digest=digest,
                created=ts,
                expires=expires,
                limits=limits or Limits(),
            )
            if old is not None:
                records[records.index(old)] = rec
            else:
                records.append(rec)
            return key, rec

        return self._update(edit)

    @staticmethod
    def _find(records: list[KeyRecord], name: str) -> KeyRecord:
        rec = next((r for r in records if r.name == name), None)
        if rec is None:
            # the admin's own listing, so naming the existing keys is fine here
            known = ", ".join(r.name for r in records) or "none yet"
            raise UsageError(f"no key named '{name}' (keys: {known})")
        return rec

    def revoke(self, name: str, *, now: float | None = None) -> tuple[KeyRecord, bool]:
        """Revoke ``name`` at once; returns (its record, whether it was active until now)."""
        ts = int(time.time() if now is None else now)

        def edit(records: list[KeyRecord], _secret: bytes) -> tuple[KeyRecord, bool]:
            rec = self._find(records, name)
            if rec.revoked is not None:
                return rec, False
            new = msgspec.structs.replace(rec, revoked=ts)
            records[records.index(rec)] = new
            return new, True

        return self._update(edit)

    def rotate(self, name: str, *, now: float | None = None) -> tuple[str, KeyRecord]:
        """A new key for ``name`` (same limits and expiry); the old key stops working at once."""
        ts = int(time.time() if now is None else now)

        def edit(records: list[KeyRecord], secret: bytes) -> tuple[str, KeyRecord]:
            rec = self._find(records, name)
            state = rec.status(ts)
            if state == "revoked":
                raise UsageError(
                    f"key '{name}' is revoked; make a new one with `tokn-router keys create {name}`"
                )
            if state == "expired":
                raise UsageError(
                    f"key '{name}' has expired; revoke it and create it anew with a new --expires"
                )
            key, digest = self._new_key(secret)
            new = msgspec.structs.replace(rec, prefix=key[:PREFIX_LEN], digest=digest, rotated=ts)
            records[records.index(rec)] = new
            return key, new

        return self._update(edit)


def store_for(config_path: Path) -> KeyStore:
    """The key store of the state dir that holds ``config_path`` (not loaded yet)."""
    return KeyStore(state_dir(config_path))

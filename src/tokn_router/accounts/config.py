"""The config file: path resolution, parsing with one-line errors, safe writes.

The schema (msgspec Structs, defaults, key-path types) is
:mod:`tokn_router.accounts.schema`; its types are re-exported here so code above
``accounts/`` reads the config through one module. Parsing adds what the schema
cannot say: account ids are unique and name a registered provider.

Writes go through :meth:`ConfigFile.update`: under an exclusive lock file the
current file is re-read, edited with tomlkit (so comments and layout survive),
validated, written to a temp file, fsynced and renamed over the original. A
daemon persisting a refreshed token and a concurrent ``config set`` therefore
never lose each other's change.

It is one module of over 400 lines because parsing with line-accurate errors and editing
the same TOML document share their helpers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import tomlkit

from tokn_router._fs import atomic_write
from tokn_router.accounts.providers import PROVIDERS
from tokn_router.accounts.schema import (
    Account,
    AccountSettings,
    Config,
    GithubConfig,
    InitiatorMode,
    OutboundProxyConfig,
    PoolConfig,
    ProxyModeConfig,
    RouteMode,
    ServerConfig,
    UpstreamConfig,
    UsageConfig,
)
from tokn_router.errors import ConfigError

# --------------------------------------------------------------------------- paths


def resolve_path(cli_path: str | os.PathLike[str] | None = None) -> Path:
    """``--config`` > ``$TOKN_ROUTER_CONFIG`` > XDG config home > ``~/.config``."""
    if cli_path:
        return Path(cli_path).expanduser()
    env = os.environ.get("TOKN_ROUTER_CONFIG")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "tokn-router" / "config.toml"


def state_dir(config_path: Path) -> Path:
    return config_path.parent


def usage_db_path(cfg: Config, config_path: Path) -> Path:
    if cfg.usage.path:
        return Path(cfg.usage.path).expanduser()
    return state_dir(config_path) / "usage.db"


def ca_dir(cfg: Config, config_path: Path) -> Path:
    if cfg.proxy_mode.ca_dir:
        return Path(cfg.proxy_mode.ca_dir).expanduser()
    return state_dir(config_path) / "ca"


def ensure_state_dir(path: Path) -> None:
    """Create the state dir ``0700`` (and tighten a looser one we own)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            path.chmod(0o700)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the state directory: {e.strerror}") from None


# ---------------------------------------------------------------------- validation

_TOML_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
_PATH_RE = re.compile(r"`\$((?:\.[A-Za-z0-9_-]+|\[\d+\])*)`")


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for m in re.finditer(r"\.([A-Za-z0-9_-]+)|\[(\d+)\]", path):
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
    return parts


def _locate(text: str, parts: list[str | int]) -> int | None:
    """Best-effort line number (1-based) of a key path in TOML text.

    Walks the lines tracking the current table header, counting ``[[array]]``
    entries, so ``accounts[1].settings.foo`` finds ``foo`` under the second
    ``[[accounts]]``'s ``[accounts.settings]``.
    """
    names = [p for p in parts if isinstance(p, str)]
    if not names:
        return None
    key = names[-1]
    table: list[str | int] = []
    counts: dict[str, int] = {}
    header_re = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    key_re = re.compile(r"^\s*(?:\"([^\"]+)\"|([A-Za-z0-9_.-]+))\s*=")
    best: int | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        hm = header_re.match(line)
        if hm:
            dotted = [s.strip().strip('"') for s in hm.group(2).split(".")]
            if hm.group(1) == "[[":
                name = ".".join(dotted)
                counts[name] = counts.get(name, -1) + 1
                table = [*dotted[:-1], dotted[-1], counts[name]]
            else:
                # a sub-table of the latest array entry keeps the entry index
                base_name = dotted[0]
                if base_name in counts and len(dotted) > 1:
                    table = [base_name, counts[base_name], *dotted[1:]]
                else:
                    table = list(dotted)
            if table == parts or (table and table[-1] == key and table == parts[: len(table)]):
                best = best or lineno
            continue
        km = key_re.match(line)
        if km:
            k = km.group(1) or km.group(2)
            full = [*table, *k.split(".")]
            if full == parts:
                return lineno
            if (
                full[-1] == key
                and best is None
                and all(isinstance(p, int) or p in full for p in parts[:-1])
            ):
                best = lineno
    return best


def _validation_error(path: Path, text: str, err: msgspec.ValidationError) -> ConfigError:
    msg = str(err)
    m = _PATH_RE.search(msg)
    dotted = ""
    line: int | None = None
    if m:
        parts = _split_path(m.group(1))
        dotted = ".".join(f"[{p}]" if isinstance(p, int) else p for p in parts).replace(".[", "[")
        line = _locate(text, parts)
        if "unknown field" in msg:
            um = re.search(r"unknown field `([^`]+)`", msg)
            if um:
                parts = [*parts, um.group(1)]
                dotted = f"{dotted}.{um.group(1)}" if dotted else um.group(1)
                line = _locate(text, parts) or line
    elif (um := re.search(r"unknown field `([^`]+)`", msg)) is not None:
        dotted = um.group(1)
        line = _locate(text, [dotted])
    reason = _PATH_RE.sub("", msg).replace(" - at ", "").strip().rstrip(" -")
    reason = reason.replace("Object contains unknown field", "unknown key").strip()
    where = f"{path}" + (f":{line}" if line else "")
    key = f" key '{dotted}':" if dotted else ""
    return ConfigError(f"{where}:{key} {reason}")


def _check_semantics(path: Path, text: str, cfg: Config) -> None:
    seen: set[str] = set()
    for i, acc in enumerate(cfg.accounts):
        if acc.id in seen:
            line = _locate(text, ["accounts", i, "id"])
            raise ConfigError(
                f"{path}{':' + str(line) if line else ''}: key 'accounts[{i}].id': "
                f"duplicate account id '{acc.id}'"
            )
        seen.add(acc.id)
        if acc.provider not in PROVIDERS:
            line = _locate(text, ["accounts", i, "provider"])
            raise ConfigError(
                f"{path}{':' + str(line) if line else ''}: key 'accounts[{i}].provider': "
                f"unknown provider '{acc.provider}' (known: {', '.join(sorted(PROVIDERS))})"
            )


_UNCLOSED_HEADER_RE = re.compile(r"^\s*(\[\[?\s*[A-Za-z0-9_\"'][A-Za-z0-9_.\"' -]*?)\s*(#.*)?$")


def _unclosed_header(text: str, until: int | None) -> tuple[int, str] | None:
    """The first ``[server`` line (a table header without its ``]``), if any.

    tomllib reports such a line by whatever it trips over next ("Cannot
    declare ('server',) twice" when ``[server]`` also exists), which hides the
    actual typo.
    """
    for lineno, line in enumerate(text.splitlines(), 1):
        if until is not None and lineno > until:
            break
        m = _UNCLOSED_HEADER_RE.match(line)
        if m and "]" not in line.split("#", 1)[0]:
            return lineno, m.group(1).strip()
    return None


def parse(text: str, path: Path) -> Config:
    """Parse and validate config text; every failure is one :class:`ConfigError` line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_LINE_RE.search(msg)
        reason = _TOML_LINE_RE.sub("", msg).strip()
        if m:
            where = f"{path}:{m.group(1)}"
        else:  # "(at end of document)": point at the last line
            reason = reason.replace("(at end of document)", "at end of file").strip()
            where = f"{path}:{max(1, len(text.splitlines()))}"
        unclosed = _unclosed_header(text, int(m.group(1)) if m else None)
        if unclosed is not None:
            lineno, header = unclosed
            raise ConfigError(
                f"{path}:{lineno}: invalid TOML: unclosed table header {header!r} "
                f"(missing '{']]' if header.startswith('[[') else ']'}')"
            ) from None
        raise ConfigError(f"{where}: invalid TOML: {reason}") from None
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise _validation_error(path, text, e) from None
    _check_semantics(path, text, cfg)
    return cfg


def load(path: Path) -> Config:
    """Load the config; a missing file is the default config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse(text, path)


# -------------------------------------------------------------------------- writes


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<config>.lock``: a sibling file, because the
    config itself is replaced by rename and a lock on it would not carry over."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise ConfigError(f"{path}: cannot lock the config: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (temp file, fsync, rename; mode 0600)."""
    atomic_write(path, text.encode("utf-8"), 0o600)


T = TypeVar("T")


class ConfigFile:
    """A config file on disk: read it, or edit it atomically under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Config:
        return load(self.path)

    def update(self, edit: Callable[[tomlkit.TOMLDocument], T]) -> tuple[Config, T]:
        """Apply ``edit`` to the current document and persist it atomically.

        The edit runs on a fresh read made under the lock; the result is
        validated before anything is written, so a failing edit (or an invalid
        result) leaves the file exactly as it was. An editor does not take our
        lock: if the file changed between our read and our write, the edit is
        redone on what is there now, so a hand edit is never overwritten by a
        daemon persisting a refreshed token.
        """
        ensure_state_dir(self.path.parent)
        with locked(self.path):
            for _ in range(_UPDATE_TRIES):
                text, seen = self._read()
                parse(text, self.path)  # refuse to build on a broken file
                doc = tomlkit.parse(text)
                result = edit(doc)
                new_text = tomlkit.dumps(doc)
                cfg = parse(new_text, self.path)
                if new_text == text:
                    # Nothing to write. Never rewrite a file unchanged: what we read may be
                    # an editor's truncate-then-write caught half way (an empty file).
                    return cfg, result
                if _stat_key(self.path) != seen:
                    continue  # changed under us: redo the edit on the new text
                try:
                    write_atomic(self.path, new_text)
                except OSError as e:
                    raise ConfigError(f"{self.path}: cannot write: {e.strerror}") from None
                return cfg, result
        raise ConfigError(f"{self.path}: keeps changing while being saved; try again")

    def _read(self) -> tuple[str, tuple[int, int, int] | None]:
        seen = _stat_key(self.path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot read: {e.strerror}") from None
        return text, seen


_UPDATE_TRIES = 5


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    """What changes when anyone rewrites the file (in place or by rename)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


# ----------------------------------------------------------------- document editing


def find_account_table(doc: tomlkit.TOMLDocument, account_id: str) -> Any:
    accounts = doc.get("accounts")
    if accounts is None:
        return None
    for table in accounts:
        if table.get("id") == account_id:
            return table
    return None


def add_account(doc: tomlkit.TOMLDocument, account: Account) -> None:
    """Append ``[[accounts]]`` for ``account`` (settings only when set)."""
    if find_account_table(doc, account.id) is not None:
        raise ConfigError(f"account '{account.id}' already exists")
    data = msgspec.to_builtins(account)
    settings = data.pop("settings", None)
    table = tomlkit.table()
    for k, v in data.items():
        table.add(k, v)
    if settings:
        sub = tomlkit.table()
        for k, v in settings.items():
            sub.add(k, v)
        table.add("settings", sub)
    if "accounts" not in doc:
        doc.add("accounts", tomlkit.aot())
    doc["accounts"].append(table)


def remove_account(doc: tomlkit.TOMLDocument, account_id: str) -> None:
    accounts = doc.get("accounts")
    if accounts is not None:
        for i, table in enumerate(accounts):
            if table.get("id") == account_id:
                del accounts[i]
                if len(accounts) == 0:
                    del doc["accounts"]
                return
    raise ConfigError(f"no account with id '{account_id}'")


def set_account_fields(doc: tomlkit.TOMLDocument, account_id: str, **fields: Any) -> None:
    """Set top-level fields of one account (used to persist refreshed tokens)."""
    table = find_account_table(doc, account_id)
    if table is None:
        raise ConfigError(f"no account with id '{account_id}'")
    for k, v in fields.items():
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v


def _container(doc: Any, parts: list[str], create: bool) -> Any:
    node = doc
    for part in parts:
        if part not in node:
            if not create:
                return None
            node.add(part, tomlkit.table())
        node = node[part]
    return node


def doc_set(doc: Any, dotted: str, value: Any, *, add: bool = False) -> None:
    parts = dotted.split(".")
    node = _container(doc, parts[:-1], create=True)
    key = parts[-1]
    if add:
        current = node.get(key)
        if current is None:
            node[key] = [value] if not isinstance(value, list) else value
        elif isinstance(current, list):
            for v in value if isinstance(value, list) else [value]:
                current.append(v)
        else:
            raise ConfigError(f"'{dotted}' is not a list; --add only appends to lists")
    else:
        node[key] = value


def doc_unset(doc: Any, dotted: str) -> bool:
    parts = dotted.split(".")
    node = _container(doc, parts[:-1], create=False)
    if node is None or parts[-1] not in node:
        return False
    del node[parts[-1]]
    return True


__all__ = [
    "Account",
    "AccountSettings",
    "Config",
    "ConfigFile",
    "GithubConfig",
    "InitiatorMode",
    "OutboundProxyConfig",
    "PoolConfig",
    "ProxyModeConfig",
    "RouteMode",
    "ServerConfig",
    "UpstreamConfig",
    "UsageConfig",
    "load",
    "parse",
    "resolve_path",
]

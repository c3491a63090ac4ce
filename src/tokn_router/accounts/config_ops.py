"""``config get|set|unset|list|edit``: key paths over the schema, effective values.

Keys are dotted paths of the :class:`~tokn_router.accounts.schema.Config` Structs
(``server.port``); with an account id they address that ``[[accounts]]``
entry (``settings.editor_version``). Values are type-checked against the
schema before the whole-config validation of :meth:`ConfigFile.update`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import msgspec
import tomlkit

from tokn_router import redact
from tokn_router.accounts import config, identity, schema
from tokn_router.accounts.config import ConfigFile
from tokn_router.accounts.providers import PROVIDERS
from tokn_router.accounts.providers import github as gh
from tokn_router.accounts.schema import Account, Config
from tokn_router.errors import AccountError, ConfigError, ToknError, UsageError


def key_type(key: str, account: str | None) -> Any:
    """The schema type of ``key`` (an account field with ``account``)."""
    key = key.strip()
    if not key or key.startswith(".") or key.endswith(".") or ".." in key:
        raise UsageError(f"invalid config key '{key}'")
    if account is None and key.split(".")[0] == "accounts":
        raise UsageError(
            "account fields are addressed with --account ID "
            "(e.g. `config set --account work settings.editor_version vscode/1.99.0`)"
        )
    if account is not None:
        try:
            return schema.field_type(Account, key)
        except ConfigError:
            raise ConfigError(f"unknown account key '{key}'") from None
    return schema.field_type(Config, key)


# ----------------------------------------------------------------- effective values


def _builtins(obj: Any) -> Any:
    """Builtins of a Struct tree with defaults kept (``to_builtins`` omits them)."""
    if isinstance(obj, msgspec.Struct):
        out = {}
        for name in obj.__struct_fields__:
            value = getattr(obj, name)
            if value is not None:
                out[name] = _builtins(value)
        return out
    if isinstance(obj, list):
        return [_builtins(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _builtins(v) for k, v in obj.items()}
    return obj


def effective_account(
    acc: Account, github: schema.GithubConfig, ident: schema.IdentityConfig | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = _builtins(acc)  # a Struct always becomes a dict
    provider = PROVIDERS.get(acc.provider)
    if acc.provider == "github-copilot":
        data.setdefault("refresh_url", gh.token_url(github))
        settings = data.setdefault("settings", {})
        # unset settings follow the identity set: packaged, with [identity] over it
        values = identity.resolve(ident).values
        for k in identity.ACCOUNT_FIELDS:
            settings.setdefault(k, getattr(values, k))
    elif provider is not None and provider.default_base_url:
        data.setdefault("base_url", provider.default_base_url)
    return data


def effective(cfg: Config, path: Path) -> dict[str, Any]:
    """The whole config with defaults filled in (secrets still present)."""
    data: dict[str, Any] = _builtins(cfg)
    data["usage"].setdefault("path", str(config.usage_db_path(cfg, path)))
    data["proxy_mode"].setdefault("ca_dir", str(config.ca_dir(cfg, path)))
    data["github"].setdefault("url", gh.github_url(cfg.github))
    data["github"].setdefault("api_url", gh.api_url(cfg.github))
    for k in identity.FIELDS:  # unset: the packaged set's value
        data["identity"].setdefault(k, getattr(identity.packaged(), k))
    data["accounts"] = [effective_account(a, cfg.github, cfg.identity) for a in cfg.accounts]
    return data


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _need_account(cfg: Config, account: str) -> Account:
    acc = cfg.account(account)
    if acc is None:
        raise AccountError(f"no account with id '{account}' (see `tokn-router account list`)")
    return acc


def get_value(cfg: Config, path: Path, key: str, account: str | None = None) -> Any:
    """The effective value at ``key`` (``None`` when unset without a default)."""
    key_type(key, account)
    if account is not None:
        return _lookup(
            effective_account(_need_account(cfg, account), cfg.github, cfg.identity), key
        )
    return _lookup(effective(cfg, path), key)


def render(value: Any, key: str) -> str:
    """Strings bare, tables as TOML, everything else as a TOML literal; secrets redacted."""
    last = key.split(".")[-1]
    if isinstance(value, str):
        if last in redact.SECRET_KEYS:
            return redact.secret(value)
        if last == "url" or last.endswith("_url"):
            return redact.url(value)
        return value
    if isinstance(value, dict):
        value = redact.data(value)
        if not value:
            return "{}"
        return tomlkit.dumps(value).rstrip("\n")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return tomlkit.dumps({last: redact.data(value)}).rstrip("\n")
    return to_toml_literal(value)


def render_list(cfg: Config, path: Path) -> str:
    """``config list``: the effective config as TOML, secrets redacted."""
    body = tomlkit.dumps(redact.data(effective(cfg, path)))
    return f"# effective config of {path} (defaults filled in, secrets redacted)\n{body}"


def to_toml_literal(value: Any) -> str:
    """Render a value as a TOML literal (strings are printed bare by callers)."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    if isinstance(value, dict):
        t = tomlkit.inline_table()
        t.update(value)
        return t.as_string()
    return str(tomlkit.item(value).as_string())


# ---------------------------------------------------------------------- set / unset


def parse_value(raw: str, tp: Any) -> Any:
    """Turn a command-line string into a value for a field of type ``tp``.

    Strings are taken as they are (no quotes needed for ``10.0.0.1``); other
    types are read as TOML literals (``8080``, ``true``, ``["a", "b"]``). The
    result is type-checked by the whole-config validation that follows.
    """
    base = schema.unwrap(tp)
    origin = get_origin(base)
    args = {schema.unwrap(a) for a in get_args(base)} if origin not in (None, Literal) else {base}
    takes_str = origin is Literal or str in args
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if takes_str:
            return raw
        raise ConfigError(
            f"'{raw}' is not a valid value (expected {schema.type_name(tp)})"
        ) from None
    if takes_str and not isinstance(value, str):
        return raw
    return value


def _convert(key: str, raw: str, value: Any, tp: Any) -> Any:
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError as e:
        msg = str(e).split(" - at `", 1)[0]
        shown = redact.secret(raw) if key.split(".")[-1] in redact.SECRET_KEYS else raw
        raise ConfigError(
            f"invalid value {shown!r} for '{key}' (expected {schema.type_name(tp)}): {msg}"
        ) from None


def _parse(key: str, raw: str, tp: Any) -> Any:
    """A command-line string as a checked value of ``tp`` (TOML literal syntax for non-strings)."""
    base = schema.unwrap(tp)
    origin = get_origin(base)
    if origin in (list, dict):
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = None
        if origin is list and not isinstance(value, list):
            value = [_parse(key, raw, get_args(base)[0])]  # one element
        elif origin is dict and not isinstance(value, dict):
            raise ConfigError(
                f"invalid value {raw!r} for '{key}' (expected a TOML inline table, e.g. "
                "'{ name = \"value\" }'), or set one entry with a longer key"
            )
    else:
        try:
            value = parse_value(raw, tp)
        except ConfigError:
            shown = redact.secret(raw) if key.split(".")[-1] in redact.SECRET_KEYS else raw
            raise ConfigError(
                f"invalid value {shown!r} for '{key}' (expected {schema.type_name(tp)})"
            ) from None
    _convert(key, raw, value, tp)
    return value


def _mutable_key(key: str, account: str | None) -> Any:
    tp = key_type(key, account)
    if schema.is_struct(tp):
        raise UsageError(f"'{key}' is a table; set one of its keys (e.g. '{key}.<name>')")
    return tp


def set_value(
    cfg_file: ConfigFile, key: str, raw: str, *, account: str | None = None, add: bool = False
) -> Any:
    """``config set``: type-check, edit the document, validate, write atomically."""
    tp = _mutable_key(key, account)
    if add:
        base = schema.unwrap(tp)
        if get_origin(base) is not list:
            raise UsageError(f"--add appends to lists, and '{key}' is {schema.type_name(tp)}")
    value = _parse(key, raw, tp)

    def edit(doc: Any) -> None:
        node = doc
        if account is not None:
            node = config.find_account_table(doc, account)
            if node is None:
                raise AccountError(
                    f"no account with id '{account}' (see `tokn-router account list`)"
                )
        config.doc_set(node, key, value, add=add)

    secret = key.split(".")[-1] in redact.SECRET_KEYS
    _update(cfg_file, edit, [raw] if secret else [])
    return value


def unset_value(cfg_file: ConfigFile, key: str, *, account: str | None = None) -> bool:
    """``config unset``: remove the key so its default applies; False if it was not set."""
    key_type(key, account)
    if account is not None and key == "id":
        raise UsageError("an account's id cannot be unset; use `tokn-router account remove`")

    def edit(doc: Any) -> bool:
        node = doc
        if account is not None:
            node = config.find_account_table(doc, account)
            if node is None:
                raise AccountError(
                    f"no account with id '{account}' (see `tokn-router account list`)"
                )
        removed = config.doc_unset(node, key)
        if removed:
            _prune_empty_tables(node, key.split("."))
        return removed

    _, removed = _update(cfg_file, edit, [])
    return bool(removed)


def _prune_empty_tables(root: Any, parts: list[str]) -> None:
    """Drop the tables an unset left empty, innermost first.

    ``[server]`` with nothing under it means nothing; leaving the header
    behind makes the file look as if something were still set. A table that
    still holds a comment is the user's and stays.
    """
    for depth in range(len(parts) - 1, 0, -1):
        parent = root
        for name in parts[: depth - 1]:
            parent = parent[name]
        table = parent.get(parts[depth - 1])
        if table is None or not hasattr(table, "value") or len(table) != 0:
            return
        body = getattr(table.value, "body", [])
        if any(isinstance(item, tomlkit.items.Comment) for _, item in body):
            return
        del parent[parts[depth - 1]]


def _update(cfg_file: ConfigFile, edit: Any, secrets: list[str]) -> tuple[Config, Any]:
    try:
        return cfg_file.update(edit)
    except ToknError as e:
        e.args = (redact.text(str(e), secrets),)
        raise


# ------------------------------------------------------------------------------ edit


def editor_command() -> list[str]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        cmd = shlex.split(editor)
    except ValueError:
        raise UsageError(
            f"cannot parse the editor command {editor!r} ($VISUAL / $EDITOR)"
        ) from None
    if not cmd:
        raise UsageError("$VISUAL / $EDITOR is empty")
    return cmd


_TEMPLATE = """\
# tokn-router config (see the README for every key)
#
# [server]
# port = 4141
"""


def edit_file(cfg_file: ConfigFile, again: Callable[[str], bool] | None = None) -> str:
    """``config edit``: edit a private copy, validate it, then replace the file.

    The editor works on a ``0600`` copy next to the config. The config is only
    replaced (atomically, under the lock) when the edited text validates and
    the file did not change meanwhile. When it does not, ``again(problem)``
    decides whether the editor re-opens on the same copy (the CLI asks the
    user); otherwise the config stays as it was. The copy is always removed, so
    failed edits never pile up in the state dir. Returns ``"saved"`` or
    ``"unchanged"``.
    """
    path = cfg_file.path
    config.ensure_state_dir(path.parent)
    try:
        original = path.read_bytes()
    except FileNotFoundError:
        original = None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    start = original if original is not None else _TEMPLATE.encode()
    digest = hashlib.sha256(original or b"").hexdigest()
    cmd = editor_command()
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f"{path.stem}.edit-", suffix=".toml", dir=path.parent
        )
    except OSError as e:
        raise ConfigError(f"{path.parent}: cannot create a temp file: {e.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(start)
        while True:
            try:
                rc = subprocess.run([*cmd, str(tmp)], check=False).returncode
            except OSError as e:
                raise UsageError(f"cannot run the editor {cmd[0]!r}: {e.strerror}") from None
            if rc != 0:
                raise ToknError(f"the editor exited with status {rc}; {path} left unchanged")
            edited = tmp.read_bytes()
            if edited == start:
                return "unchanged"
            problem, digest = _try_save(path, edited, digest)
            if problem is None:
                return "saved"
            if again is None or not again(problem):
                raise ConfigError(f"{problem}; {path} left unchanged (your edit was discarded)")
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _try_save(path: Path, edited: bytes, digest: str) -> tuple[str | None, str]:
    """Validate and write ``edited``: (None, digest) or (what is wrong, digest to expect next).

    A config that changed on disk meanwhile is not overwritten; the digest
    returned is the new one, so saving the same edit again replaces it.
    """
    try:
        text = edited.decode("utf-8")
    except UnicodeDecodeError:
        return "the edited file is not UTF-8 text", digest
    try:
        config.parse(text, path)
    except ConfigError as e:
        return str(e), digest
    with config.locked(path):
        try:
            now = path.read_bytes()
        except FileNotFoundError:
            now = b""
        current = hashlib.sha256(now).hexdigest()
        if current != digest:
            return (
                f"{path} changed on disk while you were editing (a running daemon saves "
                "refreshed tokens there); saving your edit again replaces that change",
                current,
            )
        try:
            config.write_atomic(path, text)
        except OSError as e:
            raise ConfigError(f"{path}: cannot write: {e.strerror}") from None
    return None, digest

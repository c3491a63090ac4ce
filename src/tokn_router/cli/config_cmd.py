"""``tokn-router config get|set|unset|list|edit|path``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

from cyclopts import App, Parameter

from tokn_router import redact
from tokn_router.accounts import config_ops
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.cli._params import Flag, Json

config_app = App(name="config", help="Read and change the config file (keys are type-checked).")
app.command(config_app)

AccountOpt = Annotated[str | None, Parameter(name="--account", metavar="ID")]


def _json_value(value: Any, key: str) -> Any:
    """The value as JSON-ready builtins, secrets redacted like the text output."""
    last = key.split(".")[-1]
    if isinstance(value, str):
        if last in redact.SECRET_KEYS:
            return redact.secret(value)
        if last == "url" or last.endswith("_url"):
            return redact.url(value)
        return value
    return redact.data(value)


@config_app.command
def get(key: str, /, *, account: AccountOpt = None, as_json: Json = False) -> int:
    """Print the effective value of KEY (its default when unset); secrets redacted.

    Strings are printed bare, other values as TOML literals; --json prints the
    value as JSON (a string, number, boolean, list or object).

    Parameters
    ----------
    key
        Dotted key, e.g. server.port or proxy_mode.intercept_hosts.
    account
        Read a field of this [[accounts]] entry (e.g. settings.editor_version).
    as_json
        Print the value as JSON.
    """
    path = _context.config_path()
    cfg = _context.config_file().load()
    value = config_ops.get_value(cfg, path, key, account)
    if value is None:
        print(f"tokn-router: '{key}' is not set and has no default", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(_json_value(value, key), indent=2))
    else:
        print(config_ops.render(value, key))
    return 0


@config_app.command(name="set")
def set_(key: str, value: str, /, *, account: AccountOpt = None, add: Flag = False) -> None:
    """Set KEY to VALUE, checked against the schema; comments and layout are kept.

    Strings need no quotes; other types use TOML syntax (8080, true, ["a", "b"]).

    Parameters
    ----------
    key
        Dotted key, e.g. server.port, proxy.url, proxy_mode.intercept_hosts.
    value
        The new value.
    account
        Set a field of this [[accounts]] entry (e.g. settings.editor_version).
    add
        Append VALUE to a list instead of replacing it.
    """
    new = config_ops.set_value(_context.config_file(), key, value, account=account, add=add)
    where = f" (account '{account}')" if account else ""
    verb = "appended to" if add else "set"
    print(f"{verb} {key}{where}: {config_ops.render(new, key)}")


@config_app.command
def unset(key: str, /, *, account: AccountOpt = None) -> None:
    """Remove KEY from the file so its default applies.

    Parameters
    ----------
    key
        Dotted key, e.g. server.port.
    account
        Unset a field of this [[accounts]] entry.
    """
    removed = config_ops.unset_value(_context.config_file(), key, account=account)
    print(f"unset {key}" if removed else f"{key} was not set")


@config_app.command(name="list")
def list_(*, as_json: Json = False) -> None:
    """Print the effective config as TOML (defaults filled in, secrets redacted).

    --json prints the same tables as one JSON object ({"server": {...}, ...,
    "accounts": [...]}).

    Parameters
    ----------
    as_json
        Print JSON instead of TOML.
    """
    cfg = _context.config_file().load()
    path = _context.config_path()
    if as_json:
        print(json.dumps(redact.data(config_ops.effective(cfg, path)), indent=2))
        return
    print(config_ops.render_list(cfg, path), end="")


def _reopen(problem: str) -> bool:
    """Show what is wrong with the edit and ask whether to fix it in the editor."""
    print(f"tokn-router: {problem}", file=sys.stderr)
    sys.stderr.write("Re-open the editor to fix it? [Y/n] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer:  # end of input
        return False
    return answer.strip().lower() in ("", "y", "yes")


@config_app.command
def edit() -> None:
    """Open the config in $VISUAL / $EDITOR and validate it before saving.

    An edit that does not validate is never saved; on a terminal you are asked
    whether to re-open the editor on it, otherwise it is discarded.
    """
    interactive = sys.stdin is not None and not sys.stdin.closed and sys.stdin.isatty()
    result = config_ops.edit_file(_context.config_file(), _reopen if interactive else None)
    path = _context.config_path()
    print(f"Saved {path}." if result == "saved" else f"No changes; {path} left as is.")


@config_app.command
def path() -> None:
    """Print the path of the config file."""
    print(_context.config_path())

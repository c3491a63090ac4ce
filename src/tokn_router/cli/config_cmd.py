"""``tokn-router config get|set|unset|list|edit|path``."""

from __future__ import annotations

import sys
from typing import Annotated

from cyclopts import App, Parameter

from tokn_router.accounts import config_ops
from tokn_router.cli import _context, app

config_app = App(name="config", help="Read and change the config file (keys are type-checked).")
app.command(config_app)

AccountOpt = Annotated[str | None, Parameter(name="--account")]

Flag = Annotated[bool, Parameter(negative="")]


@config_app.command
def get(key: str, /, *, account: AccountOpt = None) -> int:
    """Print the effective value of KEY (its default when unset); secrets redacted.

    Strings are printed bare, other values as TOML literals.

    Parameters
    ----------
    key
        Dotted key, e.g. server.port or proxy_mode.intercept_hosts.
    account
        Read a field of this [[accounts]] entry (e.g. settings.editor_version).
    """
    path = _context.config_path()
    cfg = _context.config_file().load()
    value = config_ops.get_value(cfg, path, key, account)
    if value is None:
        print(f"tokn-router: '{key}' is not set and has no default", file=sys.stderr)
        return 1
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
def list_() -> None:
    """Print the effective config as TOML (defaults filled in, secrets redacted)."""
    cfg = _context.config_file().load()
    print(config_ops.render_list(cfg, _context.config_path()), end="")


@config_app.command
def edit() -> None:
    """Open the config in $VISUAL / $EDITOR and validate it before saving."""
    result = config_ops.edit_file(_context.config_file())
    path = _context.config_path()
    print(f"Saved {path}." if result == "saved" else f"No changes; {path} left as is.")


@config_app.command
def path() -> None:
    """Print the path of the config file."""
    print(_context.config_path())

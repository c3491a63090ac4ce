"""Global CLI options shared by every command (``--config PATH``)."""

from __future__ import annotations

from pathlib import Path

from tokn_router.accounts import config
from tokn_router.errors import UsageError

_config_arg: str | None = None


def take_global_options(args: list[str]) -> list[str]:
    """Remove ``--config PATH`` / ``--config=PATH`` wherever it appears."""
    global _config_arg
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i:])
            break
        if a == "--config":
            if i + 1 >= len(args):
                raise UsageError("--config needs a path")
            _config_arg = args[i + 1]
            i += 2
            continue
        if a.startswith("--config="):
            _config_arg = a.split("=", 1)[1]
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def config_path() -> Path:
    return config.resolve_path(_config_arg)


def config_file() -> config.ConfigFile:
    return config.ConfigFile(config_path())

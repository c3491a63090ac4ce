"""The cyclopts application every command module registers itself on.

It lives apart from :mod:`tokn_router.cli`, which imports every command module,
so that the commands can import it without an import cycle.
"""

from __future__ import annotations

from typing import Any

from cyclopts import App, CycloptsError, Parameter

from tokn_router._version import __version__
from tokn_router.cli._help import HelpFormatter


def _format_cyclopts_error(err: CycloptsError) -> Any:
    msg = " ".join(str(err).split())
    return f"tokn-router: error: {msg}"


app = App(
    name="tokn-router",
    help=(
        "Turn GitHub Copilot and Z.ai coding-plan accounts into a local "
        "OpenAI-compatible API.\n\nGlobal option: --config PATH (before or after the command)."
    ),
    version=f"tokn-router {__version__}",
    version_flags=["--version", "-V"],
    backend="trio",
    error_formatter=_format_cyclopts_error,
    help_formatter=HelpFormatter(),
    # Flags are off unless given; "--no-no-proxy" and friends only confuse the help.
    default_parameter=Parameter(negative=()),
    suppress_keyboard_interrupt=False,  # main() reports Ctrl-C as "interrupted", exit 130
)


__all__ = ["app"]

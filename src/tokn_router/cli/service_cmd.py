"""``tokn-router service install|uninstall|status``: run the daemon as a user service.

Linux gets a systemd user unit (``~/.config/systemd/user/tokn-router.service``),
macOS a launchd agent (``~/Library/LaunchAgents/io.github.tokn-router.plist``); see
:mod:`tokn_router.service`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

from cyclopts import App, Parameter

from tokn_router.cli import _context
from tokn_router.cli._app import app

if TYPE_CHECKING:
    # imported by the service commands only: plistlib and subprocess cost every other
    # command ~8 ms of start-up
    from tokn_router import service

service_app = App(
    name="service",
    help=(
        "Run `tokn-router serve` as a per-user service that starts at login and restarts "
        "on failure (systemd on Linux, launchd on macOS)."
    ),
)
app.command(service_app)

# Per-user is the only kind: a system-wide service would run as root with root's state dir.
UserFlag = Annotated[bool, Parameter(name="--user", negative=())]


def _finish(outcome: service.Outcome) -> int:
    for line in outcome.lines:
        print(line, flush=True)
    return outcome.exit_code


@service_app.command
def install(*serve_args: str, user: UserFlag = True) -> int:
    """Install and start the service; running it again updates it.

    It runs `tokn-router serve` with this executable's absolute path, the
    config of this command (--config, TOKN_ROUTER_CONFIG, XDG_CONFIG_HOME) and
    the serve options given after `--`, for example
    `tokn-router service install -- --host 0.0.0.0 --with-proxy`.

    Parameters
    ----------
    serve_args
        Options for `tokn-router serve`, after `--`.
    user
        A service of the current user (the default, and the only kind).
    """
    from tokn_router import service  # lazy: start-up cost, see above

    host = service.Host.current()
    argv = service.service_argv(
        service.current_executable(), _context.config_path(), host.home, serve_args
    )
    return _finish(service.install(host, argv, service.service_env(os.environ)))


@service_app.command
def uninstall(*, user: UserFlag = True) -> int:
    """Stop the service and remove its unit file (the config and state stay).

    Parameters
    ----------
    user
        A service of the current user (the default, and the only kind).
    """
    from tokn_router import service  # lazy: start-up cost, see above

    return _finish(service.uninstall(service.Host.current()))


@service_app.command
def status(*, user: UserFlag = True) -> int:
    """Whether the service is installed and running (exit 0 when running, 3 when not).

    Parameters
    ----------
    user
        A service of the current user (the default, and the only kind).
    """
    from tokn_router import service  # lazy: start-up cost, see above

    return _finish(service.status(service.Host.current()))

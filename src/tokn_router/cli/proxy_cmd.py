"""``tokn-router proxy [start] | env | shell | ca path|show|regenerate``: the MITM proxy.

``proxy`` alone runs ``proxy start``. ``env`` and ``shell`` set clients up
(``HTTPS_PROXY`` & co, the CA bundle variables); both create the CA on first use so
every file they name exists. ``ca regenerate`` replaces the CA: every client that
trusted the old one must trust the new one, so it asks first (or takes ``--yes``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cyclopts import App

from tokn_router.accounts import config
from tokn_router.accounts.config import Config
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.cli._params import Flag, Host, Json, Port, Yes
from tokn_router.edges.proxy.shellenv import SHELLS, Shell, env_script, env_vars
from tokn_router.errors import ToknError, UsageError

if TYPE_CHECKING:
    # cryptography costs ~45 ms to import: only the commands that use the CA load it
    from tokn_router.edges.proxy.ca import CertStore

proxy_app = App(
    name="proxy",
    help=(
        "Run the MITM forward proxy (default: `proxy start`) and set clients up for it.\n\n"
        'Typical use: `tokn-router proxy` in one terminal, `eval "$(tokn-router proxy env)"` '
        "in another."
    ),
)
app.command(proxy_app)

ca_app = App(name="ca", help="The proxy's local certificate authority (path, show, regenerate).")
proxy_app.command(ca_app)

RouteModeArg = Literal["route", "passthrough", "switch"]


# --------------------------------------------------------------------- helpers


def _load() -> tuple[Config, Path]:
    path = _context.config_path()
    return config.load(path), path


def _store(cfg: Config, path: Path) -> CertStore:
    """The CA store, created (state dir 0700, ca.key 0600) if it does not exist yet."""
    from tokn_router.edges.proxy.ca import CertStore

    ca_folder = config.ca_dir(cfg, path)
    if not cfg.proxy_mode.ca_dir:
        config.ensure_state_dir(config.state_dir(path))
    return CertStore(ca_folder).load()


def client_proxy_url(cfg: Config) -> str:
    """The URL clients use for the configured listener (a wildcard bind → loopback)."""
    host = cfg.proxy_mode.host.strip().strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.proxy_mode.port}"


def default_shell() -> str:
    """``$SHELL``'s name when it is one ``proxy env`` knows, else ``sh``."""
    name = Path(os.environ.get("SHELL", "")).name.lower().removesuffix(".exe")
    if name in ("powershell", "pwsh-preview"):
        name = "pwsh"
    return name if name in SHELLS else "sh"


def _when(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _listening(url: str) -> bool:
    host_port = url.removeprefix("http://")
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------- start


async def start(
    *,
    host: Host = None,
    port: Port = None,
    route_mode: RouteModeArg | None = None,
    no_proxy: Flag = False,
    insecure_allow_remote: Flag = False,
) -> None:
    """Run the MITM forward proxy (default 127.0.0.1:4142) until Ctrl-C.

    Intercepted hosts (api.openai.com, api.githubcopilot.com, … plus
    ``[proxy_mode] intercept_hosts``) are answered by the account pool according
    to the route mode; every other host is tunnelled untouched.

    Parameters
    ----------
    host
        Address to listen on (default ``[proxy_mode] host``). A non-loopback address
        requires client keys (``tokn-router keys``) unless ``[server] auth = "none"``.
    port
        Port to listen on (default ``[proxy_mode] port``; 0 picks a free one).
    route_mode
        Default route mode of intercepted requests (default ``[proxy_mode] route_mode``).
    no_proxy
        Ignore the ``[proxy]`` section (outbound proxy) for this run.
    insecure_allow_remote
        No effect (kept for old command lines): a non-loopback bind requires client keys.
    """
    from tokn_router.daemon import ServeOptions
    from tokn_router.daemon import serve as run

    path = _context.config_path()
    await run(
        ServeOptions(
            config_path=path,
            api=False,
            with_proxy=True,
            proxy_host=host,
            proxy_port=port,
            proxy_route_mode=route_mode,
            no_proxy=no_proxy,
            insecure_allow_remote=insecure_allow_remote,
        )
    )


proxy_app.default(start)
proxy_app.command(start, name="start")


# ------------------------------------------------------------------ env, shell


@proxy_app.command
def env(*, shell: Shell | None = None) -> None:
    """Print the proxy and CA variables for `eval` (creates the CA on first use).

    ``eval "$(tokn-router proxy env)"`` (sh/bash/zsh),
    ``tokn-router proxy env --shell fish | source``,
    ``tokn-router proxy env --shell pwsh | Out-String | Invoke-Expression``.

    Parameters
    ----------
    shell
        Syntax to print (default: from ``$SHELL``, else sh).
    """
    cfg, path = _load()
    store = _store(cfg, path)
    sys.stdout.write(
        env_script(
            shell or default_shell(), client_proxy_url(cfg), store.bundle_path, store.cert_path
        )
    )


@proxy_app.command(name="shell")
def shell_cmd(*args: str, shell: str | None = None) -> None:
    """Start a shell with the proxy and CA variables set; exits with the shell's code.

    Arguments after ``--`` go to the shell, e.g.
    ``tokn-router proxy shell -- -c 'curl https://api.openai.com/v1/models'``.

    Parameters
    ----------
    args
        Arguments passed to the shell (after ``--``).
    shell
        The shell to run (default ``$SHELL``, else ``/bin/sh``).
    """
    cfg, path = _load()
    store = _store(cfg, path)
    url = client_proxy_url(cfg)
    program = shell or os.environ.get("SHELL") or "/bin/sh"
    resolved = shutil.which(program)
    if resolved is None:
        raise ToknError(f"cannot run shell {program}: not found or not executable")
    environ = {**os.environ, **env_vars(url, store.bundle_path, store.cert_path)}
    if not _listening(url):
        print(
            f"tokn-router: note: nothing listens on {url} yet; start it with `tokn-router proxy`",
            file=sys.stderr,
        )
    print(f"tokn-router: {program} with HTTPS_PROXY={url}; exit it to leave", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # exec, not a child: Ctrl-C and job control belong to the shell alone, and its
        # exit code is ours without a Python process waiting in between.
        os.execve(resolved, [program, *args], environ)
    except OSError as e:
        raise ToknError(f"cannot run shell {program}: {e.strerror or e}") from None


# ------------------------------------------------------------------------- ca


@ca_app.command(name="path")
def ca_path() -> None:
    """Print the CA folder (ca.crt, ca.key, ca-bundle.crt)."""
    cfg, path = _load()
    print(config.ca_dir(cfg, path))


@ca_app.command(name="show")
def ca_show(*, as_json: Json = False) -> None:
    """Print the CA certificate (PEM), its SHA-256 fingerprint and validity (creates it on first use).

    --json prints {"format": 1, "certificate": path, "bundle": path, "sha256":
    "AB:CD:…", "not_valid_before": ISO 8601 UTC, "not_valid_after": ISO 8601
    UTC, "pem": the certificate}.

    Parameters
    ----------
    as_json
        Print JSON (format above) instead of text.
    """
    cfg, path = _load()
    store = _store(cfg, path)
    if as_json:
        print(
            json.dumps(
                {
                    "format": 1,
                    "certificate": str(store.cert_path),
                    "bundle": str(store.bundle_path),
                    "sha256": store.fingerprint_sha256(),
                    "not_valid_before": store.not_valid_before.astimezone(dt.UTC).isoformat(),
                    "not_valid_after": store.not_valid_after.astimezone(dt.UTC).isoformat(),
                    "pem": store.pem(),
                },
                indent=2,
            )
        )
        return
    print(f"certificate:  {store.cert_path}")
    print(f"bundle:       {store.bundle_path}")
    print(f"sha256:       {store.fingerprint_sha256()}")
    print(f"valid from:   {_when(store.not_valid_before)}")
    print(f"valid until:  {_when(store.not_valid_after)}")
    print()
    sys.stdout.write(store.pem())


def _confirm(question: str) -> bool:
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


@ca_app.command(name="regenerate")
def ca_regenerate(*, yes: Yes = False) -> int:
    """Replace the CA with a new one; clients must trust the new ca.crt afterwards.

    Parameters
    ----------
    yes
        Do not ask for confirmation (required when stdin is not a terminal).
    """
    cfg, path = _load()
    folder = config.ca_dir(cfg, path)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "refusing to regenerate the proxy CA without confirmation: "
                "stdin is not a terminal; pass --yes"
            )
        if not _confirm(
            f"Replace the proxy CA in {folder}? Clients trusting the current one will "
            "reject the proxy until they trust the new ca.crt."
        ):
            print("tokn-router: the CA was not changed", file=sys.stderr)
            return 1
    if not cfg.proxy_mode.ca_dir:
        config.ensure_state_dir(config.state_dir(path))
    from tokn_router.edges.proxy.ca import CertStore

    store = CertStore(folder)
    store.regenerate()
    print(f"new proxy CA: {store.cert_path}")
    print(f"sha256:       {store.fingerprint_sha256()}")
    print(
        "Clients must trust the new certificate: re-run `tokn-router proxy env` (or re-import "
        "ca.crt where you installed it) and restart a running proxy."
    )
    return 0

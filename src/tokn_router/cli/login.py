"""``tokn-router login`` and ``tokn-router import``: add accounts."""

from __future__ import annotations

import getpass
import sys
import time
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import Parameter

from tokn_router import redact
from tokn_router.accounts.config import Account, Config, ConfigFile
from tokn_router.accounts.providers import PROVIDERS
from tokn_router.accounts.providers import github as gh
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.cli._params import AccountId, BaseUrl, EnvVar, Flag
from tokn_router.errors import UsageError

# trio, httpx and the importers are imported inside the commands: `--help` and the
# other commands start faster without them.
if TYPE_CHECKING:
    from tokn_router.accounts.token_sources import FoundToken

COPILOT = "github-copilot"


def _out(line: str = "", *, end: str = "\n") -> None:
    print(line, end=end, flush=True)


def _expiry(ts: int | None) -> str:
    if not ts:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ts))


def _added(account: Account, extra: str = "") -> None:
    _out(f"Added account '{account.id}' ({account.provider}){extra}.")


def read_secret(prompt: str) -> str:
    """Hidden input on a terminal; one line from stdin when it is a pipe or file."""
    if sys.stdin is None or sys.stdin.closed:
        return ""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().strip()


def _setup(provider: str, account_id: str | None) -> tuple[ConfigFile, Config]:
    from tokn_router.accounts import importers

    importers.check_provider(provider)
    cfg_file = _context.config_file()
    cfg = cfg_file.load()  # a broken config fails here, before any network call
    if account_id is not None:
        importers.validate_id(account_id)
        importers.check_id_free(cfg, account_id)
    return cfg_file, cfg


# --------------------------------------------------------------------------- login


class _Progress:
    """Polling progress: a rewritten line on a terminal, a line per 15 s otherwise."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.tty = sys.stdout.isatty()
        self.last: float | None = None
        self.interval: float | None = None

    def __call__(self, interval: float) -> None:
        elapsed = time.monotonic() - self.start
        if self.interval is not None and interval > self.interval:
            self._line(f"GitHub asked to slow down; polling every {interval:g}s")
        self.interval = interval
        if self.tty:
            _out(f"\r  waiting for authorisation… {int(elapsed)}s (Ctrl-C to cancel)", end="")
        elif self.last is None or elapsed - self.last >= 15:
            self.last = elapsed
            _out(f"  waiting for authorisation… ({int(elapsed)}s)")

    def _line(self, text: str) -> None:
        _out(f"\r  {text}" if self.tty else f"  {text}")

    def done(self) -> None:
        if self.tty:
            _out()


async def _login_copilot(
    cfg_file: ConfigFile, cfg: Config, account_id: str | None, base_url: str | None, no_proxy: bool
) -> None:
    from tokn_router.accounts import importers
    from tokn_router.accounts.providers import github_client
    from tokn_router.cli import _net

    where = gh.github_url(cfg.github)
    timeout = _net.control_timeout(cfg)
    _net.contacting(f"GitHub at {where}")
    async with _net.control_client(cfg, no_proxy=no_proxy) as client:
        with _net.network_errors(f"GitHub at {where}", timeout):
            code = await github_client.request_device_code(client, cfg.github)
        minutes = max(1, code.expires_in // 60)
        _out(f"Open {code.verification_uri} and enter the code: {code.user_code}")
        _out(f"Waiting for you to authorise this device (the code expires in {minutes} min)…")
        progress = _Progress()
        try:
            with _net.network_errors(f"GitHub at {where}", timeout):
                token = await github_client.poll_access_token(
                    client, cfg.github, code, on_wait=progress
                )
        finally:
            progress.done()
        _out("Authorised. Checking Copilot access…")
        with _net.network_errors(f"GitHub at {gh.api_url(cfg.github)}", timeout):
            account = await importers.add_copilot_account(
                client,
                cfg_file,
                cfg.github,
                token,
                "device flow",
                account_id=account_id,
                base_url=base_url,
            )
    _added(account, f", Copilot token valid until {_expiry(account.access_token_expires_at)}")


async def _add_key(
    cfg_file: ConfigFile,
    cfg: Config,
    provider: str,
    key: str,
    account_id: str | None,
    base_url: str | None,
    no_proxy: bool,
) -> None:
    from tokn_router.accounts import importers
    from tokn_router.cli import _net

    base = (base_url or PROVIDERS[provider].default_base_url).rstrip("/")
    _net.contacting(f"{PROVIDERS[provider].display_name} at {redact.url(base)}")
    async with _net.control_client(cfg, no_proxy=no_proxy) as client:
        account, count = await importers.add_api_key_account(
            client, cfg_file, provider, key, account_id=account_id, base_url=base_url
        )
    models = f", {count} models available" if count else ""
    _added(account, f", key {redact.secret(key)}{models}")


@app.command
def login(
    *,
    provider: str = COPILOT,
    account_id: AccountId = None,
    base_url: BaseUrl = None,
    no_proxy: Flag = False,
) -> None:
    """Add an account: GitHub device flow (Copilot) or a hidden API key prompt (Z.ai).

    The device flow prints a code and a URL and polls until you authorise it; it
    never reads stdin, so it works over SSH. API keys are verified against the
    provider's /models before anything is saved.

    Parameters
    ----------
    provider
        github-copilot (default), zai-coding-plan, zai, zhipuai-coding-plan or zhipuai.
    account_id
        Account id (default: the GitHub login, or the provider id for API keys).
    base_url
        API base URL stored with the account and used for verification (e.g. the
        China-mainland endpoint).
    no_proxy
        Ignore the [proxy] section for this run.
    """
    import trio

    cfg_file, cfg = _setup(provider, account_id)
    if provider == COPILOT:
        trio.run(_login_copilot, cfg_file, cfg, account_id, base_url, no_proxy)
        return
    display = PROVIDERS[provider].display_name
    key = read_secret(f"{display} API key (input hidden): ").strip()
    if not key:
        raise UsageError("no API key given")
    trio.run(_add_key, cfg_file, cfg, provider, key, account_id, base_url, no_proxy)


# -------------------------------------------------------------------------- import


async def _import_copilot(
    cfg_file: ConfigFile,
    cfg: Config,
    found: FoundToken,
    account_id: str | None,
    base_url: str | None,
    no_proxy: bool,
) -> None:
    from tokn_router.accounts import importers
    from tokn_router.cli import _net

    where = f"GitHub at {gh.api_url(cfg.github)}"
    _net.contacting(where)
    async with _net.control_client(cfg, no_proxy=no_proxy) as client:
        with _net.network_errors(where, _net.control_timeout(cfg)):
            account = await importers.add_copilot_account(
                client,
                cfg_file,
                cfg.github,
                found.token,
                found.source,
                account_id=account_id,
                base_url=base_url,
                fallback_user=found.user,
            )
    _added(account, f", Copilot token valid until {_expiry(account.access_token_expires_at)}")


@app.command(name="import")
def import_(
    *,
    from_: Annotated[Literal["gh", "copilot-plugin", "env"], Parameter(name="--from")],
    provider: str = COPILOT,
    env_var: EnvVar = None,
    account_id: AccountId = None,
    base_url: BaseUrl = None,
    no_proxy: Flag = False,
) -> None:
    """Import an existing token and verify it before saving.

    gh: $GH_TOKEN, $GITHUB_TOKEN, gh's hosts.yml, then `gh auth token`.

    copilot-plugin: github-copilot/apps.json, hosts.json, then auth.db.

    env: --env-var, else $GH_COPILOT_TOKEN / $GITHUB_TOKEN (Copilot) or $ZAI_API_KEY (Z.ai).

    Parameters
    ----------
    from_
        Where to look: gh, copilot-plugin or env.
    provider
        github-copilot (default), or a Z.ai provider id with --from env.
    env_var
        Environment variable holding the token or key (with --from env).
    account_id
        Account id (default: the GitHub login, or the provider id for API keys).
    base_url
        API base URL stored with the account and used for verification.
    no_proxy
        Ignore the [proxy] section for this run.
    """
    import trio

    from tokn_router.accounts import token_sources

    cfg_file, cfg = _setup(provider, account_id)
    found = token_sources.find_token(
        from_, provider, github_url=gh.github_url(cfg.github), env_var=env_var
    )
    _out(f"Found {redact.secret(found.token)} in {found.source}; verifying…")
    if provider == COPILOT:
        trio.run(_import_copilot, cfg_file, cfg, found, account_id, base_url, no_proxy)
    else:
        trio.run(_add_key, cfg_file, cfg, provider, found.token, account_id, base_url, no_proxy)

"""``tokn-router doctor``: what a set-up needs, one line per check, each problem with its fix.

It checks the config, file modes, accounts, pinned identity values, the reach of the
configured GitHub, Copilot and Z.ai URLs (short timeouts, no credentials sent), the
CA and whether the shell trusts it, and the daemon.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokn_router import redact
from tokn_router.accounts import config, config_ops
from tokn_router.accounts.config import Account, Config
from tokn_router.accounts.providers import PROVIDERS
from tokn_router.cli import _context
from tokn_router.cli._app import app
from tokn_router.cli._params import Flag, Json
from tokn_router.cli.proxy_cmd import client_proxy_url

# httpx, trio, the GitHub client and the CA store are imported inside the commands:
# every other command (and --help) starts faster without them.
from tokn_router.cli.status import JSON_FORMAT, account_detail, api_url, probe, span
from tokn_router.errors import ConfigError, ToknError

# ---------------------------------------------------------------------- doctor

Level = Literal["ok", "info", "warn", "fail"]


@dataclass
class Check:
    level: Level
    name: str
    detail: str
    fix: str | None = None

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.fix else ""
        return f"{self.level.upper():<5} {self.name}: {self.detail}{fix}"

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "check": self.name, "detail": self.detail, "fix": self.fix}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    printed: int = 0

    def flush(self) -> None:
        """Print the checks not printed yet, so lines appear as checks finish."""
        for c in self.checks[self.printed :]:
            print(c.line())
        self.printed = len(self.checks)
        sys.stdout.flush()

    def add(self, level: Level, name: str, detail: str, fix: str | None = None) -> None:
        self.checks.append(Check(level, name, detail, fix))

    @property
    def failed(self) -> bool:
        return any(c.level == "fail" for c in self.checks)


def _mode_check(r: Report, path: Path, want: int, what: str) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        r.add("fail", "file modes", f"{path}: {e.strerror}")
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & ~want:
        r.add(
            "fail",
            "file modes",
            f"{path} is {mode:04o}: {what} readable by others",
            f"chmod {want:o} {path}",
        )


def check_files(r: Report, cfg: Config | None, cfg_path: Path) -> None:
    before = len(r.checks)
    state = config.state_dir(cfg_path)
    _mode_check(r, state, 0o700, "the state dir (tokens, ledger, CA key) is")
    _mode_check(r, cfg_path, 0o600, "the config (account tokens) is")
    if cfg is not None:
        _mode_check(r, config.usage_db_path(cfg, cfg_path), 0o600, "the usage ledger is")
        _mode_check(r, config.ca_dir(cfg, cfg_path) / "ca.key", 0o600, "the CA's private key is")
    if len(r.checks) == before:
        r.add("ok", "file modes", f"private ({state})")


def check_config(r: Report, cfg_path: Path) -> Config | None:
    if not cfg_path.exists():
        r.add(
            "info",
            "config",
            f"{cfg_path} does not exist yet (defaults apply)",
            "`tokn-router login` creates it",
        )
        return Config()
    try:
        cfg = config.load(cfg_path)
    except ToknError as e:
        r.add("fail", "config", str(e), f"`tokn-router config edit` (or fix {cfg_path})")
        return None
    r.add("ok", "config", f"{cfg_path} is valid")
    return cfg


def check_accounts(r: Report, cfg: Config) -> None:
    enabled = [a for a in cfg.accounts if a.enabled]
    if not cfg.accounts:
        r.add("warn", "accounts", "none configured", "`tokn-router login` or `tokn-router import`")
    elif not enabled:
        r.add(
            "warn",
            "accounts",
            f"all {len(cfg.accounts)} disabled",
            "`tokn-router config set --account ID enabled true`",
        )
    else:
        r.add("ok", "accounts", f"{len(enabled)} enabled of {len(cfg.accounts)}")


def check_identity(r: Report, cfg: Config) -> None:
    # the settings of an account that sets none: the current built-in identity
    probe_acc = Account(id="defaults", provider="github-copilot")
    defaults = config_ops.effective_account(probe_acc, cfg.github)["settings"]
    defaults.pop("initiator_mode", None)  # a routing choice, not an identity value
    stale = 0
    for acc in cfg.accounts:
        if acc.provider != "github-copilot":
            continue
        for key, current in defaults.items():
            pinned = getattr(acc.settings, key, None)
            if pinned is not None and pinned != current:
                stale += 1
                r.add(
                    "warn",
                    "identity",
                    f"account '{acc.id}' pins {key} = {pinned!r}; the current default is "
                    f"{current!r}",
                    f"`tokn-router config unset --account {acc.id} settings.{key}`",
                )
    if not stale:
        r.add(
            "ok",
            "identity",
            f"accounts use the current defaults ({defaults['editor_version']}, "
            f"{defaults['editor_plugin_version']})",
        )


def _endpoints(cfg: Config) -> list[tuple[str, str]]:
    """(check name, URL) of every upstream the accounts need, deduplicated."""
    from tokn_router.accounts.providers import github as gh
    from tokn_router.accounts.providers.base import Credential

    out: list[tuple[str, str]] = []

    def add(name: str, url: str) -> None:
        entry = (name, url.rstrip("/"))
        if entry not in out:
            out.append(entry)

    copilot = [a for a in cfg.accounts if a.provider == "github-copilot" and a.enabled]
    others: list[Account] = [
        a for a in cfg.accounts if a.provider != "github-copilot" and a.enabled
    ]
    if copilot or not cfg.accounts:
        add("GitHub", gh.github_url(cfg.github))
        add("GitHub API", gh.api_url(cfg.github))
    for acc in copilot:
        provider = PROVIDERS[acc.provider]
        cred = Credential(token=acc.access_token) if acc.access_token else None
        add("Copilot API", provider.base_url(acc, cred))
    for acc in others:
        provider = PROVIDERS[acc.provider]
        add(f"{provider.display_name} API", provider.base_url(acc, None))
    return out


async def _reach(client: Any, name: str, url: str, limit: float) -> Check:
    import httpx2 as httpx

    shown = redact.url(url)
    started = time.monotonic()
    try:
        resp = await client.get(url)
    except httpx.TimeoutException:
        return Check(
            "fail",
            name,
            f"{shown} did not answer within {limit:g}s",
            "check the network, and [proxy] if you need one (`tokn-router config get proxy`)",
        )
    except httpx.HTTPError as e:
        detail = redact.text(" ".join((str(e) or type(e).__name__).split()))
        fix = (
            "trust the CA that signs it (SSL_CERT_FILE), or check a TLS-intercepting proxy"
            if "CERTIFICATE" in detail.upper()
            else "check the network, the URL, and [proxy] if you need one"
        )
        return Check("fail", name, f"cannot reach {shown}: {detail}", fix)
    ms = (time.monotonic() - started) * 1000
    return Check("ok", name, f"{shown} answers (HTTP {resp.status_code}, {ms:.0f} ms)")


def check_network(r: Report, cfg: Config, no_proxy: bool) -> None:
    import trio

    from tokn_router.cli import _net

    targets = _endpoints(cfg)
    timeout = _net.control_timeout(cfg)
    results: list[Check | None] = [None] * len(targets)

    async def run() -> None:
        async with _net.control_client(cfg, no_proxy=no_proxy) as client:

            async def one(i: int, name: str, url: str) -> None:
                results[i] = await _reach(client, name, url, timeout)

            async with trio.open_nursery() as nursery:
                for i, (name, url) in enumerate(targets):
                    nursery.start_soon(one, i, name, url)

    try:
        trio.run(run)
    except ConfigError as e:  # e.g. a [proxy] url with an unknown scheme
        r.add("fail", "network", str(e), "`tokn-router config edit`")
        return
    r.checks.extend(c for c in results if c is not None)


def _same(a: str | None, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).expanduser().resolve() == b.resolve()
    except OSError:
        return False


def check_ca(r: Report, cfg: Config, cfg_path: Path) -> None:
    folder = config.ca_dir(cfg, cfg_path)
    crt, key = folder / "ca.crt", folder / "ca.key"
    if not crt.exists() and not key.exists():
        r.add("info", "proxy CA", f"not created yet ({folder}); only the MITM proxy needs it")
        return
    from tokn_router.edges.proxy.ca import CertStore

    try:
        store = CertStore(folder).load()
    except ToknError as e:
        r.add("fail", "proxy CA", str(e), "`tokn-router proxy ca regenerate`")
        return
    left = store.not_valid_after.timestamp() - time.time()
    if left <= 0:
        r.add("fail", "proxy CA", f"{crt} has expired", "`tokn-router proxy ca regenerate`")
        return
    level: Level = "warn" if left < 30 * 86400 else "ok"
    r.add(
        level,
        "proxy CA",
        f"{crt} valid for {span(left)}",
        "`tokn-router proxy ca regenerate` soon" if level == "warn" else None,
    )
    proxy = client_proxy_url(cfg)
    https_proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    env_fix = 'eval "$(tokn-router proxy env)"'
    if not https_proxy:
        r.add("info", "shell", "HTTPS_PROXY is not set: this shell does not use the MITM proxy")
        return
    if https_proxy.rstrip("/") != proxy:
        r.add("info", "shell", f"HTTPS_PROXY is {https_proxy}, not the tokn-router proxy {proxy}")
        return
    bundle = store.bundle_path
    untrusted = [
        name
        for name, want in (
            ("SSL_CERT_FILE", bundle),
            ("REQUESTS_CA_BUNDLE", bundle),
            ("NODE_EXTRA_CA_CERTS", crt),
        )
        if not _same(os.environ.get(name), want)
    ]
    if untrusted:
        r.add(
            "fail",
            "shell",
            f"HTTPS_PROXY is the tokn-router proxy, but {', '.join(untrusted)} "
            "do not point at its CA: TLS clients will reject it",
            env_fix,
        )
    else:
        r.add("ok", "shell", "uses the tokn-router proxy and trusts its CA")


def check_daemon(r: Report, cfg: Config) -> None:
    p = probe(api_url(cfg))
    if p.health is not None:
        r.add("ok", "daemon", f"running at {p.url} (tokn-router {p.health.get('version', '?')})")
        now = time.time()
        for a in p.health.get("accounts") or []:
            state = a.get("state")
            if state in ("cooling_down", "disabled", "no_credential"):
                r.add(
                    "warn",
                    f"account {a.get('id')}",
                    f"{state}: {account_detail(a, now)}",
                    f"`tokn-router account show {a.get('id')}` (a fixed account is picked up live)",
                )
    elif p.foreign:
        r.add(
            "fail",
            "daemon",
            p.error or "another program answers",
            "stop it, or run tokn-router on another port (`config set server.port N`)",
        )
    else:
        r.add("info", "daemon", f"not running ({p.error})", "`tokn-router serve`")


@app.command
def doctor(*, no_proxy: Flag = False, as_json: Json = False) -> int:
    """Check the set-up: config, file modes, GitHub and Copilot reachability, CA, daemon.

    One line per check: OK, INFO, WARN or FAIL, then what was found and, when
    something needs doing, "-> fix: …". Network checks use short timeouts
    ([upstream] connect_timeout_secs, 15 s by default) and the [proxy] section.
    Exits 1 when a check fails.

    --json prints {"format": 1, "ok": true|false, "checks": [{"level",
    "check", "detail", "fix"}]}.

    Parameters
    ----------
    no_proxy
        Ignore the [proxy] section for the network checks.
    as_json
        Print JSON (format above) instead of text.
    """
    cfg_path = _context.config_path()
    r = Report()
    cfg = check_config(r, cfg_path)
    check_files(r, cfg, cfg_path)
    if cfg is not None:
        check_accounts(r, cfg)
        check_identity(r, cfg)
        if not as_json:
            r.flush()
            print(
                f"checking the network (up to {cfg.upstream.connect_timeout_secs:g}s)…",
                file=sys.stderr,
                flush=True,
            )
        check_network(r, cfg, no_proxy)
        check_ca(r, cfg, cfg_path)
        check_daemon(r, cfg)
    if as_json:
        print(
            json.dumps(
                {
                    "format": JSON_FORMAT,
                    "ok": not r.failed,
                    "checks": [c.as_dict() for c in r.checks],
                },
                indent=2,
            )
        )
    else:
        r.flush()
    return 1 if r.failed else 0

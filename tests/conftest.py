"""Shared fixtures: fake upstreams, proxies, a temp HOME, the CLI and the daemon.

See tests/fakes/README.md for the guide.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import trustme

from tests.fakes import FakeUpstream
from tests.fakes.process import Daemon, merge_env
from tests.fakes.process import run_cli as _run_cli
from tests.fakes.process import wait_for as _wait_for
from tests.fakes.proxies import HttpProxy, Socks5Proxy

# Variables that must never leak from the developer's shell into a test process.
_SCRUB_PREFIXES = ("TOKN_ROUTER_",)
_SCRUB = {
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "GH_COPILOT_TOKEN",
    "GH_HOST",
    "GH_CONFIG_DIR",
    "COPILOT_API_KEY",
    "ZAI_API_KEY",
    "ZHIPU_API_KEY",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
}


# --------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trustme_ca() -> trustme.CA:
    """A test CA (ECDSA). Issue leaves with ``trustme_ca.issue_cert("127.0.0.1", "localhost")``."""
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture(scope="session")
def ca_bundle(trustme_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PEM file of the test CA (what ``SSL_CERT_FILE`` points at in ``cli_env``)."""
    path = tmp_path_factory.mktemp("ca") / "test-ca.pem"
    trustme_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def client_ssl_context(trustme_ca: trustme.CA) -> ssl.SSLContext:
    """Client context trusting only the test CA (``httpx.Client(verify=client_ssl_context)``)."""
    ctx = ssl.create_default_context()
    trustme_ca.configure_trust(ctx)
    return ctx


# --------------------------------------------------------------------------------------
# fake upstreams
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_upstream_session() -> Iterator[FakeUpstream]:
    with FakeUpstream(name="fake-upstream") as fake:
        yield fake


@pytest.fixture
def fake(fake_upstream_session: FakeUpstream) -> FakeUpstream:
    """The plain-HTTP fake GitHub/Copilot/Z.ai upstream, reset for this test."""
    fake_upstream_session.reset()
    return fake_upstream_session


@pytest.fixture(scope="session")
def fake_tls_session(trustme_ca: trustme.CA) -> Iterator[FakeUpstream]:
    cert = trustme_ca.issue_cert("127.0.0.1", "localhost", "upstream.test")
    with FakeUpstream(tls_cert=cert, name="fake-upstream-tls") as f:
        yield f


@pytest.fixture
def fake_tls(fake_tls_session: FakeUpstream) -> FakeUpstream:
    """Same fake over HTTPS (cert for 127.0.0.1, localhost, upstream.test from ``trustme_ca``), reset."""
    fake_tls_session.reset()
    return fake_tls_session


@pytest.fixture
def make_fake() -> Iterator[Callable[..., FakeUpstream]]:
    """Factory for extra, independent fakes (e.g. two hosts): ``make_fake(tls_cert=None)``."""
    started: list[FakeUpstream] = []

    def factory(**kwargs: Any) -> FakeUpstream:
        f = FakeUpstream(**kwargs).start()
        started.append(f)
        return f

    yield factory
    for f in started:
        f.stop()


# --------------------------------------------------------------------------------------
# outbound proxies
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _http_proxy_session() -> Iterator[HttpProxy]:
    with HttpProxy() as p:
        yield p


@pytest.fixture
def http_proxy(_http_proxy_session: HttpProxy) -> HttpProxy:
    """HTTP proxy (CONNECT + absolute-form) at ``http_proxy.url``; records reset, hosts cleared."""
    _http_proxy_session.reset()
    _http_proxy_session.hosts.clear()
    _http_proxy_session.auth = None
    return _http_proxy_session


@pytest.fixture(scope="session")
def _socks_proxy_session() -> Iterator[Socks5Proxy]:
    with Socks5Proxy() as p:
        yield p


@pytest.fixture
def socks_proxy(_socks_proxy_session: Socks5Proxy) -> Socks5Proxy:
    """SOCKS5 proxy at ``socks_proxy.url`` (``socks5://127.0.0.1:PORT``); records reset."""
    _socks_proxy_session.reset()
    _socks_proxy_session.hosts.clear()
    return _socks_proxy_session


# --------------------------------------------------------------------------------------
# environment, CLI, config, daemon
# --------------------------------------------------------------------------------------


@dataclass
class EnvHome:
    """A temp HOME for a CLI/daemon subprocess."""

    home: Path
    xdg_config: Path
    config_path: Path  # $TOKN_ROUTER_CONFIG = <xdg_config>/tokn-router/config.toml
    env: dict[str, str]

    @property
    def state_dir(self) -> Path:
        return self.config_path.parent


def _base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SCRUB and not k.startswith(_SCRUB_PREFIXES) and not k.startswith("PYTEST_")
    }
    return env


@pytest.fixture
def env_home(tmp_path: Path, fake: FakeUpstream, ca_bundle: Path) -> EnvHome:
    """Temp HOME + XDG_CONFIG_HOME; GitHub URLs point at ``fake``; no proxies; test CA trusted."""
    home = tmp_path / "home"
    xdg = home / ".config"
    xdg.mkdir(parents=True)
    config_path = xdg / "tokn-router" / "config.toml"
    env = _base_env()
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(xdg),
            "TOKN_ROUTER_CONFIG": str(config_path),
            "TOKN_ROUTER_GITHUB_URL": fake.url,
            "TOKN_ROUTER_GITHUB_API_URL": fake.url,
            "NO_PROXY": "*",
            "no_proxy": "*",
            "SSL_CERT_FILE": str(ca_bundle),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "NO_COLOR": "1",
            "COLUMNS": "200",
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
    )
    return EnvHome(home=home, xdg_config=xdg, config_path=config_path, env=env)


@pytest.fixture
def cli_env(env_home: EnvHome) -> dict[str, str]:
    """The environment dict used by ``run_cli``/``daemon`` (mutate it to change defaults)."""
    return env_home.env


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(cli_env: dict[str, str], env_home: EnvHome) -> RunCli:
    """``run_cli(*args, input=None, env=None, timeout=30)`` -> CompletedProcess[str].

    Runs the real console script; ``env`` entries override ``cli_env`` (None removes).
    """

    def run(
        *args: str,
        input: str | None = None,
        env: dict[str, str | None] | None = None,
        timeout: float = 30.0,
    ) -> Any:
        return _run_cli(
            [str(a) for a in args],
            env=merge_env(cli_env, env),
            input=input,
            timeout=timeout,
            cwd=env_home.home,
        )

    return run


@pytest.fixture
def write_config(env_home: EnvHome) -> Callable[..., Path]:
    """``write_config(text_or_dict, path=None)`` -> Path; writes TOML (dicts via tomlkit), 0600."""

    def write(content: str | dict[str, Any], path: Path | None = None) -> Path:
        target = path or env_home.config_path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = content if isinstance(content, str) else tomlkit.dumps(content)
        target.write_text(text)
        target.chmod(0o600)
        return target

    return write


@pytest.fixture
def daemon(cli_env: dict[str, str], env_home: EnvHome) -> Iterator[Callable[..., Daemon]]:
    """``daemon(*extra_args, env=None, ready=True, timeout=20, cmd=("serve", "--port", "0"))``.

    Starts ``tokn-router <cmd> <extra_args>``; with ``ready`` waits for
    ``listening on URL`` (and ``proxy listening on URL`` with ``--with-proxy``).
    Every daemon is killed at teardown.
    """
    started: list[Daemon] = []

    def start(
        *extra: str,
        env: dict[str, str | None] | None = None,
        ready: bool = True,
        timeout: float = 20.0,
        cmd: tuple[str, ...] = ("serve", "--port", "0"),
    ) -> Daemon:
        d = Daemon([*cmd, *extra], env=merge_env(cli_env, env), cwd=env_home.home)
        started.append(d)
        d.start()
        if ready:
            d.wait_ready(timeout)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=10)`` -> the predicate's truthy value (polls under a deadline)."""
    return _wait_for

"""Real fake upstream servers and helpers for tests (see README.md in this folder)."""

from tests.fakes.process import Daemon, merge_env, run_cli, wait_for
from tests.fakes.proxies import HttpProxy, ProxyRecord, Socks5Proxy
from tests.fakes.server import BackgroundServer
from tests.fakes.upstream import (
    DeviceOutcome,
    FakeUpstream,
    GithubAccount,
    RecordedRequest,
    Script,
    embedding_for,
    http_date,
)

__all__ = [
    "BackgroundServer",
    "Daemon",
    "DeviceOutcome",
    "FakeUpstream",
    "GithubAccount",
    "HttpProxy",
    "ProxyRecord",
    "RecordedRequest",
    "Script",
    "Socks5Proxy",
    "embedding_for",
    "http_date",
    "merge_env",
    "run_cli",
    "wait_for",
]

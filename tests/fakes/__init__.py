"""Real fake upstream servers and helpers for tests (see README.md in this folder).

This package is the face of the fakes: tests import from ``tests.fakes``, whose
``__all__`` is locked by ``tests/test_fakes.py``. The per-upstream classes
(``GithubFake``, ``CopilotFake``, ``ZaiFake``, ``HttpsHost``) stay in their modules.
"""

from tests.fakes.combined import FakeUpstream
from tests.fakes.copilot import embedding_for
from tests.fakes.github import DeviceOutcome, GithubAccount
from tests.fakes.h11_app import Exchange, H11Server, serve_h11
from tests.fakes.process import Daemon, merge_env, run_cli, wait_for
from tests.fakes.proxies import HttpProxy, ProxyRecord, Socks5Proxy
from tests.fakes.server import BackgroundServer, RecordedRequest, Script, http_date

__all__ = [
    "BackgroundServer",
    "Daemon",
    "DeviceOutcome",
    "Exchange",
    "FakeUpstream",
    "GithubAccount",
    "H11Server",
    "HttpProxy",
    "ProxyRecord",
    "RecordedRequest",
    "Script",
    "Socks5Proxy",
    "embedding_for",
    "http_date",
    "merge_env",
    "run_cli",
    "serve_h11",
    "wait_for",
]

"""``proxy env`` scripts: evaluated by the real shells present on this machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROXY_ENV_NAMES
from tokn_router.edges.proxy.shellenv import DEFAULT_NO_PROXY, env_script, env_vars, quote

PROXY_URL = "http://passthrough@127.0.0.1:4142"
NAMES = list(PROXY_ENV_NAMES)

# sh is always tested; the others only where their binary exists (no silent skips).
SHELLS = ["sh"] + [s for s in ("bash", "zsh", "fish", "pwsh") if shutil.which(s)]

DUMP_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


def _nasty_dir(tmp_path: Path) -> Path:
    # Spaces, both quote kinds, $ expansions, backquotes, a backslash, a glob, and
    # PowerShell's typographic quote.
    d = tmp_path / 'My "AI" it\'s $HOME `id` $(id) \\n *? \u2019q'
    (d / "ca").mkdir(parents=True)
    return d / "ca"


def _run(shell: str, script: str, tmp_path: Path) -> dict[str, str]:
    script_file = tmp_path / ("env.ps1" if shell == "pwsh" else "env.sh")
    script_file.write_text(script, encoding="utf-8")
    py = sys.executable
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    if shell in ("sh", "bash", "zsh"):
        # eval of the printed text, exactly as the README tells users to do.
        cmd = [
            shell,
            "-c",
            'eval "$(cat "$1")" && exec "$2" -c "$3"',
            shell,
            str(script_file),
            py,
            DUMP_ENV,
        ]
    elif shell == "fish":
        cmd = [
            "fish",
            "-c",
            "source $argv[1]; and exec $argv[2] -c $argv[3]",
            str(script_file),
            py,
            DUMP_ENV,
        ]
    else:
        cmd = [
            "pwsh",
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            f"Get-Content -Raw -LiteralPath {quote('pwsh', str(script_file))} | Invoke-Expression; "
            f"& {quote('pwsh', py)} -c {quote('pwsh', DUMP_ENV)}",
        ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("shell", SHELLS)
def test_script_sets_the_variables_in_a_real_shell(shell: str, tmp_path: Path) -> None:
    ca_dir = _nasty_dir(tmp_path)
    bundle, ca = ca_dir / "ca-bundle.crt", ca_dir / "ca.crt"
    script = env_script(shell, PROXY_URL, bundle, ca, ["localhost", "127.0.0.1", ".internal"])
    env = _run(shell, script, tmp_path)
    assert {k: env.get(k) for k in NAMES} == env_vars(
        PROXY_URL, bundle, ca, "localhost,127.0.0.1,.internal"
    )
    assert env["SSL_CERT_FILE"] == str(bundle) and env["NODE_EXTRA_CA_CERTS"] == str(ca)
    assert env["no_proxy"] == "localhost,127.0.0.1,.internal"


def test_env_vars_content() -> None:
    v = env_vars(PROXY_URL, "/s/ca/ca-bundle.crt", Path("/s/ca/ca.crt"))
    assert list(v) == NAMES
    assert {v[k] for k in NAMES[:4]} == {PROXY_URL}
    assert v["NO_PROXY"] == v["no_proxy"] == ",".join(DEFAULT_NO_PROXY)
    assert {
        v[k] for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")
    } == {"/s/ca/ca-bundle.crt"}
    assert v["NODE_EXTRA_CA_CERTS"] == "/s/ca/ca.crt"


# Exact quoting for every shell, so fish and pwsh are checked even where they are absent.
@pytest.mark.parametrize(
    ("shell", "value", "expected"),
    [
        ("sh", "/a b/it's $x", "'/a b/it'\"'\"'s $x'"),
        ("bash", "plain/path", "plain/path"),
        ("zsh", "", "''"),
        ("fish", "/a b/it's \\ $x", "'/a b/it\\'s \\\\ $x'"),
        ("pwsh", "/a b/it's $x \u2019", "'/a b/it''s $x \u2019\u2019'"),
        ("pwsh", 'say "hi" `n', "'say \"hi\" `n'"),
    ],
)
def test_quoting(shell: str, value: str, expected: str) -> None:
    assert quote(shell, value) == expected


@pytest.mark.parametrize(
    ("shell", "line"),
    [
        ("sh", "export SSL_CERT_FILE='/x y/ca-bundle.crt'"),
        ("fish", "set -gx SSL_CERT_FILE '/x y/ca-bundle.crt'"),
        ("pwsh", "$env:SSL_CERT_FILE = '/x y/ca-bundle.crt'"),
    ],
)
def test_script_syntax_per_shell(shell: str, line: str) -> None:
    script = env_script(shell, PROXY_URL, "/x y/ca-bundle.crt", "/x y/ca.crt")
    assert line in script.splitlines()
    assert script.startswith("# ") and script.endswith("\n")


def test_unknown_shell_and_nul_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown shell"):
        env_script("csh", PROXY_URL, "/b", "/c")
    with pytest.raises(ValueError, match="NUL"):
        quote("sh", "a\0b")

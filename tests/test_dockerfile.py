"""The Dockerfile, checked without Docker: parsed, and its healthcheck run for real."""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tokn_router.cli import app

ROOT = Path(__file__).resolve().parents[1]


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order; comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(ROOT / "Dockerfile")


def only(ins: list[tuple[str, str]], name: str) -> str:
    found = [a for n, a in ins if n == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def env_of(ins: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in ins:
        if name == "ENV":
            for pair in shlex.split(args):
                k, _, v = pair.partition("=")
                env[k] = v
    return env


def test_base_image_and_install(dockerfile: list[tuple[str, str]]) -> None:
    assert only(dockerfile, "FROM") == "python:3.12-slim"
    runs = [a for n, a in dockerfile if n == "RUN"]
    assert any(a.startswith("pip install ") for a in runs)
    # every file the wheel is built from is copied in, and none is excluded by .dockerignore
    ignored = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for name, args in dockerfile:
        if name != "COPY":
            continue
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert (ROOT / src).exists(), src
            assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), src
    for needed in ("pyproject.toml", "README.md", "VERSION", "src"):
        assert any(needed in shlex.split(a) for n, a in dockerfile if n == "COPY"), needed


def test_runs_as_non_root_with_the_state_dir_as_a_volume(dockerfile: list[tuple[str, str]]) -> None:
    user = only(dockerfile, "USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert any("useradd" in a and user in a.split() for n, a in dockerfile if n == "RUN")
    volumes = exec_form(only(dockerfile, "VOLUME"))
    env = env_of(dockerfile)
    config = Path(env["TOKN_ROUTER_CONFIG"])
    # the state dir is the config's folder: it, and so usage.db, keys and the CA, persist
    assert str(config.parent) in volumes
    # the user owns the volume's mount point (a fresh named volume copies its ownership)
    assert any(
        f"chown {user}" in a and str(config.parent) in a for n, a in dockerfile if n == "RUN"
    )
    names = [n for n, _ in dockerfile]
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "RUN")


def test_ports_and_command(dockerfile: list[tuple[str, str]]) -> None:
    assert only(dockerfile, "EXPOSE").split() == ["4141", "4142"]
    argv = exec_form(only(dockerfile, "ENTRYPOINT")) + exec_form(only(dockerfile, "CMD"))
    assert argv[0] == "tokn-router"
    assert argv[1:4] == ["serve", "--host", "0.0.0.0"]
    # the CLI accepts the command as written
    command, bound, _ = app.parse_args(argv[1:], exit_on_error=False, print_error=False)
    assert command.__name__ == "serve" and bound.arguments["host"] == "0.0.0.0"


def test_healthcheck_asks_healthz_without_curl(
    dockerfile: list[tuple[str, str]], daemon: Any, cli_env: dict[str, str]
) -> None:
    args = only(dockerfile, "HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"] and "curl" not in command
    code = argv[2]
    assert "urllib" in code and "http://127.0.0.1:4141/healthz" in code

    # run it against a real daemon (on its own port), with a dead proxy in the
    # environment that it must not use: it succeeds while the daemon is up ...
    d = daemon()
    assert d.url is not None
    port = d.url.rsplit(":", 1)[1]
    env = {k: v for k, v in cli_env.items() if k.lower() != "no_proxy"}
    env.update(HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    real = code.replace("127.0.0.1:4141", f"127.0.0.1:{port}")
    ok = subprocess.run([sys.executable, "-c", real], env=env, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    # ... and fails once it is gone
    d.kill()
    down = subprocess.run([sys.executable, "-c", real], env=env, capture_output=True, timeout=30)
    assert down.returncode != 0


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for heavy in (".git", ".venv", "tests"):
        assert heavy in ignored
    assert os.path.exists(ROOT / "Dockerfile")

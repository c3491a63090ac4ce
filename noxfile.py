"""Developer sessions: `nox -s lint typecheck tests`, `nox -s schema`, `nox -s bench`."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

SRC = ["src", "tests", "scripts", "bench", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.8")
    session.run("ruff", "check", *SRC)
    session.run("ruff", "format", "--check", *SRC)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.13")
    session.run("mypy", "src")


@nox.session
def schema(session: nox.Session) -> None:
    """Regenerate the JSON Schema snapshot of the config and the packaged model metadata."""
    session.install("-e", ".")
    session.run("python", "scripts/gen_config_schema.py")
    session.run("python", "scripts/gen_models_meta.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Measure tokn-router against a direct connection (see bench/README.md)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session
def agents(session: nox.Session) -> None:
    """Run Codex CLI and Claude Code one-shot against `tokn-router serve` + the fake upstream.

    Not in CI: needs node/npm and the npm registry (once, to install the pinned agents
    under .nox/agents/tmp/npm). The runs themselves are offline. Extra args go to
    scripts/agents_e2e.py, e.g. `nox -s agents -- -k codex --keep`.
    """
    from pathlib import Path

    # The versions whose requests the fake upstream and the translators were checked
    # against; a newer agent may send fields they do not know yet.
    pinned = {"@openai/codex": "0.169.0", "@anthropic-ai/claude-code": "2.1.197"}
    session.install("-e", ".[test]")
    tmp = Path(session.create_tmp()).resolve()
    prefix = tmp / "npm"
    prefix.mkdir(exist_ok=True)
    session.run(
        "npm",
        "install",
        "--prefix",
        str(prefix),
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        *(f"{name}@{version}" for name, version in pinned.items()),
        external=True,
    )
    session.run(
        "python",
        "scripts/agents_e2e.py",
        "--bin-dir",
        str(prefix / "node_modules" / ".bin"),
        "--scratch",
        str(tmp / "runs"),
        *session.posargs,
    )

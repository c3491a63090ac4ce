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

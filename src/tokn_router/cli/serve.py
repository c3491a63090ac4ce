"""Placeholder: registers nothing until the feature works."""

from tokn_router.cli import app  # noqa: F401

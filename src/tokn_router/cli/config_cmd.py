"""Placeholder: filled by the Foundation work."""

from tokn_router.cli import app  # noqa: F401

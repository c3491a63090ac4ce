"""LAN bootstrap endpoints (SPEC 10): ``/-/lan/...`` on a deliberate remote bind."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokn_router.api.app import Services


def register(app: Any, svc: Services) -> None:
    """Add the LAN routes when the daemon runs in LAN mode (``svc.lan`` set)."""

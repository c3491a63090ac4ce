"""LAN bootstrap endpoints (SPEC 10): ``/-/lan/...`` on a deliberate remote bind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokn_router.api.app import Services


@dataclass(frozen=True)
class LanInfo:
    """What the LAN endpoints publish; set by the daemon in LAN mode only."""

    proxy_port: int | None  # None without --with-proxy
    ca_cert_path: Path  # public certificate only; the key is never served
    ca_sha256: str  # colon-separated upper-case hex, as printed at start-up


def register(app: Any, svc: Services) -> None:
    """Add the LAN routes when the daemon runs in LAN mode (``svc.lan`` set)."""

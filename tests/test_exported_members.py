"""The public surface of every package, locked (as httpx's tests/test_exported_members.py).

A package's ``__all__`` is its face: for the rooms of the layout (``wire``,
``serve``, …) it lists the modules, so a new module is a deliberate change of
this table; for packages with a real face (``usage``, ``wire.translate``, the
provider registry) it lists the names other rooms may import. Every name
listed must resolve, and so must every name of a module's own ``__all__``.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import tokn_router

SRC = Path(tokn_router.__file__).parent

# package -> its __all__
FACES: dict[str, list[str]] = {
    "tokn_router": ["__version__"],
    "tokn_router.accounts": [
        "config",
        "config_ops",
        "identity",
        "importers",
        "models_meta",
        "pool",
        "providers",
        "refresher",
        "resets",
        "schema",
        "token_sources",
        "window_store",
        "windows",
    ],
    "tokn_router.accounts.providers": ["PROVIDERS", "Credential", "Provider", "RequestInfo", "get"],
    "tokn_router.clients": [
        "activity",
        "extract",
        "keys",
        "ledger",
        "limits",
        "policy",
    ],
    "tokn_router.edges": [
        "api",
        "lan",
        "lan_scripts",
        "proxy",
    ],
    "tokn_router.edges.proxy": [
        "ca",
        "certs",
        "exchange",
        "listener",
        "modes",
        "shellenv",
    ],
    "tokn_router.net": [
        "client",
        "h1client",
        "streams",
        "transport",
        "tunnels",
    ],
    "tokn_router.serve": [
        "agents",
        "call",
        "chat",
        "common",
        "forward",
        "gate",
        "metrics",
        "policy",
        "pump",
        "relay",
        "routes",
        "sticky",
    ],
    "tokn_router.usage": [
        "Attempt",
        "Ledger",
        "NoDatabaseError",
        "RequestRecord",
        "UsageDbError",
        "UsageHealth",
        "open_db",
        "open_ledger",
        "open_readonly",
        "run_writer",
        "submit",
    ],
    "tokn_router.wire": [
        "errors",
        "hosts",
        "http1",
        "initiator",
        "jsondepth",
        "quota",
        "sse",
        "transforms",
        "translate",
        "usage",
        "validate",
    ],
    "tokn_router.wire.translate": [
        "ChatToMessagesStream",
        "ChatToResponsesStream",
        "TranslationError",
        "anthropic_error",
        "chat_to_message",
        "chat_to_response",
        "closest_ids",
        "messages_initiator",
        "messages_to_chat",
        "normalise_model_id",
        "openai_error",
        "resolve_model",
        "responses_initiator",
        "responses_to_chat",
        "translation_error_body",
    ],
}
# Packages whose face is the list of their modules.
MODULE_FACES = frozenset(
    {
        "tokn_router.accounts",
        "tokn_router.clients",
        "tokn_router.edges",
        "tokn_router.edges.proxy",
        "tokn_router.net",
        "tokn_router.serve",
        "tokn_router.wire",
    }
)
# Packages with no face of their own: the CLI registers commands, data holds files.
NO_FACE = frozenset({"tokn_router.cli", "tokn_router.data"})


def _packages() -> list[str]:
    found = ["tokn_router"]
    for info in pkgutil.walk_packages([str(SRC)], "tokn_router."):
        if info.ispkg:
            found.append(info.name)
    return sorted(found)


def _public_children(package: str) -> list[str]:
    folder = SRC.joinpath(*package.split(".")[1:])
    return sorted(
        info.name for info in pkgutil.iter_modules([str(folder)]) if not info.name.startswith("_")
    )


def test_every_package_has_a_locked_face() -> None:
    assert sorted(p for p in _packages() if p not in NO_FACE) == sorted(FACES)


def test_package_faces_are_what_the_table_says() -> None:
    for package, expected in FACES.items():
        module = importlib.import_module(package)
        assert sorted(module.__all__) == sorted(expected), package


def test_module_faces_list_every_public_module() -> None:
    for package in MODULE_FACES:
        assert sorted(FACES[package]) == _public_children(package), package


def test_every_exported_name_resolves() -> None:
    for package, names in FACES.items():
        module = importlib.import_module(package)
        for name in names:
            if package in MODULE_FACES:
                importlib.import_module(f"{package}.{name}")
            else:
                assert hasattr(module, name), f"{package}.{name}"


def _module_names() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages([str(SRC)], "tokn_router.")
        if not info.ispkg and not info.name.rpartition(".")[2].startswith("_")
    ]


def test_every_module_export_resolves() -> None:
    for name in _module_names():
        module = importlib.import_module(name)
        for export in getattr(module, "__all__", ()):
            assert hasattr(module, export), f"{name}.{export}"

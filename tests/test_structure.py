"""The package's shape, read from the source with :mod:`ast` (nothing is imported).

* The module import graph has no cycles. Edges are the imports that run when a
  module is loaded: module level, class bodies, ``if``/``try`` blocks (``if
  TYPE_CHECKING:`` included: a type-only cycle is still two modules that each need
  the other), and the allowed lazy imports below, so laziness can never hide a cycle.
* No ``tokn_router`` import inside a function, except :data:`LAZY_IMPORTS`, each with
  its reason. An import inside a function is how a cycle gets hidden; the only
  other reason to write one is start-up cost.
* ``wire/`` is sans-I/O: none of its modules imports an I/O or web framework.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = "tokn_router"

# Frameworks that do I/O or own an event loop; wire/ must stay free of them.
IO_LIBRARIES = frozenset(
    {"trio", "httpx", "httpx2", "quart", "quart_trio", "hypercorn", "werkzeug", "anyio"}
)

_CLI_STARTUP = (
    "start-up cost: `tokn-router --help` and the light commands must not load trio, "
    "httpx, the importers or the daemon; each command imports what it runs"
)
_CA_STARTUP = "start-up cost: cryptography (~45 ms) is loaded only by the commands using the CA"
_PROXY_STARTUP = (
    "start-up cost: the MITM proxy's modules (and cryptography, for the CA) load only "
    "when the daemon starts the proxy"
)

# (importing module, imported module) -> why the import sits inside a function.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("tokn_router.cli.accounts", "tokn_router.accounts.providers.github_client"): _CLI_STARTUP,
    ("tokn_router.cli.accounts", "tokn_router.cli._net"): _CLI_STARTUP,
    ("tokn_router.cli.login", "tokn_router.accounts.importers"): _CLI_STARTUP,
    ("tokn_router.cli.login", "tokn_router.accounts.token_sources"): _CLI_STARTUP,
    ("tokn_router.cli.login", "tokn_router.accounts.providers.github_client"): _CLI_STARTUP,
    ("tokn_router.cli.login", "tokn_router.cli._net"): _CLI_STARTUP,
    ("tokn_router.cli.usage_cmd", "tokn_router.usage.queries"): _CLI_STARTUP,
    ("tokn_router.cli.usage_cmd", "tokn_router.usage.schema"): _CLI_STARTUP,
    ("tokn_router.cli.serve", "tokn_router.daemon"): _CLI_STARTUP,
    ("tokn_router.cli.status", "tokn_router.usage.queries"): _CLI_STARTUP,
    ("tokn_router.cli.status", "tokn_router.usage.schema"): _CLI_STARTUP,
    ("tokn_router.cli.doctor", "tokn_router.accounts.providers.github"): _CLI_STARTUP,
    ("tokn_router.cli.doctor", "tokn_router.accounts.providers.base"): _CLI_STARTUP,
    ("tokn_router.cli.doctor", "tokn_router.cli._net"): _CLI_STARTUP,
    ("tokn_router.cli.doctor", "tokn_router.edges.proxy.ca"): _CA_STARTUP,
    ("tokn_router.cli.keys_cmd", "tokn_router.clients.keys"): _CLI_STARTUP,
    ("tokn_router.cli.keys_cmd", "tokn_router.clients.limits"): _CLI_STARTUP,
    ("tokn_router.cli.keys_cmd", "tokn_router.clients.ledger"): _CLI_STARTUP,
    ("tokn_router.cli.keys_cmd", "tokn_router.usage.schema"): _CLI_STARTUP,
    ("tokn_router.cli.service_cmd", "tokn_router.service"): _CLI_STARTUP,
    ("tokn_router.cli.proxy_cmd", "tokn_router.daemon"): _CLI_STARTUP,
    ("tokn_router.cli.proxy_cmd", "tokn_router.edges.proxy.ca"): _CA_STARTUP,
    ("tokn_router.daemon", "tokn_router.edges.proxy.ca"): _PROXY_STARTUP,
    ("tokn_router.daemon", "tokn_router.edges.proxy.listener"): _PROXY_STARTUP,
    ("tokn_router.daemon", "tokn_router.edges.proxy.modes"): _PROXY_STARTUP,
}


@dataclass(frozen=True, slots=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a package when a name of its __init__ is imported)
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PKG).rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    # a module's own package is one level up; a package's __init__ is its own package
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _imports_of(module: str, source: str, *, is_package: bool = False) -> Iterator[Import]:
    tree = ast.parse(source)

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno, inner)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, is_package, child)
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    # `from pkg import module` depends on that module, not only on pkg
                    yield Import(module, sub if sub in MODULES else base, child.lineno, inner)
            else:
                yield from visit(child, inner)

    yield from visit(tree, False)


def _all_imports() -> list[Import]:
    return [
        imp
        for mod, path in MODULES.items()
        for imp in _imports_of(
            mod, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py"
        )
    ]


IMPORTS = _all_imports()


def _ours(target: str) -> bool:
    return target == PKG or target.startswith(PKG + ".")


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if _ours(imp.target) and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per group of modules that import each other."""
    return [_cycle_in(graph, set(comp)) for comp in _components(graph)]


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp: list[str] = []
                    while True:
                        n = stack.pop()
                        on_stack.discard(n)
                        comp.append(n)
                        if n == node:
                            break
                    if len(comp) > 1:
                        components.append(sorted(comp))
    return components


def _cycle_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for child in sorted(graph[node] & comp):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if child not in prev:
                    prev[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def _where(source: str, target: str) -> str:
    lines = sorted({i.line for i in IMPORTS if i.source == source and i.target == target})
    return f"{MODULES[source].relative_to(SRC)}:{','.join(map(str, lines))}"


# ---------------------------------------------------------------------------- tests


def test_the_scan_sees_the_package() -> None:
    # guards the tests below against passing on an empty or mis-read tree
    assert {"tokn_router.accounts.config", "tokn_router.wire.sse", "tokn_router.daemon"} <= set(
        MODULES
    )
    assert "tokn_router.accounts.schema" in _graph()["tokn_router.accounts.config"], (
        "expected config -> schema"
    )


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve() -> None:
    node = ast.parse("from .base import X").body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("tokn_router.accounts.providers.zai", False, node) == (
        "tokn_router.accounts.providers.base"
    )
    assert _resolve("tokn_router.accounts.providers", True, node) == (
        "tokn_router.accounts.providers.base"
    )


def test_no_import_cycles() -> None:
    graph = _graph()
    report = []
    for comp in _components(graph):
        members = set(comp)
        cycle = _cycle_in(graph, members)
        edges = [
            f"      {a} -> {b}  ({_where(a, b)})" for a in comp for b in sorted(graph[a] & members)
        ]
        report.append(" -> ".join(cycle) + "\n    imports inside this group:\n" + "\n".join(edges))
    assert not report, f"{len(report)} import cycle(s):\n  " + "\n  ".join(report)


def test_the_scanner_sees_every_kind_of_import() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import tokn_router.errors\n"
        "from tokn_router.accounts import schema, MISSING\n"
        "if TYPE_CHECKING:\n"
        "    from tokn_router.wire.sse import Usage\n"
        "try:\n"
        "    from .hosts import HostError\n"
        "except ImportError:\n"
        "    pass\n"
        "class C:\n"
        "    import tokn_router.redact\n"
        "    def m(self):\n"
        "        from tokn_router.usage import writer\n"
        "async def f():\n"
        "    g = lambda: __import__('x')\n"
        "    import tokn_router.daemon\n"
    )
    found = {(i.target, i.in_function) for i in _imports_of("tokn_router.wire.http1", source)}
    assert found == {
        ("typing", False),
        ("tokn_router.errors", False),
        ("tokn_router.accounts.schema", False),  # `from pkg import module` is that module
        ("tokn_router.accounts", False),  # a name that is not a module: the package
        ("tokn_router.wire.sse", False),  # type-only imports count
        ("tokn_router.wire.hosts", False),
        ("tokn_router.redact", False),  # a class body runs at import time
        ("tokn_router.usage.writer", True),
        ("tokn_router.daemon", True),
    }


def test_no_imports_inside_functions_except_the_allowed_ones() -> None:
    found = {(i.source, i.target) for i in IMPORTS if i.in_function and _ours(i.target)}
    unexpected = sorted(
        {
            f"{MODULES[i.source].relative_to(SRC)}:{i.line}: imports {i.target}"
            for i in IMPORTS
            if i.in_function and _ours(i.target) and (i.source, i.target) not in LAZY_IMPORTS
        }
    )
    assert not unexpected, (
        "imports inside functions (move them to the top; if one is there for start-up "
        "cost, add it to LAZY_IMPORTS with the reason):\n  " + "\n  ".join(unexpected)
    )
    stale = sorted(f"{s} -> {t}" for s, t in LAZY_IMPORTS if (s, t) not in found)
    assert not stale, "LAZY_IMPORTS entries with no such import left:\n  " + "\n  ".join(stale)


def test_lazy_imports_carry_a_reason() -> None:
    assert all(reason.strip() for reason in LAZY_IMPORTS.values())


def test_wire_does_no_io() -> None:
    bad = sorted(
        f"{MODULES[i.source].relative_to(SRC)}:{i.line}: imports {i.target}"
        for i in IMPORTS
        if i.source.startswith(f"{PKG}.wire") and i.target.split(".")[0] in IO_LIBRARIES
    )
    assert not bad, "wire/ is sans-I/O:\n  " + "\n  ".join(bad)

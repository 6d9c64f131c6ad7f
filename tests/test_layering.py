"""The package's layers, read from the imports of the installed modules.

The core (``pypimirror.*``) never depends on the HTTP handlers or the jobs: only the
composition root (``app``, ``lifecycle``, ``cli`` and the ``__main__`` that starts it) wires
them together. Handlers never reach the jobs, nor jobs the handlers. Checked on the whole
import graph, so a detour through another module counts too; every ``import`` statement
counts, whether at the top, inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Iterator
from pathlib import Path

ROOT = "pypimirror"
COMPOSITION_ROOT = {f"{ROOT}.app", f"{ROOT}.lifecycle", f"{ROOT}.cli", f"{ROOT}.__main__"}
HANDLERS = f"{ROOT}.handlers"
JOBS = f"{ROOT}.jobs"


def installed_modules() -> dict[str, Path]:
    """Every module of the installed packages, by name, with its source file.

    The three packages are walked one by one: an editable install maps ``handlers/`` and
    ``jobs/`` to their names, so they are not below ``pypimirror.__path__`` on disk.
    """
    found: dict[str, Path] = {}
    for package in (ROOT, HANDLERS, JOBS):
        found[package] = Path(str(importlib.import_module(package).__file__))
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            spec = importlib.util.find_spec(info.name)
            assert spec is not None and spec.origin is not None, info.name
            found[info.name] = Path(spec.origin)
    return found


def imported_names(module: str, source: Path) -> Iterator[str]:
    """The absolute names of every ``import`` in ``source`` (relative ones resolved)."""
    package = module if source.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``


def import_graph() -> dict[str, set[str]]:
    """Each installed module and the installed modules it imports directly."""
    modules = installed_modules()
    return {
        name: {imported for imported in imported_names(name, source) if imported in modules and imported != name}
        for name, source in modules.items()
    }


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module ``start`` imports, directly or not, with one chain of imports leading there."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in sorted(graph[current]):
            if imported not in chains:
                chains[imported] = [*chains[current], imported]
                todo.append(imported)
    del chains[start]
    return chains


def is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(graph: dict[str, set[str]], modules: list[str], forbidden: list[str]) -> list[str]:
    found = []
    for module in modules:
        for target, chain in reachable(graph, module).items():
            if any(is_in(target, package) for package in forbidden):
                found.append(" -> ".join(chain))
    return found


GRAPH = import_graph()
CORE = sorted(
    name for name in GRAPH if name not in COMPOSITION_ROOT and not is_in(name, HANDLERS) and not is_in(name, JOBS)
)


def test_the_walk_sees_the_installed_layers_and_the_wiring_of_the_composition_root() -> None:
    assert {f"{ROOT}.config", f"{HANDLERS}.files", f"{JOBS}.scheduler"} <= GRAPH.keys()
    assert f"{HANDLERS}.files" in GRAPH[f"{ROOT}.app"]
    assert f"{JOBS}.scheduler" in GRAPH[f"{ROOT}.lifecycle"]
    assert violations(GRAPH, [f"{ROOT}.cli"], [HANDLERS, JOBS])  # the root may; the check would see it


def test_core_modules_never_import_handlers_or_jobs() -> None:
    assert len(CORE) > 20
    assert violations(GRAPH, CORE, [HANDLERS, JOBS]) == []


def test_handlers_never_import_jobs() -> None:
    handlers = [name for name in GRAPH if is_in(name, HANDLERS)]
    assert violations(GRAPH, handlers, [JOBS]) == []


def test_jobs_never_import_handlers() -> None:
    jobs = [name for name in GRAPH if is_in(name, JOBS)]
    assert violations(GRAPH, jobs, [HANDLERS]) == []

"""The package's import structure: dependencies point one way, with no cycles.

Function-level imports count too: a cycle closed inside a function is still a cycle in the
design, and it is what makes a module impossible to understand or reuse alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mmeb

ROOT = Path(mmeb.__file__).parent
PACKAGE_DIRS = {"mmeb": ROOT, "mmeb.models": ROOT.parent / "models",
                "mmeb.leaderboard": ROOT.parent / "leaderboard"}


def module_files() -> dict[str, Path]:
    files = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join((package, *parts))] = path
    return files


def imports_of(name: str, path: Path, known: set[str], *, top_level: bool = False) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (or at module level only)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known}
    found.discard(name)
    # A package's __init__ is what ``import pkg.sub`` runs first; that is not a dependency.
    return {m for m in found if not name.startswith(m + ".")}


def import_graph(*, top_level: bool = False) -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files), top_level=top_level)
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_between_project_modules() -> None:
    graph = import_graph()
    assert "mmeb.tasks" in graph
    assert "mmeb.sample.spec" in graph["mmeb.tasks"]
    assert find_cycle(graph) is None


def test_the_core_imports_adapters_and_the_leaderboard_only_on_demand() -> None:
    # The CLI may import the leaderboard inside a command; nothing in the core does so when
    # it is imported, which keeps ``import mmeb`` light and the layers one-way.
    for name, deps in import_graph(top_level=True).items():
        if name.startswith("mmeb.") and not name.startswith(("mmeb.models", "mmeb.leaderboard")):
            assert not {d for d in deps if d.startswith(("mmeb.models", "mmeb.leaderboard"))}, name

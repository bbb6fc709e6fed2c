"""The package's modules import one another without cycles.

Every module is parsed (not imported), and every ``import`` statement counts,
including those inside functions and ``TYPE_CHECKING`` blocks: a lazy import
still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "neuralengine"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it names in an import (``from a.b import c`` names ``a.b.c`` when that
    is a module, else ``a.b``). The parent packages a submodule import runs first are not counted: a package's
    ``__init__`` may import its own submodules."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}

    def resolve(name: str) -> str | None:
        # The longest prefix of ``name`` that is one of our modules.
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # ``from pkg import sub`` may name a submodule.
                targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
            for target in targets:
                found = resolve(target) if target.startswith("neuralengine") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "neuralengine.weights" in graph["neuralengine.backends"]
    # cli imports its subcommands by name only (importlib), so no edge there; analyse imports engine in main().
    assert "neuralengine.engine" in graph["neuralengine.analyse"]


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_run_one_way() -> None:
    graph = import_graph()

    def reaches(src: str, dst: str) -> bool:
        seen, todo = set(), [src]
        while todo:
            node = todo.pop()
            if node == dst:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph[node])
        return False

    for low, high in [("neuralengine.backends", "neuralengine.deepmind"),
                      ("neuralengine.backends", "neuralengine.export"),
                      ("neuralengine.backends", "neuralengine.engine"),
                      ("neuralengine.weights", "neuralengine.backends"),
                      ("neuralengine.paths", "neuralengine.weights")]:
        assert not reaches(low, high), f"{low} must not import {high}"


def test_playing_path_reaches_no_training_code() -> None:
    """Nothing the UCI engine runs (``uci``, ``engine``, ``backends`` and what they import, lazily or not)
    names the trainer, whichever of their modules it starts from."""
    graph = import_graph()
    playing = [m for m in graph if m.split(".")[:2] in (["neuralengine", "uci"], ["neuralengine", "engine"],
                                                         ["neuralengine", "backends"])]
    assert "neuralengine.uci" in playing and "neuralengine.engine" in playing
    seen, todo = set(), list(playing)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    training = sorted(m for m in seen if m == "neuralengine.train" or m.startswith("neuralengine.train."))
    assert not training, f"the playing path imports training code: {training}"

"""The package's import graph: no cycle among module-level imports, none through the imports
inside functions either (but for known ones in files being rewritten), and the bottom layers
import nothing above them.

The graph is read from the source (``ast``), nothing is imported. A module-level import is one
that runs when the module is imported: at the top level, in a top-level ``try`` / ``if`` /
``with`` block or a class body. ``if TYPE_CHECKING:`` blocks (never run) and
``if __name__ == "__main__":`` blocks (run only when the file is the script, a module of its own
then) hold no import of the graph. ``import a.b`` is an edge to ``a.b``; ``from a import b`` an
edge to ``a.b`` when that is a module, else to ``a`` (its ``__init__``); relative imports are
resolved. Imports inside functions run later, when the modules they name are complete: they are
listed (``pytest -s``), and a cycle they close is one hidden from Python, not one it can't load.

    python -m pytest -q -s tests/test_imports.py     # the cycles, then the function-level list
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = "iqa_lightning"

#: Function-level imports allowed to close a cycle: none (the drivers build through
#: iqa_lightning.build, which imports no driver). An entry here must name its edge and why.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()

#: Modules at the bottom: every layer imports them, they import nothing of the package.
BOTTOM = ("iqa_lightning.errors", "iqa_lightning.preprocessing")


# ---------------------------------------------------------------------------------- the graph
def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root`` (``root / package``) by its dotted name."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_main_guard(test: ast.expr) -> bool:
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _imports(statements, module_level: bool):
    """``(import node, module level?)`` of every import among ``statements``, at any depth."""
    for node in statements:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, module_level
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _imports(ast.iter_child_nodes(node), False)
        elif isinstance(node, ast.If) and module_level:
            if not (_is_type_checking(node.test) or _is_main_guard(node.test)):
                yield from _imports(node.body, module_level)
            yield from _imports(node.orelse, module_level)
        else:  # try / with / for / class bodies run at import time; expressions hold no import
            yield from _imports(ast.iter_child_nodes(node), module_level)


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict) -> list[str]:
    """The package's modules an import statement of ``module`` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:
            out.append(sub)
        elif base in modules:
            out.append(base)
    return out


def import_graph(root: Path = REPO, package: str = PACKAGE):
    """``(module-level edges {module: {module}}, function-level imports [(module, line,
    target)])`` of the package's modules."""
    modules = module_names(root, package)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    deferred = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, module_level in _imports(tree.body, True):
            for target in _targets(node, name, is_package, modules):
                if target == name:
                    continue
                if module_level:
                    edges[name].add(target)
                else:
                    deferred.append((name, node.lineno, target))
    return edges, sorted(set(deferred))


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """The components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _path(edges, start: str, goal: str, within: set[str]) -> list[str]:
    """A shortest path ``start -> ... -> goal`` inside ``within``."""
    previous = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for child in sorted(edges[node] & within):
            if child not in previous:
                previous[child] = node
                queue.append(child)
    path = [goal]
    while previous[path[-1]] is not None:
        path.append(previous[path[-1]])
    return path[::-1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """For every edge inside a component, a shortest cycle through it (as ``[a, b, ..., a]``),
    each cycle once."""
    found = {}
    for component in strongly_connected(edges):
        members = set(component)
        for source in component:
            for target in sorted(edges[source] & members):
                loop = [source, *_path(edges, target, source, members)]
                ring = loop[:-1]
                turn = ring.index(min(ring))
                ring = ring[turn:] + ring[:turn]
                found[tuple(ring)] = [*ring, ring[0]]
    return [found[key] for key in sorted(found)]


def _show(loops: list[list[str]]) -> str:
    return "\n".join("  " + " -> ".join(loop) for loop in loops)


# ---------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def graph():
    return import_graph()


def _with_function_level(graph) -> dict[str, set[str]]:
    edges, deferred = graph
    out = {module: set(targets) for module, targets in edges.items()}
    for module, _, target in deferred:
        out[module].add(target)
    return out


def test_module_level_imports_have_no_cycle(graph):
    edges, _ = graph
    loops = cycles(edges)
    print(f"module-level import cycles: {len(loops)}")
    print(_show(loops))
    assert not loops, "module-level import cycles:\n" + _show(loops)


def test_no_cycle_through_function_level_imports(graph):
    every = _with_function_level(graph)
    stale = sorted(edge for edge in KNOWN_CYCLE_EDGES if edge[1] not in every[edge[0]])
    if stale:
        print(f"known cycle edges that are gone (delete them from KNOWN_CYCLE_EDGES): {stale}")
    checked = {m: {t for t in ts if (m, t) not in KNOWN_CYCLE_EDGES} for m, ts in every.items()}
    loops = cycles(checked)
    print(f"cycles through function-level imports (known edges left out): {len(loops)}")
    print(_show(loops))
    assert not loops, "import cycles (with the function-level imports):\n" + _show(loops)


def test_no_cycle_at_all(graph):
    loops = cycles(_with_function_level(graph))
    print(_show(loops))
    assert not loops, "import cycles (with the function-level imports):\n" + _show(loops)


def test_the_bottom_modules_import_nothing_of_the_package(graph):
    edges, deferred = graph
    for module in BOTTOM:
        assert not edges[module], f"{module} imports {sorted(edges[module])}"
        assert not [d for d in deferred if d[0] == module], f"{module} imports in a function"


def test_models_do_not_import_the_data_layer(graph):
    every = _with_function_level(graph)
    models, data = f"{PACKAGE}.models", f"{PACKAGE}.data"
    wrong = [(m, t) for m in sorted(every) if m.startswith(models) for t in sorted(every[m])]
    wrong = [(m, t) for m, t in wrong if t == data or t.startswith(data + ".")]
    assert not wrong, f"models importing the data layer: {wrong}"


def test_function_level_imports_are_listed(graph):
    """Information, not a check: the imports of the package that wait for a call (a heavy or
    optional dependency, a driver's lazy start-up, or a cycle hidden)."""
    _, deferred = graph
    print(f"function-level imports of {PACKAGE} modules: {len(deferred)}")
    for module, line, target in deferred:
        print(f"  {module}:{line} -> {target}")
    assert deferred  # the scanner sees them (the list itself is not checked)


# ------------------------------------------------------------------------ the reader, itself
def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_reader_resolves_imports_as_python_does(tmp_path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import thing\n",
            "pkg/a.py": (
                "from typing import TYPE_CHECKING\n"
                "from . import b\n"
                "try:\n    import pkg.sub.c\nexcept ImportError:\n    pass\n"
                "if TYPE_CHECKING:\n    from pkg.d import D\n"
                "if __name__ == '__main__':\n    from pkg import d\n"
                "def f():\n    from .sub import c\n"
                "class K:\n    from ..outside import nothing\n"
            ),
            "pkg/b.py": "from pkg.sub import name_in_init\n",
            "pkg/d.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from .. import a\nfrom ..b import x\n",
        },
    )
    edges, deferred = import_graph(tmp_path, "pkg")
    assert edges["pkg"] == {"pkg.a"}
    assert edges["pkg.a"] == {"pkg.b", "pkg.sub.c"}  # not d: TYPE_CHECKING, __main__ only
    assert edges["pkg.b"] == {"pkg.sub"}
    assert edges["pkg.sub.c"] == {"pkg.a", "pkg.b"}
    assert deferred == [("pkg.a", 12, "pkg.sub.c")]  # not __main__'s import of d
    assert cycles(edges) == [["pkg.a", "pkg.sub.c", "pkg.a"]]


def test_cycles_names_one_loop_per_edge_of_a_component():
    edges = {"a": {"b"}, "b": {"a", "c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    assert strongly_connected(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_a_run_imports_no_backbone_family_at_module_level(graph):
    """The drivers, the build layer and the module reach no backbone family through
    module-level imports: the package names load on first use (models/backbones/__init__.py),
    so a LLaVA run never imports mPLUG-Owl2's modelling code. (tests/test_startup.py checks the
    same in a fresh process.)"""
    edges, _ = graph
    seen, todo = set(), ["iqa_lightning.train", "iqa_lightning.build", "iqa_lightning.module"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += sorted(edges.get(module, ()))
    families = [
        m
        for m in seen
        if m.startswith("iqa_lightning.models.backbones.")
        and m.rsplit(".", 2)[-2:][0] in ("mplug_owl2", "bunny")
        or m.endswith(".bunny")
    ]
    assert not families, families

"""The layering the README promises, checked on the source: cluster/ is pure math (no Ray, no
pyarrow, nothing from actors/ or launch/), and actors/ takes nothing from launch/."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"cluster": ("ray", "pyarrow", "actors", "launch"), "actors": ("launch",)}


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement of ``path`` names, at any depth (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_allows(package):
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, bad


def test_the_check_sees_lazy_imports(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    import ray.util\n    from pyarrow import ipc\n")
    assert imported_modules(p) == {"ray.util", "pyarrow"}


# launch/'s rooms, in one direction: data and the file leaf below the run, the run below the tools,
# the command line on top (a module may import its own room and the rooms below it).
ROOMS = {"launch.files": ("launch.data", "launch.run", "launch.tools", "launch.cli"),
         "launch.data": ("launch.run", "launch.tools", "launch.cli"),
         "launch.run": ("launch.tools", "launch.cli"),
         "launch.tools": ("launch.cli",)}


def module_graph() -> dict[str, set[str]]:
    """Every project module and the project modules its import statements name (lazy ones included),
    relative imports resolved; ``from pkg import name`` names ``pkg.name`` where that is a module."""
    mods: dict[str, Path] = {}
    for package in ("cluster", "actors", "launch"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        here = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module if node.level == 0 else ".".join(
                    here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                if name and name != m:
                    graph[m].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles():
    """Not even through a function-level import: moving any import to the top never fails."""
    assert cycles(module_graph()) == []


def test_the_cycle_check_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_launch_rooms_import_downwards_only():
    graph = module_graph()
    bad = [f"{m} imports {t}" for m, targets in graph.items() for room, above in ROOMS.items()
           if m == room or m.startswith(room + ".") for t in targets if t.startswith(above)]
    assert not bad, bad

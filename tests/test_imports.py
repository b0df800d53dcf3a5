"""The shape of the code: the product's modules import each other without a cycle, and none of
them imports the benchmark harness (bench/ imports the product, never the other way round).

Imports are read from the source with ast, module-level and function-level alike (an import
inside a function is still a dependency; only `if TYPE_CHECKING:` imports are left out of the
cycle check, since they never run). The CLI's discovery of `bench.cli` by name
(importlib.import_module) is not an import statement and is allowed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
PRODUCT = ("otbridge", "connectors", "simulators", "jobs")
HARNESS = ("bench",)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a product module, or the first name of any other)
    line: int
    runtime: bool  # False: under `if TYPE_CHECKING:`


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    guarded = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(dotted: str) -> str:
        # the longest known module the dotted name starts with, else its first part
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                return ".".join(parts[:i])
        return parts[0]

    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [resolve(alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod
            targets = [resolve(f"{base}.{alias.name}") for alias in node.names]
        for target in targets:
            if target != name:
                yield Import(name, target, node.lineno, node.lineno not in guarded)


def graph(root: Path, packages: tuple[str, ...]) -> list[Import]:
    known = modules(root, packages)
    return [edge for name, path in known.items() for edge in imports(name, path, known)]


def cycles(edges: list[Import]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each sorted."""
    succ: dict[str, set[str]] = {}
    for e in edges:
        succ.setdefault(e.source, set()).add(e.target)
        succ.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return found


def harness_imports(edges: list[Import]) -> list[str]:
    return [f"{e.source} (line {e.line}) imports {e.target}" for e in edges
            if e.target.split(".")[0] in HARNESS]


def test_product_has_no_import_cycle() -> None:
    edges = [e for e in graph(ROOT, PRODUCT) if e.runtime]
    assert len({e.source for e in edges}) > 50  # the walk found the product
    found = cycles(edges)
    detail = [f"{e.source} (line {e.line}) imports {e.target}" for cycle in found
              for e in edges if e.source in cycle and e.target in cycle]
    assert found == [], "\n".join(detail)


def test_product_never_imports_the_harness() -> None:
    assert harness_imports(graph(ROOT, PRODUCT)) == []


def test_the_checks_find_a_cycle_and_a_harness_import(tmp_path: Path) -> None:
    """The two checks above on a made-up tree that breaks both rules, so they can fail."""
    files = {
        "app/__init__.py": "",
        "app/a.py": "from app import b\n",
        "app/b.py": "def f():\n    from .c import g\n",
        "app/c.py": "import app.a\nfrom typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from app import d\n",
        "app/d.py": "from app.c import g\n",
        "app/e.py": "import json\n\ndef run():\n    import bench.stages\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges = graph(tmp_path, ("app",))
    assert cycles([e for e in edges if e.runtime]) == [["app.a", "app.b", "app.c"]]
    assert cycles(edges) == [["app.a", "app.b", "app.c", "app.d"]]  # counting TYPE_CHECKING
    assert harness_imports(edges) == ["app.e (line 4) imports bench"]

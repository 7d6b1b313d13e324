"""The import graph between Ensemble's top-level packages, and its cycles.

    python -m ensemble.tools.deps [--root DIR]

Prints one line per package (`server -> batch, config, ...`) and exits 1 when packages import each
other in a circle, naming the modules that make each edge. Top-level modules (`gateway.py`) count
as packages of one module. An import inside a function counts: hiding an edge there does not
remove it. An import under `if TYPE_CHECKING:` does not: it never runs, and it lets a lower layer
name the type of an object a higher layer hands it.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

Graph = dict[str, dict[str, set[str]]]  # package -> package it imports -> modules that do


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """(dotted module name, is a package's __init__) of a file below `root`'s parent."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement loads; `from x import y` names `x.y` (y may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join([*base, node.module] if node.module else base)
    else:
        origin = node.module or ""
    return [f"{origin}.{alias.name}" for alias in node.names]


def _children(root: Path) -> set[str]:
    """The modules and packages directly in `root` (`from ensemble import __version__` names neither)."""
    names = {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    names |= {p.name.split(".")[0] for p in root.iterdir() if p.suffix in (".py", ".so", ".pyd")}
    return names - {"__init__"}


def import_graph(root: Path) -> Graph:
    """Edges between the children of the package at `root` (a directory with `__init__.py`)."""
    top = root.name
    children = _children(root)
    graph: Graph = defaultdict(lambda: defaultdict(set))
    for path in sorted(root.rglob("*.py")):
        module, is_package = _module_name(path, root)
        parts = module.split(".")
        if len(parts) < 2:
            continue  # the root package's own __init__ belongs to no child
        source = parts[1]
        graph[source]  # a package that imports nothing is still a node
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skipped:
                continue
            for target in _imported(node, module, is_package):
                names = target.split(".")
                if len(names) >= 2 and names[0] == top and names[1] != source and names[1] in children:
                    graph[source][names[1]].add(module)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensemble.tools.deps", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1], help="package directory"
    )
    args = parser.parse_args(argv)
    graph = import_graph(args.root)
    for package in sorted(graph):
        print(f"{package} -> {', '.join(sorted(graph[package])) or '(nothing)'}")
    found = cycles(graph)
    for component in found:
        members = set(component)
        print(f"\ncycle between {', '.join(component)}:", file=sys.stderr)
        for source in component:
            for target in sorted(set(graph[source]) & members):
                print(f"  {source} -> {target}: {', '.join(sorted(graph[source][target]))}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

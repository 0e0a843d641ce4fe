"""The layer contract of `mu2hub/` and the import graph the guard tests check it against.

A module may import its own layer and the layers below it, never one above; the graph, counting imports inside
functions too, has no cycle. The only exceptions are the lazy delegations listed in `DELEGATIONS`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mu2hub"

# Lowest first: a module imports only modules of its own layer or of a lower one.
LAYERS: list[tuple[str, ...]] = [
    ("mu2hub.errors", "mu2hub.constants", "mu2hub.utils"),
    ("mu2hub.format",),
    ("mu2hub.hub",),
    ("mu2hub.data",),
    ("mu2hub.model",),
    ("mu2hub.convert",),
    ("mu2hub.inference", "mu2hub.serving"),  # using a published system
    ("mu2hub.publishing",),  # producing one: export, card, figures
    ("mu2hub.train",),
    ("mu2hub.evolution",),
    ("mu2hub.contrib",),
    # the front: the package itself (its names resolve lazily, by string) and what users and tools run
    ("mu2hub", "mu2hub.api", "mu2hub.cli", "mu2hub.space", "mu2hub.testing"),
]

# Upward imports allowed, each inside one function: `TaskModel.finetune` / `TaskModel.push_to_hub` hand the
# loaded task to training (one edge, two methods).
DELEGATIONS: set[tuple[str, str]] = {("mu2hub.inference.task", "mu2hub.train.finetune")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module.startswith(prefix + ".") and prefix != "mu2hub"  # the bare package holds only itself
            if (module == prefix or inside) and prefix.count(".") > depth:
                best, depth = i, prefix.count(".")
    if best < 0:
        raise AssertionError(f"{module} is in no layer of tests/architecture/layers.py")
    return best


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(module: str, path: Path, known: set[str]) -> dict[str, int]:
    """mu2hub modules `module` imports (module level and inside functions) -> the line of the first import."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            subs = [f"{source}.{a.name}" for a in node.names]
            targets = [s for s in subs if s in known] or [source]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("mu2hub") and target != module:
                found.setdefault(target, node.lineno)
    return found


def graph() -> dict[str, dict[str, int]]:
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out

"""The package layering: every module imports only from lower layers, and no two modules import each other.

The source is read with ``ast`` (nothing is imported), so the test takes well under a second. Every import counts,
at module level, in a function or under ``if TYPE_CHECKING:``: a deferred import is still a dependency, and one that
closes a cycle only hides it. A module importing its own ancestor package is no cycle (the package is always loaded
first). The layer table is also in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "cliplab"

# Lowest first. A package may import from any strictly lower layer, never from its own layer or a higher one.
# "cliplab" is the root package (``__version__`` and lazy re-exports, which import nothing when it loads).
LAYERS: list[set[str]] = [
    {"cliplab", "_io", "_validation", "imaging", "extension", "progress", "recipes", "optimization"},  # leaves
    {"data"},  # datasets, specs, the one loader
    {"models"},  # the Model protocol and model sources (encode through data's loader)
    {"features", "losses", "metrics", "towers", "interop"},  # cached embeddings; losses; metrics; towers; ONNX
    {"zeroshot", "ood", "explain"},  # zero-shot weights and evaluation; OOD scores; attribution
    {"train", "adapt", "index", "probes", "estimate", "anomaly"},  # trainer; adapters; index; probes; estimators;
    # anomaly detectors
    {"finetune", "curate", "assess", "builtin_models"},  # fine-tuning; curation; assessments; built-in recipes
    {"bench", "serve"},  # the benchmark and its report; the web UI
    {"cli"},  # commands
    {"__main__"},  # ``python -m cliplab``
]
LAYER_OF = {package: i for i, layer in enumerate(LAYERS) for package in layer}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (a package's ``__init__`` is the package's name)
    line: int
    kind: str  # "module" (runs when the importer loads), "function" (deferred) or "type-checking"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _blocks(node: ast.AST) -> list[ast.AST]:
    """The statements nested in ``node`` (imports are statements, so expressions need no walk)."""
    return [c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt | ast.excepthandler | ast.match_case)]


def _walk(nodes: list[ast.stmt] | list[ast.AST], kind: str):
    """Yield ``(import node, kind)`` for every import in or under ``nodes``."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, kind
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(_blocks(node), "function")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, "type-checking" if kind == "module" else kind)
            yield from _walk(node.orelse, kind)
        else:
            yield from _walk(_blocks(node), kind)


def _imports(name: str, path: Path) -> list[Import]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, kind in _walk(ast.parse(path.read_text(), str(path)).body, "module"):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: ``from ..x import y`` in package a.b.c -> a.b.x
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import sub`` imports the submodule pkg.sub; ``from pkg import name`` only pkg
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        for target in dict.fromkeys(targets):
            if target == "cliplab" or target.startswith("cliplab."):
                while target not in MODULES:  # ``import cliplab.x.y`` of a name that is not a module
                    target = target.rpartition(".")[0]
                found.append(Import(name, target, node.lineno, kind))
    return found


IMPORTS = [imp for name, path in sorted(MODULES.items()) for imp in _imports(name, path)]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _where(imp: Import) -> str:
    return f"{MODULES[imp.source].relative_to(ROOT.parent.parent)}:{imp.line}"


def _how(imp: Import) -> str:
    return {"module": "", "function": " (in a function)", "type-checking": " (under TYPE_CHECKING)"}[imp.kind]


def test_every_package_has_a_layer():
    missing = sorted({_package(m) for m in MODULES} - set(LAYER_OF))
    assert not missing, f"packages missing from LAYERS in tests/test_layers.py (and docs/architecture.md): {missing}"


def test_imports_go_only_downwards():
    violations = []
    for imp in IMPORTS:
        src, dst = _package(imp.source), _package(imp.target)
        if src == dst or src not in LAYER_OF or dst not in LAYER_OF:
            continue
        if LAYER_OF[dst] >= LAYER_OF[src]:
            how = "same layer as" if LAYER_OF[dst] == LAYER_OF[src] else "higher layer than"
            violations.append(
                f"{_where(imp)}: {imp.source} imports {imp.target}{_how(imp)}: "
                f"{dst} (layer {LAYER_OF[dst]}) is a {how} {src} (layer {LAYER_OF[src]})"
            )
    assert not violations, f"{len(violations)} import(s) against the layering:\n" + "\n".join(violations)


def _cycles(graph: dict[str, set[str]]) -> list[tuple[set[str], list[str]]]:
    """The strongly connected components of more than one module (Tarjan), each with one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~200)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(component, _cycle_through(graph, component)) for component in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One closed path inside a strongly connected component, from its first module back to it (BFS)."""
    start = min(component)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, set()) & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], Import] = {}
    for imp in IMPORTS:
        if imp.target != imp.source and not imp.source.startswith(imp.target + "."):
            graph.setdefault(imp.source, set()).add(imp.target)
            lines.setdefault((imp.source, imp.target), imp)
    messages = []
    for component, cycle in _cycles(graph):
        steps = [f"{_where(lines[a, b])} imports {b}{_how(lines[a, b])}" for a, b in zip(cycle, cycle[1:])]
        messages.append(
            f"among {', '.join(sorted(component))}: " + " -> ".join(cycle) + "\n    " + "\n    ".join(steps)
        )
    assert not messages, f"{len(messages)} import cycle(s) among modules:\n" + "\n".join(messages)


def test_the_walker_sees_relative_function_level_and_type_checking_imports(tmp_path):
    """The resolver on a synthetic package: relative imports resolve, function-level ones are not module-level."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import base\n"
        "from ..models import base as mb\n"
        "if TYPE_CHECKING:\n"
        "    from cliplab.train import trainer\n"
        "def f():\n"
        "    from cliplab.zeroshot.weights import zeroshot_weights\n"
    )
    path = tmp_path / "x.py"
    path.write_text(source)
    found = {(i.target, i.kind) for i in _imports("cliplab.data.x", path)}
    assert found == {
        ("cliplab.data.base", "module"),
        ("cliplab.models.base", "module"),
        ("cliplab.train.trainer", "type-checking"),
        ("cliplab.zeroshot.weights", "function"),
    }
    graph = {"a": {"b", "d"}, "b": {"c"}, "c": {"a"}, "d": {"e"}}
    assert _cycles(graph) == [({"a", "b", "c"}, ["a", "b", "c", "a"])]

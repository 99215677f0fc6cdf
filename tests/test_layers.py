"""The package's layers point one way and its modules import each other without a cycle.

Layers, bottom to top (ARCHITECTURE.md): the model layer (models, architecture, ramp, flops,
supernet, and what they are built and trained with: config, data, train, checkpoint, ...) < search
< what uses a search's results (retrain, transfer, report, export) < the command line (commands,
cli). A module may import its own layer or one below. Every import counts, those inside functions
(lazy) included: a lazy import is still a dependency, only a later one. Only imports under
`if TYPE_CHECKING:` do not: they name types for annotations and never run.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rampsearch"
MODEL, SEARCH, OUTCOME, INTERFACE = range(4)
# The first dotted prefix that matches decides; a module matching none is in the model layer.
LAYERS = {"rampsearch.commands": INTERFACE, "rampsearch.cli": INTERFACE,
          "rampsearch.retrain": OUTCOME, "rampsearch.transfer": OUTCOME, "rampsearch.report": OUTCOME,
          "rampsearch.export": OUTCOME, "rampsearch.search": SEARCH}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, from its __init__.py)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _known(name: str) -> str:
    """The module `name` names, or the closest package or module above it that exists."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(name: str) -> set[str]:
    """The package's modules that module `name` imports, anywhere in its body."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree, found = ast.parse(path.read_text()), set()
    annotations_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                        and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                        for outer in node.body for inner in ast.walk(outer)}
    for node in ast.walk(tree):
        if id(node) in annotations_only:
            continue
        if isinstance(node, ast.Import):
            found |= {_known(a.name) for a in node.names if a.name.startswith("rampsearch")}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            if module.startswith("rampsearch"):
                # `from package import module` imports that module; `from module import name`, the module
                found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else _known(module)
                          for a in node.names}
    return found - {name}


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(name: str) -> int:
    return next((layer for prefix, layer in LAYERS.items() if name == prefix or name.startswith(prefix + ".")),
                MODEL)


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets
                    if _layer(target) > _layer(name))
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def _cycle() -> list[str] | None:
    """One import cycle of GRAPH, as the modules along it (the first repeated at the end), or None."""
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for target in sorted(GRAPH[name]):
            cycle = visit(target, path + [name])
            if cycle:
                return cycle
        done.add(name)
        return None

    return next((c for c in (visit(name, []) for name in sorted(GRAPH)) if c), None)


def test_the_import_graph_has_no_cycle():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_sees_lazy_imports():
    # supernet.py imports the models inside functions only: the graph must still hold that edge
    assert "rampsearch.models" in GRAPH["rampsearch.supernet"]


def test_the_report_reads_a_retraining_without_importing_it():
    # the report reads a retraining's files; what both name (e.g. STOPPING) lives below them
    report = [name for name in GRAPH if name == "rampsearch.report" or name.startswith("rampsearch.report.")]
    assert not [name for name in report if "rampsearch.retrain" in GRAPH[name]]

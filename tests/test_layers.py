"""The package's layers point one way and its modules import each other without a cycle.

Layers, bottom to top (ARCHITECTURE.md): the model layer (models, architecture, ramp, flops,
supernet, and what they are built and trained with: config, data, train, checkpoint, ...) < search
< what uses a search's results (retrain, transfer, report, export) < the command line (commands,
cli). A module may import its own layer or one below. Every import counts: those inside functions
(lazy: still a dependency, only a later one), those under `if TYPE_CHECKING:` (a type checker
follows them), and modules loaded by name (`import_module`): a string that names a module of the
package (the backends in rampsearch.search.BACKENDS, the methods in rampsearch.search.methods.BUILT_IN),
or an f-string that starts with a package's name (the CLI's f"rampsearch.commands.{name}"), which
counts as every module of that package.
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


def _loaded_by_name(node: ast.AST) -> set[str]:
    """The package's modules a string (or f-string) names, as `import_module` would load them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
        return {node.value}
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        prefix = str(node.values[0].value)
        if prefix.endswith(".") and prefix[:-1] in MODULES:
            return {module for module in MODULES if module.startswith(prefix)}
    return set()


def _imports(name: str) -> set[str]:
    """The package's modules that module `name` imports or loads by name, anywhere in its body."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree, found = ast.parse(path.read_text()), set()
    for node in ast.walk(tree):
        found |= _loaded_by_name(node)
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


def test_the_graph_sees_modules_loaded_by_name():
    # the method registry loads each method's module by its name, the search its backends, the CLI its commands
    assert {"rampsearch.search.methods.proxy", "rampsearch.search.methods.one_shot"} <= GRAPH["rampsearch.search.methods"]
    assert "rampsearch.search.ray_backend" in GRAPH["rampsearch.search"]
    assert "rampsearch.commands.search" in GRAPH["rampsearch.cli"]


def test_a_search_space_is_parsed_without_knowing_the_methods():
    # every method reads spaces, so the space names its method and the registry checks it (search.load)
    assert not [target for target in GRAPH["rampsearch.search.space"] if target.startswith("rampsearch.search.methods")]


def test_the_report_reads_a_retraining_without_importing_it():
    # the report reads a retraining's files; what both name (e.g. STOPPING) lives below them
    report = [name for name in GRAPH if name == "rampsearch.report" or name.startswith("rampsearch.report.")]
    assert not [name for name in report if "rampsearch.retrain" in GRAPH[name]]

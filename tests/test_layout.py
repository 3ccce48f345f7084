"""The package layout holds: no import cycles (not even type-only ones) and layers that point one way.

Every module of ``pipeline/`` is parsed with ``ast`` (imports anywhere in a file count: inside
functions and ``if TYPE_CHECKING:`` blocks too) and the imports between its modules are checked:

* no cycles;
* layers point one way: core (config, errors, io, hashing, console) <- text, shards, train <- mlm,
  finetune, evaluate <- stages <- cli; within a layer only the edges in ``SAME_LAYER`` are allowed;
* another part imports a subpackage through its ``__init__`` (``from pipeline.shards import
  ShardReader``), never one of its modules;
* a module imports its own subpackage's siblings by module, never through the subpackage's
  ``__init__`` (which imports it: half-initialised at that point).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

CORE = {"__init__", "config", "errors", "io", "hashing", "console"}
LAYER = {
    "core": 0,
    "text": 1,
    "shards": 1,
    "train": 1,
    "mlm": 2,
    "finetune": 2,
    "evaluate": 2,
    "stages": 3,
    "cli": 4,
}
# same-layer imports that are allowed (importer, imported): shards read corpora and tokenizers;
# fine-tuning builds the same encoder architectures as pretraining; evaluation reads fine-tuning
# data and scores it with fine-tuning's metrics
SAME_LAYER = {("shards", "text"), ("finetune", "mlm"), ("evaluate", "finetune")}


def module_files(package: Path) -> dict[str, Path]:
    """``{"pipeline.train.loop": path, "pipeline.train": path of its __init__, ...}``."""
    root = package.parent
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports (``from a import b`` -> ``a.b`` if a module)."""
    top = module.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return {name for name in found if name in known and name.split(".")[0] == top and name != module}


def import_graph(package: Path) -> dict[str, set[str]]:
    files = module_files(package)
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def part_of(module: str) -> str:
    """``pipeline.train.loop`` -> ``train``; core modules -> ``core``; cli and __main__ -> ``cli``."""
    parts = module.split(".")[1:] or ["__init__"]
    if parts[0] in CORE:
        return "core"
    if parts[0] in ("cli", "__main__"):
        return "cli"
    return parts[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        source = part_of(module)
        for target in sorted(targets):
            dest = part_of(target)
            if dest == source:
                subpackage = ".".join(module.split(".")[:2])
                if source not in ("core", "cli") and target == subpackage:
                    problems.append(f"{module} imports its own subpackage {target} (import the module)")
                continue
            if LAYER[dest] > LAYER[source] or (
                LAYER[dest] == LAYER[source] and (source, dest) not in SAME_LAYER
            ):
                problems.append(f"{module} ({source}) imports {target} ({dest}): against the layer order")
            elif dest != "core" and target != ".".join(target.split(".")[:2]):
                problems.append(
                    f"{module} imports {target}: import it from {'.'.join(target.split('.')[:2])}"
                )
    return problems


def test_every_layer_is_known():
    assert {part_of(module) for module in import_graph(PACKAGE)} <= set(LAYER)


def test_no_import_cycles():
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_layers_point_one_way_and_subpackages_are_imported_whole():
    problems = layer_violations(import_graph(PACKAGE))
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The checks above on a tiny package with both faults (a type-only cycle, an upward import)."""
    pkg = tmp_path / "pipeline"
    for sub in ("train", "mlm"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "loop.py").write_text("from pipeline.train.state import State\n")
    (pkg / "train" / "state.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.train.loop import fit\n"
    )
    (pkg / "train" / "batches.py").write_text("def plan():\n    from pipeline.mlm import masking\n")
    (pkg / "mlm" / "masking.py").write_text("")
    graph = import_graph(pkg)
    assert find_cycles(graph) == [["pipeline.train.loop", "pipeline.train.state"]]
    assert layer_violations(graph) == [
        "pipeline.train.batches (train) imports pipeline.mlm.masking (mlm): against the layer order"
    ]

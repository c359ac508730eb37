"""hone's import graph: no cycles, layered as the pipeline runs, no imports hidden in functions.

The graph is read statically (`ast`, nothing is imported) from every .py file under src/hone:
module-level and function-local imports alike, `import x` and `from x import y`, with
`from hone.eval import svg` resolved to the module hone.eval.svg. Imports under
`if TYPE_CHECKING:` are left out: they never run, so they make no runtime dependency.
A module's package is the first name after `hone.` (hone.plan.calibrate -> plan, hone.cli -> cli).

The layers, bottom to top. A package imports only packages in lower layers; the packages of
one layer know nothing of each other.

    hone, errors, quiet, versions  leaves: the version, HoneError, library noise, version checks
    registry                       the named tables a config key selects from (methods, objectives)
    config                         the run's dataclasses, read from YAML and key=value overrides
    data                           read, check, convert, split, render, collate: takes a
                                   tokenizer, never loads one
    model                          load a model and its tokenizer, adapters
    engine                         fast layers and kernels installed on a model (uses data's rows)
    train                          the loop, losses, checkpoints, the SFT and pretraining recipes
    eval, plan, export             eval reuses train's `evaluate` and reads its metrics; plan
                                   times train's own steps; export merges a run's adapter
    pipeline                       commands that walk several stages (`hone train`, `hone check`)
    serve                          `hone serve`: loads models (model), renders prompts (data), stop tokens (eval)
    quickstart                     `hone quickstart`: the pipeline on the embedded model and demo task
    ui                             `hone ui`: the web page over the commands (training in a process of its own)
    cli                            parses and dispatches
    __main__                       `python -m hone`

So the order a user walks (data -> plan -> train -> eval) is not the import order: plan sits
above train because it times train's steps, and only the command layer strings stages together.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

LAYERS = [
    {"hone", "errors", "quiet", "versions"},
    {"registry"},
    {"config"},
    {"data"},
    {"model"},
    {"engine"},
    {"train"},
    {"eval", "plan", "export"},
    {"pipeline", "serve"},
    {"quickstart", "ui"},
    {"cli"},
    {"__main__"},
]

LAZY_IMPORTS = {
    "hone.cli": "`hone --help` and a mistyped flag answer at once: a command imports its stage (torch) when it runs",
}
"""Modules allowed to import hone modules inside functions, each with its reason. Anywhere else
an import inside a function hides a dependency (and, so far, every time, a cycle)."""


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. hone.plan.calibrate
    target: str  # the imported hone module, e.g. hone.train.loop
    where: str  # file:line, e.g. src/hone/plan/calibrate.py:73
    local: bool  # inside a function


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_files() -> dict[str, Path]:
    """Every hone module by name (a package by its __init__.py)."""
    modules = {}
    for path in sorted((SRC / "hone").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The hone module `name` names: itself, or the module an attribute of it lives in; None outside hone."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


class ImportVisitor(ast.NodeVisitor):
    """(imported name, line, inside a function) for every import that runs."""

    def __init__(self, module: str, is_package: bool):
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, int, bool]] = []
        self.depth = 0

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            parts = self.package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            self.found.append((base if alias.name == "*" else f"{base}.{alias.name}", node.lineno, self.depth > 0))


def hone_imports() -> list[Import]:
    modules = module_files()
    found = []
    for module, path in modules.items():
        visitor = ImportVisitor(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        where = path.relative_to(SRC.parent)
        for name, line, local in visitor.found:
            target = resolve(name, modules) if name.split(".")[0] == "hone" else None
            if target is not None and target != module:
                found.append(Import(module, target, f"{where}:{line}", local))
    return found


def find_cycle(graph: dict[str, dict[str, str]]) -> list[str] | None:
    """The first cycle of a depth-first walk (nodes in sorted order), as [a, b, ..., a]; None if acyclic."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, str]]) -> str:
    return " -> ".join(cycle) + " via " + ", ".join(graph[a][b] for a, b in zip(cycle, cycle[1:]))


def package_graph(imports: list[Import]) -> dict[str, dict[str, str]]:
    graph: dict[str, dict[str, str]] = {}
    for imp in imports:
        a, b = package(imp.source), package(imp.target)
        if a != b:
            graph.setdefault(a, {}).setdefault(b, imp.where)
    return graph


def module_graph(imports: list[Import]) -> dict[str, dict[str, str]]:
    """Module -> module. Importing hone.data.check.read first runs hone/data/check/__init__.py, so
    an import also reaches the packages above its target (but not the importer's own packages,
    which Python has already begun)."""
    modules = module_files()
    graph: dict[str, dict[str, str]] = {}
    for imp in imports:
        reached = [imp.target]
        parent = imp.target.rpartition(".")[0]
        while parent:
            if parent in modules and not (imp.source + ".").startswith(parent + "."):
                reached.append(parent)
            parent = parent.rpartition(".")[0]
        for target in reached:
            graph.setdefault(imp.source, {}).setdefault(target, imp.where)
    return graph


def test_the_graph_is_read():
    imports = hone_imports()
    pairs = {(i.source, i.target) for i in imports}
    assert ("hone.train.loop", "hone.data.collate") in pairs  # from x import y
    assert ("hone.eval.report", "hone.eval.svg") in pairs  # from package import module
    assert ("hone.cli", "hone.pipeline") in pairs and all(i.local for i in imports if i.source == "hone.cli" and i.target == "hone.pipeline")
    assert {package(m) for m in module_files()} <= set().union(*LAYERS), "place every new package in LAYERS"


def test_packages_do_not_import_each_other_in_a_cycle():
    graph = package_graph(hone_imports())
    cycle = find_cycle(graph)
    assert cycle is None, f"package cycle: {describe(cycle, graph)}"


def test_modules_do_not_import_each_other_in_a_cycle():
    graph = module_graph(hone_imports())
    cycle = find_cycle(graph)
    assert cycle is None, f"module cycle: {describe(cycle, graph)}"


def test_packages_import_only_lower_layers():
    layer = {name: index for index, names in enumerate(LAYERS) for name in names}
    wrong = sorted({f"{package(i.source)} -> {package(i.target)} ({i.where})" for i in hone_imports()
                    if package(i.source) != package(i.target) and layer[package(i.source)] <= layer[package(i.target)]})
    assert not wrong, "imports that go up a layer or sideways (see this file's docstring):\n" + "\n".join(wrong)


def test_hone_modules_are_imported_at_module_level():
    hidden = sorted({f"{i.where}: {i.target}" for i in hone_imports() if i.local and i.source not in LAZY_IMPORTS})
    assert not hidden, ("imports inside functions (move them to the top; if that makes a cycle, move the shared "
                        "piece down a layer):\n" + "\n".join(hidden))


def test_find_cycle_reports_the_cycle():
    graph = {"plan": {"train": "plan.py:1"}, "train": {"data": "t.py:2", "plan": "t.py:3"}, "data": {}}
    assert describe(find_cycle(graph), graph) == "plan -> train -> plan via plan.py:1, t.py:3"
    assert find_cycle({"a": {"b": ""}, "b": {}}) is None

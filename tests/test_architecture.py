"""The house: ibdb/ is stage packages that read as the data flow, and imports point one way.

Imports are read from the source (every ``import`` and ``from ... import``, at module level or
inside functions; those under ``if TYPE_CHECKING:`` are type hints only and do not count).
The stages, in flow order; a module may import its own stage and earlier ones only:

    core -> stats -> spec -> data -> run (with ibdb.runners) -> store -> estimate -> report
    -> the facade (api.py) -> cli

``ibdb/progress.py`` is part of core (public as ``ibdb.progress``); ``ibdb/__init__.py`` is the
facade's. The rule is docs/decisions/0102-stage-packages.md's.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("core", "stats", "spec", "data", "run", "store", "estimate", "report", "facade",
          "cli")
TOP_LEVEL = {"ibdb": "facade", "ibdb.api": "facade", "ibdb.progress": "core"}
MAX_TOP_FILES = 8


def _modules() -> dict[str, Path]:
    found = {}
    for base, package in (("ibdb", "ibdb"), ("runners", "ibdb.runners")):
        for path in sorted((ROOT / base).rglob("*.py")):
            parts = list(path.relative_to(ROOT / base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def stage_of(module: str) -> str:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    second = module.split(".")[1]
    return "run" if second == "runners" else second


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str) -> set[str]:
    """The ibdb modules ``module`` imports (outside TYPE_CHECKING blocks)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def known(name: str) -> str | None:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                out.update(filter(None, (known(a.name) for a in child.names)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package
                    for _ in range(child.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}" if base else parent
                for alias in child.names:
                    target = known(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES \
                        else known(base)
                    if target:
                        out.add(target)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    out.discard(module)
    if path.name == "__init__.py":  # a package exposing its own modules is not a circle
        out = {m for m in out if not m.startswith(module + ".")}
    return out


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_belongs_to_a_stage():
    assert {stage_of(m) for m in MODULES} <= set(STAGES)
    packages = {p.name for p in (ROOT / "ibdb").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(STAGES) - {"facade"}


def test_the_top_of_ibdb_is_nearly_empty():
    top = sorted(p.name for p in (ROOT / "ibdb").glob("*.py"))
    assert len(top) <= MAX_TOP_FILES, top
    assert "__path__" not in (ROOT / "ibdb" / "__init__.py").read_text(encoding="utf-8")


def against_the_flow(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} ({stage_of(m)}) imports {t} ({stage_of(t)})"
                  for m, targets in graph.items() for t in targets
                  if STAGES.index(stage_of(t)) > STAGES.index(stage_of(m)))


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
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

    for module in graph:
        if module not in index:
            connect(module)
    return found


def test_no_module_imports_a_later_stage():
    assert not against_the_flow(GRAPH), "\n".join(against_the_flow(GRAPH))


def test_no_import_circle():
    assert not circles(GRAPH), circles(GRAPH)


def test_the_checks_catch_what_they_are_for():
    """On graphs with a known fault: an import against the flow, and a circle."""
    assert against_the_flow({"ibdb.core.methods": {"ibdb.stats.estimators"},
                             "ibdb.stats.estimators": {"ibdb.core.methods"}}) == [
        "ibdb.core.methods (core) imports ibdb.stats.estimators (stats)"]
    assert circles({"ibdb.report.collect": {"ibdb.report.markdown"},
                    "ibdb.report.markdown": {"ibdb.report.collect"},
                    "ibdb.report.model": set()}) == [["ibdb.report.collect",
                                                      "ibdb.report.markdown"]]


def test_the_import_reader_sees_function_level_imports_and_skips_type_hints():
    assert "ibdb.run.plan" in GRAPH["ibdb.api"]  # imported inside a method
    assert "ibdb.report.writer" in GRAPH["ibdb.api"]
    assert "ibdb.store.database" not in GRAPH["ibdb.estimate.recompute"]  # TYPE_CHECKING only
    assert "ibdb.data.task" not in GRAPH["ibdb.runners"]  # (likewise)
    assert {"ibdb.core.errors", "ibdb.core.registry"} <= GRAPH["ibdb.spec.kinds"]


def test_torch_stays_in_the_run_stage():
    """Runners import torch; nothing in core, stats, spec, data or store does."""
    for module, path in MODULES.items():
        if stage_of(module) in ("core", "stats", "spec", "data", "store"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                     for a in n.names}
            names |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                      if isinstance(n, ast.ImportFrom)}
            assert "torch" not in names, module

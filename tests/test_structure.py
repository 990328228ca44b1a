"""The shape of the code base: imports run one way (the layering in docs/layout.md), no import cycles
(imports inside functions included), no private names borrowed across packages, modules and
functions of a readable size."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "traces", "simulator")
#: each component may import only components of a lower rank (or itself)
RANKS = {
    "common": 0,
    "traces": 1,
    "simulator.kernels": 2,
    "simulator.masking": 3, "simulator.caches": 3, "simulator.allocation": 3, "simulator.devices": 3,
    "simulator.metrics": 3, "simulator.plots": 3, "simulator.schedules": 3,
    "simulator.config": 4, "simulator.hardware": 4, "simulator.report": 4,
    "simulator.replay": 5, "simulator.plugins": 5,
    "simulator.layout": 6, "simulator.mrc": 6,
    "simulator.engine": 7, "simulator.accuracy": 7, "simulator.synth_validation": 7,
    "simulator.methods": 6,   # pruning, LoRA, predictor training: below the loops that apply them
    "simulator.disk": 8, "simulator.sweep": 8,
    "simulator.search": 9,    # optimize: Optuna studies whose trials are sweep points
    "simulator.cli": 10,
    "simulator": 11,     # the package's own __init__ re-exports
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
KERNEL_DECORATORS = ("njit", "njit_inline", "_inline")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def component(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] != "simulator":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "simulator"


def imports(mod: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every dipsim module ``mod`` imports, at module level or inside functions."""
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            names = subs if len(subs) == len(node.names) else [target] + subs   # names, not modules: the package
        else:
            continue
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            # a module's own packages are initialized before it in any case: not an edge
            if n and n != mod and not mod.startswith(n + "."):
                out.add(n)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_component_has_a_rank():
    missing = sorted({component(m) for m in modules()} - set(RANKS))
    assert not missing, f"add these to RANKS (and to the dependency rule in docs/layout.md): {missing}"


def test_imports_run_one_way(graph):
    wrong = [(m, t) for m, ts in graph.items() for t in ts
             if component(t) != component(m) and RANKS[component(t)] >= RANKS[component(m)]]
    assert not wrong, "imports against the layering: " + ", ".join(f"{m} -> {t}" for m, t in wrong)


def test_no_import_cycles(graph):
    """Tarjan's strongly connected components over the module graph: every one must be a single
    module (a package importing its own submodules from __init__ is fine: the submodule does not
    import the package back)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_names_across_packages():
    bad = []
    for mod, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.split(".")[0] in PACKAGES:
                same = component(node.module) == component(mod)
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and not same:
                        bad.append(f"{mod}: from {node.module} import {a.name}")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                private = [p for p in node.module.split(".") if p.startswith("_") and not p.startswith("__")]
                if private and component(node.module) != component(mod):
                    bad.append(f"{mod}: imports the private module {node.module}")
    assert not bad, bad


def test_modules_and_functions_are_readable_sizes():
    long_modules = [f"{m} ({n} lines)" for m, p in modules().items()
                    if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = []
    for m, p in modules().items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                kernel = any(getattr(d, "id", getattr(d, "attr", "")) in KERNEL_DECORATORS for d in node.decorator_list)
                if n > MAX_FUNCTION_LINES and not kernel:
                    long_functions.append(f"{m}.{node.name} ({n} lines)")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def test_the_metric_reference_is_generated_from_the_metric_table():
    """The docs' metric page shows simulator.metrics' table, generated at every build (docs/hooks.py;
    tests/test_docs.py compares the built page's list with the table)."""
    page = (ROOT / "docs" / "reference" / "metrics.md").read_text(encoding="utf-8")
    assert "<!-- generated: metrics -->" in page and "| `hit_rate` |" not in page

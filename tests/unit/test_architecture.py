"""The layers of ARCHITECTURE.md, checked on every module's imports (top level and inside functions).

* the core (``pavedml/*.py`` but the CLI) imports only the core;
* ``pavedml.adapters`` (MLflow, the online store) import the core and other adapters;
* ``pavedml.steps`` import the core, adapters, use-case hooks and other steps, never Airflow;
* ``pavedml.serving`` (the prediction service) imports the core, adapters, steps and itself, never Airflow;
* ``pavedml.airflow`` is the only package layer that imports Airflow; it runs steps through their
  argv, so it never imports a step, an adapter or a heavy library (the DAG processor imports it);
* no import circle between modules, however deep the import sits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PKG = Path(__file__).resolve().parents[2] / "include" / "pavedml"
HEAVY = {"pandas", "numpy", "sklearn", "mlflow", "great_expectations", "feast", "evidently", "pyarrow"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (``from pavedml import x`` counts as pavedml.x)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module.startswith("pavedml"):
                out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in {"airflow", "steps", "adapters", "tools", "hooks", "serving"}:
        return parts[1]
    if len(parts) == 2 and parts[1] in {"airflow", "steps", "adapters", "tools", "hooks", "serving"}:
        return parts[1]
    return "entry" if module in {"pavedml.cli", "pavedml.__main__"} else "core"


def package_imports(path: Path) -> set[str]:
    return {m for m in imports(path) if m in MODULES}


ALLOWED = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "hooks": {"core"},
    "steps": {"core", "adapters", "hooks", "steps"},
    "serving": {"core", "adapters", "steps", "serving"},
    "airflow": {"core", "airflow"},
    "tools": {"core", "adapters", "steps", "airflow", "tools", "entry"},
    "entry": {"core", "entry"},  # the CLI resolves steps and tools by name (importlib), when one runs
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    own = layer(module)
    wrong = sorted(m for m in package_imports(MODULES[module]) if layer(m) not in ALLOWED[own] and m != "pavedml")
    assert not wrong, f"{module} ({own}) imports {wrong}: {own} may import only {sorted(ALLOWED[own])}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_airflow_layer_imports_airflow(module):
    found = sorted(m for m in imports(MODULES[module]) if m == "airflow" or m.startswith("airflow."))
    if layer(module) == "airflow":
        return
    assert not found, f"{module} imports {found}: Airflow belongs in pavedml.airflow"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "airflow"))
def test_the_airflow_layer_never_imports_a_heavy_library(module):
    heavy = sorted(m for m in imports(MODULES[module]) if m.split(".")[0] in HEAVY)
    assert not heavy, f"{module} imports {heavy}: the DAG processor and every worker would pay for it"


def test_no_import_circle():
    graph = {m: {i for i in package_imports(p) if i != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for nxt in sorted(graph[m]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_the_checks_see_the_layers():
    """The rules above judge real modules: each layer is found and has members."""
    seen = {layer(m) for m in MODULES}
    assert {"core", "airflow", "steps", "adapters", "tools", "entry"} <= seen
    assert layer("pavedml.steps.training") == "steps" and layer("pavedml.airflow.factory") == "airflow"
    assert {"pavedml.config", "pavedml.layout"} <= package_imports(MODULES["pavedml.context"]), \
        "imports() misses top-level imports: the checks would pass vacuously"
    assert "pavedml.steps.ingest" in package_imports(MODULES["pavedml.tools.demo"]) or \
        any(layer(m) == "airflow" for m in package_imports(MODULES["pavedml.tools.demo"])), \
        "imports() misses imports inside functions: the checks would pass vacuously"

"""The package's import graph: no cycle, and data moves forward only (the data layer and the evaluation know nothing
of JAX or the models).

Imports are read with ``ast`` from every module of ``asd_jax``, those inside functions included, so a lazy import
cannot hide a cycle.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "asd_jax"


def _modules() -> dict[str, str]:
    """Module name -> file, for every module of the package."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(REPO, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                modules[module.removesuffix(".__init__")] = path
    return modules


def _imported(module: str, path: str, modules: dict[str, str]) -> set[str]:
    """The modules of the package that ``module`` imports anywhere in its file."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:  # "from pkg import module" imports that module
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imported(module, path, modules) for module, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle or several."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_package_has_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (each list imports itself through the others): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("layer", ["asd_jax.data", "asd_jax.evaluate"])
def test_data_and_evaluation_do_not_reach_the_models_or_jax(layer):
    """Data moves forward only: the data layer and the metrics never import a model, the trainer or JAX, so they
    run (and results recompute from scores.csv) without them."""
    modules = _modules()
    forbidden = ("asd_jax.models", "asd_jax.train", "asd_jax.methods", "asd_jax.config", "asd_jax.experiment")
    offenders = {}
    for module, path in modules.items():
        if module != layer and not module.startswith(layer + "."):
            continue
        with open(path) as handle:
            tree = ast.parse(handle.read(), path)
        third_party = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                       for alias in node.names}
        third_party |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and not node.level}
        bad = sorted(m for m in _imported(module, path, modules) if m.startswith(forbidden))
        bad += sorted({"jax", "flax", "optax"} & third_party)
        if bad:
            offenders[module] = bad
    assert not offenders, f"{layer} must not import these: {offenders}"

"""The shape of the code (ARCHITECTURE.md): no import cycles, layers that point one way, no private imports.

The graph is read from the source with `ast`, imports inside functions included (a cycle hidden in a
function body is still a cycle). Each module is also imported on its own, in a fresh interpreter, so a
module that only works after another one was imported first is caught.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = {  # as setup.py installs them
    "embedpipe": ROOT / "src" / "embedpipe",
    "embedpipe.components": ROOT / "components",
    "embedpipe.pipelines": ROOT / "pipelines",
}

#: Layers, lowest first: a module may import its own layer and the ones below, never one above.
#: A module not listed belongs to the layer of its nearest listed package.
LAYERS = [
    # 0: facts every stage needs: files, models, prompts, threads, validation, data formats
    {
        "embedpipe",
        "embedpipe.beir",
        "embedpipe.extras",
        "embedpipe.images",
        "embedpipe.metrics",
        "embedpipe.models",
        "embedpipe.progress",
        "embedpipe.prompts",
        "embedpipe.storable",
        "embedpipe.write_modes",
        "embedpipe.storage",
        "embedpipe.threads",
        "embedpipe.validation",
        "embedpipe.vertex",
    },
    # 1: the stage libraries
    {
        "embedpipe.backend",
        "embedpipe.embed",
        "embedpipe.evaluate",
        "embedpipe.fine_tune",
        "embedpipe.training",
        "embedpipe.prepare",
        "embedpipe.registry",
        "embedpipe.reports",
        "embedpipe.retrieval",
        "embedpipe.serving",
        "embedpipe.vectorstore",
    },
    # 2: what users and orchestrators call: components, pipelines, the CLI, local and cloud runs
    {
        "embedpipe.cli",
        "embedpipe.components",
        "embedpipe.docker_runner",
        "embedpipe.local",
        "embedpipe.local_console",
        "embedpipe.pipelines",
        "embedpipe.submit",
        "embedpipe.__main__",
    },
]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCE_ROOTS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "tests" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of ours in the file, at any depth."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("embedpipe")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.startswith("embedpipe"):
                found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import statement runs: `from pkg import sub` runs `pkg.sub` when it is a module."""
    submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    if submodules and len(submodules) == len(names):
        return submodules
    return [module, *submodules] if module in MODULES else submodules


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names, _ in _imports(name, path):
            for target in _targets(module, names):
                if target != name and not name.startswith(target + "."):  # a package's own parents run anyway
                    graph[name].add(target)
    return graph


def _layer(module: str) -> int:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix == "embedpipe" and module != "embedpipe":
            break  # the root package's layer is its own, not a default for new modules
        for index, layer in enumerate(LAYERS):
            if prefix in layer:
                return index
    raise AssertionError(f"{module} is in no layer: add it (or its package) to LAYERS in {__file__}")


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
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
    assert not cycles, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_layers_point_one_way():
    upward = []
    for name, path in MODULES.items():
        for module, names, line in _imports(name, path):
            for target in _targets(module, names):
                if target in MODULES and _layer(target) > _layer(name):
                    upward.append(f"{path.relative_to(ROOT)}:{line}: {name} (layer {_layer(name)}) imports {target}")
    assert not upward, "a lower layer imports a higher one:\n" + "\n".join(upward)


def test_no_module_imports_another_modules_private_names():
    private = []
    for name, path in MODULES.items():
        for module, names, line in _imports(name, path):
            for imported in names:
                if imported.startswith("_") and not imported.startswith("__") and module != name:
                    private.append(f"{path.relative_to(ROOT)}:{line}: {imported} from {module}")
    assert not private, "private names imported across modules:\n" + "\n".join(private)


#: What a component module may import besides the standard library and kfp: our image names (a module of
#: constants) and GCPC's artifact types (plain classes the Vertex UI knows).
COMPONENT_IMPORTS = {"embedpipe.images", "google_cloud_pipeline_components.types.artifact_types"}


def test_components_import_only_the_standard_library_and_kfp_at_module_level():
    heavy = []
    for name, path in MODULES.items():
        if not name.startswith("embedpipe.components"):
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: bodies import what they need
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                root = module.split(".")[0]
                if not (
                    root in sys.stdlib_module_names
                    or root == "kfp"
                    or module in COMPONENT_IMPORTS
                    or module.startswith("embedpipe.components")
                ):
                    heavy.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not heavy, "components import at module level what belongs in their bodies:\n" + "\n".join(heavy)


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    def import_alone(module: str) -> str:
        run = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
        return "" if run.returncode == 0 else f"{module}: {run.stderr.strip().splitlines()[-1]}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(import_alone, sorted(MODULES)) if f]
    assert not failures, "\n".join(failures)

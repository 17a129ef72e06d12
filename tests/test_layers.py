"""The package's layers, checked from the source (every import, lazy ones inside functions included): the runtime,
measurement and technique layers import no stage; no stage reaches into the block-dropping stage to time a model,
and the one that combines its technique (the budget search) uses only its public functions; and the packages
import one another without a cycle."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
STAGES = {"synthesize", "distill", "drop", "export", "quantize", "engine", "bench", "search", "gate", "bundle"}
# the budget search combines block dropping with precision: it calls drop's and quantize's public functions
# (`pipeline.drop`, `pipeline.quantize`), never their modules
PUBLIC_DROP_USERS = {"search"}


def _imports() -> dict[str, set[str]]:
    """package -> the pipeline modules it imports (`pipeline/x.py` counts as package x)."""
    found = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        package = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            found[package].update(name for name in names if name.startswith("pipeline."))
    return found


def _package(module: str) -> str:
    return module.split(".")[1]


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected groups of more than one package (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in list(edges):
        if node not in index:
            visit(node)
    return groups


def test_runtime_measurement_and_kd_layers_import_no_stage():
    imports = _imports()
    for layer in ("runtimes", "measure", "kd"):
        assert imports[layer], f"{layer}: no imports found (renamed?)"
        assert not {_package(m) for m in imports[layer]} & STAGES, (layer, sorted(imports[layer]))


def test_no_stage_reaches_into_the_drop_stage_to_measure():
    """drop's modules are its own; the recipes on top assemble its stage; the search uses its public functions;
    nobody else (gate, bench and quantize included) imports from it at all."""
    imports = _imports()
    for package, modules in imports.items():
        if package in ("drop", "recipes", "cli"):
            continue
        into = sorted(m for m in modules if m.startswith("pipeline.drop"))
        allowed = ["pipeline.drop"] if package in PUBLIC_DROP_USERS else []
        assert set(into) <= set(allowed), (package, into)
    assert "pipeline.drop" in imports["search"]  # the rule above still reads the search's imports


def test_the_search_uses_only_the_public_functions_of_drop_and_quantize():
    imports = _imports()
    for package, modules in imports.items():
        if package in ("quantize", "recipes", "cli"):
            continue
        into = sorted(m for m in modules if m.startswith("pipeline.quantize."))
        assert not into, (package, into)
    assert "pipeline.quantize" in imports["search"]


def test_there_is_no_import_cycle_between_packages():
    """The last one (models/ reading dropped and binary checkpoints; synthesize and distill sharing the
    data-free loop) went with the checkpoint-reader registry and `synthesize/data_free_loop.py`."""
    edges = {package: {_package(m) for m in modules} - {package} for package, modules in _imports().items()}
    assert not _cycles(edges), f"import cycles: {[sorted(group) for group in _cycles(edges)]}"


def test_no_stage_module_is_used_as_a_library():
    """A stage's `stage.py` holds its artifacts, I/O and metrics; other packages use its public technique
    modules, never the stage (the recipes on top assemble the stages)."""
    for package, modules in _imports().items():
        if package in ("recipes", "cli"):
            continue
        borrowed = sorted(
            m for m in modules if m.endswith(".stage") and _package(m) != package and m != "pipeline.stage"
        )
        assert not borrowed, (package, borrowed)


PORTABLE_LAZY = {"onnxruntime", "onnx", "tensorrt", "pycuda", "cuda"}  # imported inside functions, when used


def test_portable_code_runs_without_the_package():
    """`pipeline/portable/` is copied to devices as it is: stdlib + numpy at module level, runtimes only inside
    functions, relative imports for its own modules, and Python 3.8 syntax (JetPack 5)."""
    import sys

    for path in (PACKAGE / "portable").glob("*.py"):
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 8))
        lazy = {
            id(node)
            for function in ast.walk(tree)
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            allowed = set(sys.stdlib_module_names) | {"numpy"} | (PORTABLE_LAZY if id(node) in lazy else set())
            assert set(roots) <= allowed, f"{path.name}:{node.lineno} imports {roots}"


def _files_containing(pattern: str) -> list[str]:
    import re

    return sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if re.search(pattern, path.read_text(), re.MULTILINE)
    )


def test_sessions_the_tensorrt_import_and_file_hashing_are_each_written_once():
    # the bundle's example script is shipped to the mobile team and runs without the package
    assert _files_containing(r"InferenceSession\(") == ["bundle/example_infer.py", "portable/onnxruntime_loader.py"]
    assert _files_containing(r"^\s*(import|from) tensorrt\b") == ["portable/tensorrt_loader.py"]
    assert _files_containing("def sha256_file") == ["portable/files.py"]
    assert _files_containing("def cuda_backend") == ["portable/cuda_buffers.py"]


def test_nothing_below_the_recipes_imports_them():
    """The recipes (`recipes/`) and the CLI (`cli/`) are the top layer: no stage, runtime or measurement module
    reaches up into them (the gate once took its latency settings from the build, the report its summary)."""
    for package, modules in _imports().items():
        if package in ("recipes", "cli", "__main__"):  # `python -m pipeline` starts the CLI
            continue
        upward = sorted(m for m in modules if _package(m) in ("recipes", "cli") or m == "pipeline.build")
        assert not upward, (package, upward)

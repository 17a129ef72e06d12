"""The package's layers, checked from the source (every import, lazy ones inside functions included): the runtime,
measurement and technique layers import no stage; no stage reaches into the block-dropping stage to time a model,
and the one that combines its technique (the budget search) uses only its public functions; and the packages
import one another without a cycle."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
STAGES = {"synthesize", "distill", "drop", "export", "quantize", "engine", "bench", "search", "gate", "bundle"}
# Which stage packages use another's public functions (`pipeline.<provider>`, never its modules), and why.
PUBLIC_USERS = {
    "drop": {"search"},  # the budget search combines block dropping with precision
    "quantize": {"search"},  # and quantises its candidates as the quantize stage does
    "export": {"drop", "quantize", "search"},  # the ONNX exporter, to time and quantise models
    "synthesize": {"distill", "drop"},  # the data-free loop; few real images for drop's recovery
}


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


def _imported_names() -> list[tuple[str, str, list[str]]]:
    """(package, module, names) for every `from pipeline.x import names` in `pipeline/`, lazy ones included."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        package = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("pipeline."):
                    found.append((package, node.module, [alias.name for alias in node.names]))
    return found


def _public_names(package: str) -> set[str]:
    tree = ast.parse((PACKAGE / package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def test_no_stage_reaches_into_the_drop_stage_to_measure():
    """The gate, the bench and quantize import nothing from drop; the search uses its public functions."""
    imports = _imports()
    for package in ("gate", "bench", "quantize"):
        assert imports[package], f"{package}: no imports found (renamed?)"
        assert not [m for m in imports[package] if m.startswith("pipeline.drop")], package
    assert "pipeline.drop" in imports["search"]


def test_stages_use_one_another_only_through_public_functions():
    """A stage package may use another only by the names that package exports (`pipeline.drop`, never
    `pipeline.drop.blocks`), and only where PUBLIC_USERS says; the recipes on top assemble every stage."""
    imported = _imported_names()
    for package, module, names in imported:
        provider = _package(module)
        if package in ("recipes", "cli") or provider not in STAGES or provider == package:
            continue
        assert module == f"pipeline.{provider}", f"{package} imports {module}: use what pipeline.{provider} exports"
        assert package in PUBLIC_USERS.get(provider, ()), f"{package} uses {provider}; PUBLIC_USERS does not list it"
        assert set(names) <= _public_names(provider), (package, provider, sorted(set(names) - _public_names(provider)))
    for provider, users in PUBLIC_USERS.items():  # the table is not stale: each user still imports its provider
        for user in users:
            assert any(p == user and _package(m) == provider for p, m, _ in imported), (user, provider)


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

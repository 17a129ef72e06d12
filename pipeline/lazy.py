"""Import heavy optional modules (tensorrt, pycuda) only when a command needs them."""

import importlib
from types import ModuleType

from pipeline.errors import MissingDependency


def lazy_import(module: str, *, install: str) -> ModuleType:
    """Import `module` or raise a one-line error saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependency(f"{module} is not installed: {install}") from error
    except Exception as error:  # a broken native install (e.g. CUDA driver mismatch) lands here
        raise MissingDependency(f"{module} failed to import ({error}): {install}") from error


def is_available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:
        return False

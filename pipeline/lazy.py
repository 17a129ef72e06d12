"""Import heavy optional modules (tensorrt, pycuda) only when a command needs them."""

import importlib
import sys
from types import ModuleType
from typing import Callable

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


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's public names, each imported from its module on first use (PEP 562's module `__getattr__`).

    `exports` maps a public name to "module:attribute". Importing one light module of the package (the INT8 check
    that runs under an emulated CPU imports only onnxruntime) then no longer pays for its heavy siblings (torch).
    Use as `__getattr__, __dir__ = lazy_exports(__name__, {...})`."""

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = exports[name].split(":")
        value = getattr(importlib.import_module(module), attribute)
        setattr(sys.modules[package], name, value)  # later lookups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__

"""The API-surface check (issue 23): every TensorRT attribute, enum member and method our code uses, looked up
in NVIDIA's real Python wheels for 10.x and 11.x, and the removed ones our 10.x path uses confirmed absent in 11.

The `tensorrt-cu12-bindings` wheels hold the binding module (`tensorrt.so`) but importing it needs the
`tensorrt-cu12-libs` wheel (several GB: libnvinfer and friends) and, for most calls, a GPU. So the names are
looked up in the module itself: pybind11 registers every class, enum member, method and property under its name
as a C string in the shared object, and helpers such as `nptype` live in the wheel's `__init__.py`. A name found
as a whole string is present; one found only as the tail of a longer string (the linker merges string
literals that end alike) is reported as such, weaker evidence; one found nowhere is absent. Not in CI: it
downloads two wheels of about 1.5 MB each, in a throwaway folder.

    python benchmarks/tensorrt_api.py   # -> benchmarks/results/tensorrt_api.{md,json}
"""

import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import commit, cpu_description  # noqa: E402

WHEELS = {"10": "tensorrt-cu12-bindings==10.*", "11": "tensorrt-cu12-bindings==11.*"}
# the files that call TensorRT's Python API (the others only read stamps or target settings)
SOURCES = ("pipeline/portable/tensorrt_loader.py", "pipeline/portable/engine_facts.py")
SOURCES += ("pipeline/runtimes/tensorrt_runner.py", "pipeline/runtimes/tensorrt_engine.py")
OBJECTS = r"(?:builder|config|network|parser|profile|engine|context|runtime|inspector|tensor|cache|serialized)"
# used only on TensorRT 10 (weakly typed builder flags, portable/engine_precision.py): must be gone in 11. A short
# name such as INT8 also ends longer strings (UINT8), so the member's own docstring in the module decides
TEN_ONLY = {"BuilderFlag.FP16": "Enable FP16 layer selection.", "BuilderFlag.INT8": "Enable Int8 layer selection."}
METHOD_SOURCES = SOURCES[:3]  # tensorrt_engine.py's `engine` is a file path, not a TensorRT object
PYTHON_HELPERS = {"nptype", "__version__"}  # defined in the wheel's __init__.py, not the shared object


def used_names() -> dict[str, set[str]]:
    """name -> the files using it: trt.X and trt.X.Y, the builder flags taken by getattr, and methods and
    properties on TensorRT objects."""
    from pipeline.portable.engine_precision import WEAK_TYPING_FLAGS

    names: dict[str, set[str]] = {}
    for source in SOURCES:
        text = (ROOT / source).read_text()
        found = set(re.findall(r"\btrt\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)", text))
        if source in METHOD_SOURCES:
            methods = re.findall(rf"\b(?:self\.)?{OBJECTS}\.([a-z_A-Z]\w*)\b", text)
            found |= {m for m in methods if not m.startswith("_")}
        if "getattr(trt.BuilderFlag" in text:
            found |= {f"BuilderFlag.{flag}" for flags in WEAK_TYPING_FLAGS.values() for flag in flags}
        for name in found:
            names.setdefault(name, set()).add(source)
    return names


def wheel_strings(requirement: str, folder: Path) -> tuple[str, set[str], str]:
    """(version, the shared object's strings, the __init__.py text) of one bindings wheel."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11"]
        + ["--platform", "manylinux_2_28_x86_64", requirement, "-d", str(folder), "-q"],
        check=True,
    )
    wheel = next(folder.glob("*.whl"))
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as archive:
        module = next(n for n in archive.namelist() if n.endswith("/tensorrt.so"))
        init = next(n for n in archive.namelist() if n.endswith("bindings/__init__.py"))
        strings = {s.decode() for s in re.findall(rb"[\x20-\x7e]{2,}", archive.read(module))}
        return version, strings, archive.read(init).decode()


def lookup(name: str, strings: set[str], init: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if name in TEN_ONLY:  # the member's docstring: its name alone may be the tail of another string
        if TEN_ONLY[name] in strings:
            return "present (its docstring)"
        return "absent (neither its docstring nor its name)" if leaf not in strings else "undecided"
    if leaf in PYTHON_HELPERS:
        return "present" if re.search(rf"\b{re.escape(leaf)}\b", init) else "absent"
    if leaf in strings:
        return "present"
    if any(s.endswith(leaf) for s in strings):
        return "present (tail of a longer string)"
    return "absent"


def main() -> None:
    names = used_names()
    rows, versions = [], {}
    with tempfile.TemporaryDirectory(prefix="tensorrt-api-") as scratch:
        found = {}
        for major, requirement in WHEELS.items():
            folder = Path(scratch) / major
            folder.mkdir()
            versions[major], strings, init = wheel_strings(requirement, folder)
            found[major] = {name: lookup(name, strings, init) for name in names}
    for name in sorted(names):
        ten, eleven = found["10"][name], found["11"][name]
        if name in TEN_ONLY:
            ok = ten.startswith("present") and eleven.startswith("absent")
        else:
            ok = ten.startswith("present") and eleven.startswith("present")
        rows.append(
            {
                "name": name,
                "files": sorted(names[name]),
                "tensorrt_10": ten,
                "tensorrt_11": eleven,
                "expected": "in 10, gone in 11" if name in TEN_ONLY else "in both",
                "ok": ok,
                "commit": commit(),
                "cpu": cpu_description(),
            }
        )
    results = ROOT / "benchmarks" / "results"
    record = {"wheels": {m: f"tensorrt-cu12-bindings {v}" for m, v in versions.items()}, "rows": rows}
    (results / "tensorrt_api.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        "# TensorRT API surface our code uses, looked up in NVIDIA's wheels",
        "",
        f"`python benchmarks/tensorrt_api.py` at {commit()}: tensorrt-cu12-bindings {versions['10']} and "
        f"{versions['11']} from PyPI, names looked up in their `tensorrt.so` and `__init__.py` (the import needs "
        "the multi-GB libs wheel and a GPU; see the script's docstring). "
        f"{sum(r['ok'] for r in rows)} of {len(rows)} as expected; "
        f"{sum('tail' in r['tensorrt_10'] or 'tail' in r['tensorrt_11'] for r in rows)} of them matched only as the "
        "tail of a longer string (weaker evidence), and a dotted name is matched by its member's string, not by "
        "its membership of that class.",
        "",
        "| name | TensorRT 10 | TensorRT 11 | expected | ok |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['name']}` | {r['tensorrt_10']} | {r['tensorrt_11']} | {r['expected']} | {'yes' if r['ok'] else '**no**'} |"
        for r in rows
    ]
    (results / "tensorrt_api.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

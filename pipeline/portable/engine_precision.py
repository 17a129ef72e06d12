"""What precision a TensorRT engine is built in: one decision for the Python builder, trtexec and the device
script alike (issue 23 items 1 and 4), from the TensorRT major, the precision asked for and the ONNX's own.

TensorRT 10 is weakly typed by default: builder flags (FP16, INT8) let it choose lower-precision kernels for an
fp32 network, and INT8 comes only from explicit Q/DQ nodes here (no implicit calibration). TensorRT 11 is
strongly typed only: its builder flags and trtexec's `--fp16 --int8 --best` are gone, so the network computes
in the precision the ONNX holds (NVIDIA, "Migrating trtexec Usage from TensorRT 10.x to 11.x"). Asking 11 for
another precision is an error; a measurement (a latency-table variant) is timed as the ONNX is and says so.
"""

from __future__ import annotations  # Python 3.8 on JetPack 5

from dataclasses import dataclass, field

from .errors import BenchError

WEAK_TYPING_FLAGS = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"], "binary": ["INT8", "FP16"]}
TRTEXEC_PRECISION_FLAGS = {"FP16": "--fp16", "INT8": "--int8"}


@dataclass(frozen=True)
class EnginePrecision:
    precision: str | None  # what the engine computes in (None: an ONNX whose fp16/fp32 could not be read)
    strongly_typed: bool
    builder_flags: list = field(default_factory=list)  # TensorRT 10 BuilderFlag names
    note: str | None = None  # said beside the figure: what was timed when it differs from what was asked

    def trtexec_flags(self) -> list[str]:
        return [TRTEXEC_PRECISION_FLAGS[flag] for flag in self.builder_flags]


def engine_precision(
    major: int, requested: str, onnx_precision: str | None, measuring: bool = False
) -> EnginePrecision:
    """The engine for `requested` ("fp32", "fp16", "int8", "binary") from an ONNX computing in
    `onnx_precision` ("fp32", "fp16", "int8", or None when unknown) on TensorRT `major`; `measuring`: a
    timing that may take the ONNX as it is (with a note) where a deliverable engine must refuse."""
    if requested not in WEAK_TYPING_FLAGS:
        raise BenchError(f"unknown engine precision {requested!r}; choose one of {', '.join(WEAK_TYPING_FLAGS)}")
    wanted = "int8" if requested == "binary" else requested  # binary weights run on the INT8 Q/DQ kernels
    if major >= 11:
        if onnx_precision is None and not measuring:
            raise BenchError(
                f"TensorRT {major} builds in the ONNX's own precision, and fp16 cannot be told from fp32 here "
                "(no onnx package): pip install onnx on this machine, so the engine is known to be " + requested
            )
        if onnx_precision is None:
            return EnginePrecision(
                None,
                True,
                [],
                f"TensorRT {major} takes the ONNX's precision, which could not be read here "
                "(no onnx package); the engine is not claimed to be " + requested,
            )
        if onnx_precision == wanted:
            return EnginePrecision(requested, True)
        if measuring:
            return EnginePrecision(
                onnx_precision,
                True,
                [],
                f"timed as {onnx_precision}, not {requested}: TensorRT {major} is strongly typed",
            )
        raise BenchError(
            f"TensorRT {major} builds strongly typed networks only: it has no {requested.upper()} flag, and this "
            f"ONNX is {onnx_precision}; give a {requested} ONNX (`pipeline quantize --precision {requested}`)"
        )
    if wanted == "int8" and onnx_precision != "int8":  # None: no Q/DQ node was found (onnx_precision)
        raise BenchError(
            "INT8 needs an ONNX with Q/DQ nodes (explicit quantisation; implicit calibration is not used): run "
            "`pipeline quantize --precision int8` for a TensorRT target first"
        )
    return EnginePrecision(requested, False, list(WEAK_TYPING_FLAGS[requested]))

#!/usr/bin/env python3
"""A stand-in for NVIDIA's trtexec in tests, where no TensorRT exists: it checks every option it is given against
the option table of the TensorRT major it pretends to be (tests/data/trtexec_options.json, written from NVIDIA's
documentation), refuses unknown ones as trtexec does, and writes the files a real run would (engine, times).
It measures nothing: the figures it writes are fixed, and no test reads them as a latency.

Environment: TRTEXEC_STANDIN_VERSION (the banner's number, e.g. 100300 or 110401), TRTEXEC_STANDIN_LOG (a file
each command line is appended to, one JSON list per line)."""

import json
import os
import sys
from pathlib import Path

TABLE = json.loads((Path(__file__).resolve().parent / "data" / "trtexec_options.json").read_text())


def main(argv: list[str]) -> int:
    number = int(os.environ.get("TRTEXEC_STANDIN_VERSION", "100300"))
    major = number // 10000 if number >= 100000 else number // 1000
    print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{number}] # trtexec {' '.join(argv)}")
    log = os.environ.get("TRTEXEC_STANDIN_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps(argv) + "\n")
    if argv == ["--help"]:
        return 0
    known = set(TABLE["options"][str(major)])
    options = {}
    for argument in argv:
        name, _, value = argument.partition("=")
        if name not in known:
            print(f"[E] Unknown option: {argument}")
            return 1
        options[name] = value
    if "--loadEngine" in options and not Path(options["--loadEngine"]).is_file():
        print(f"[E] cannot open engine file {options['--loadEngine']}")
        return 1
    if "--onnx" in options and not Path(options["--onnx"]).is_file():
        print(f"[E] cannot open {options['--onnx']}")
        return 1
    if "--saveEngine" in options:
        Path(options["--saveEngine"]).write_bytes(b"stand-in engine\n")
    if "--exportLayerInfo" in options:  # the inspector's JSON in the schema of the major it pretends to be
        layers = [{"Name": "conv", "Outputs": [{"Name": "x", "Format/DataType": "Row major linear FP32"}]}]
        io = {"I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"}]} if major >= 11 else {}
        info = {"Layers": layers, **(io or {"Bindings": ["input", "logits"]})}
        Path(options["--exportLayerInfo"]).write_text(json.dumps(info))
    if "--exportTimes" in options:
        runs = int(options.get("--iterations", "10"))
        times = [{"computeMs": 1.0, "latencyMs": 1.0} for _ in range(runs)]
        Path(options["--exportTimes"]).write_text(json.dumps(times))
    print("&&&& PASSED TensorRT.trtexec")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

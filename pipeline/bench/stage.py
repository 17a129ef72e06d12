"""`bench` stage: latency of each exported model on the target's runtime with the shared timing routine,
and top-1 accuracy of the exported model (the artifact we hand on) on a labelled set when one is given.

Where latency comes from is part of every entry (`latency_source`): "local" (the target's runtime here, a
TensorRT engine when the engine stage built one), "remote" (the standalone bench script on the target's host,
over SSH) or "proxy" (this machine's onnxruntime standing in for a runtime it lacks). Accuracy is always
computed here, from the ONNX file (or the local engine), and says which runtime computed it. A Q/DQ model bound
for TensorRT is run as written (no graph optimisation: Q/DQ in float, as TensorRT computes it), never through
this CPU's integer kernels, whose sums saturate on CPUs without VNNI (pipeline/quantize/verify.py).
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.bench.accuracy import accuracy_with_runner
from pipeline.bench.latency import measure_latency
from pipeline.data import load_eval_dataset
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json
from pipeline.preprocess import Preprocess
from pipeline.progress import log
from pipeline.runtimes import OnnxRuntimeRunner, holds_qdq
from pipeline.stage import Stage, StageOutput


@dataclass(frozen=True)
class BenchConfig:
    batch: int
    threads: int | None
    warmup: int
    runs: int
    preprocess: dict  # what the models expect (Preprocess.to_dict())
    runtime: str = "onnxruntime"
    eval: str | None = None
    eval_limit: int | None = None
    seed: int = 0
    source: str = "local"  # local | remote | proxy (see the module docstring)
    proxy_for: str | None = None
    precision: str = "fp32"
    host: str | None = None
    remote: dict | None = None
    tensorrt: dict | None = None
    engines: dict = field(default_factory=dict)  # model name -> engine built by the engine stage (local TensorRT)


def make_runner(runtime: str, path: Path, threads: int | None):
    """The runner for one model file: onnxruntime for .onnx, TensorRT (or trtexec) for a built engine."""
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads=threads)
    if runtime == "tensorrt":
        if Path(path).suffix not in (".engine", ".plan"):
            raise PipelineError(f"TensorRT runs engines, not {Path(path).name}: build one first (`pipeline engine`)")
        from pipeline.runtimes import TensorRtRunner

        return TensorRtRunner(path)
    if runtime == "trtexec":
        from pipeline.runtimes import TrtexecRunner

        return TrtexecRunner(path)
    raise PipelineError(f"unknown runtime {runtime!r}")


class BenchStage(Stage):
    name = "bench"
    version = 3  # 3: a TensorRT-bound Q/DQ model's accuracy from its graph as written

    def __init__(self, models: dict[str, Path], config: BenchConfig):
        super().__init__(config)
        self.models = {name: Path(path) for name, path in models.items()}

    def inputs(self) -> dict[str, Path]:
        return {**self.models, **{f"{name}_engine": Path(path) for name, path in self.config.engines.items()}}

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        preprocess = Preprocess.from_dict(config.preprocess)
        example = np.random.default_rng(config.seed).standard_normal(
            (config.batch, *preprocess.input_shape)).astype(np.float32)
        dataset = load_eval_dataset(config.eval, preprocess, config.eval_limit) if config.eval else None
        remote = self._remote_latency(example) if config.source == "remote" else {}
        if config.source == "proxy":
            log(f"[yellow]bench: latency by proxy: onnxruntime on this machine stands in for {config.proxy_for}[/yellow]")
        results = {}
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-bench-") as folder:
            for name, path in self.models.items():
                results[name] = self._measure(name, path, example, dataset, remote.get(name), Path(folder))
        atomic_write_json(workdir / "bench.json", results)
        return StageOutput(artifacts={"report": "bench.json"}, metrics=results)

    def _runner(self, name: str, path: Path, folder: Path):
        config = self.config
        if config.source == "local" and config.runtime == "tensorrt":
            if name in config.engines:
                return make_runner("tensorrt", Path(config.engines[name]), None)
            from pipeline.drop.latency_table import LatencySettings, runner_for

            settings = LatencySettings(runtime="tensorrt", batch=config.batch, precision=config.precision,
                                       tensorrt=config.tensorrt)
            return runner_for(settings, path, folder)  # e.g. the fp32 teacher: an engine of its own
        return make_runner("onnxruntime", path, config.threads)

    def _measure(self, name: str, path: Path, example, dataset, remote_entry, folder: Path) -> dict:
        config = self.config
        with self._runner(name, path, folder) as runner:
            entry = {"runtime": runner.describe(), "size_bytes": path.stat().st_size, "latency_source": config.source,
                     "proxy_for": config.proxy_for}
            if remote_entry is None:
                latency = measure_latency(runner, example, warmup=config.warmup, runs=config.runs).to_dict()
            else:
                latency = {**remote_entry["pooled"], "warmup": config.warmup, "batch": config.batch}
                entry["measured_on"] = remote_entry["measured_on"]
            entry["latency"] = latency
            if dataset is not None:
                entry.update(self._accuracy(runner, path, dataset))
                entry["eval_dataset"] = dataset.name
                entry["eval_images"] = len(dataset)
        accuracy = f", top-1 {entry['accuracy']:.4f} on {len(dataset)} images" if dataset is not None else ""
        where = {"remote": f" on {config.host}", "proxy": f" (proxy for {config.proxy_for})"}.get(config.source, "")
        log(f"bench: {name} median {latency['median_ms']:.3f} ms{where} (p90 {latency['p90_ms']:.3f}, "
            f"CV {latency['cv']:.2f}){accuracy}")
        return entry

    def _accuracy(self, runner, path: Path, dataset) -> dict:
        config = self.config
        bound_for_tensorrt = config.runtime == "tensorrt" or config.proxy_for == "tensorrt"
        if isinstance(runner, OnnxRuntimeRunner) and bound_for_tensorrt and holds_qdq(path):
            with OnnxRuntimeRunner(path, threads=config.threads, optimize_graph=False) as as_written:
                return {"accuracy": accuracy_with_runner(as_written, dataset.images, dataset.labels),
                        "accuracy_runtime": "onnxruntime, Q/DQ as written (no graph optimisation)"}
        return {"accuracy": accuracy_with_runner(runner, dataset.images, dataset.labels),
                "accuracy_runtime": runner.describe()["runtime"]}

    def _remote_latency(self, example) -> dict:
        from pipeline.drop.latency_table import LatencySettings, time_remotely

        config = self.config
        settings = LatencySettings(runtime=config.runtime, batch=config.batch, threads=config.threads,
                                   warmup=config.warmup, runs=config.runs, rounds=1, max_seconds=None, source="remote",
                                   precision=config.precision, host=config.host, remote=config.remote,
                                   tensorrt=config.tensorrt)
        return time_remotely(self.models, settings, example, 1, label="bench")

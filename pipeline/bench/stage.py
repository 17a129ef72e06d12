"""`bench` stage: latency of each exported model on the target's runtime with the shared timing routine,
and top-1 accuracy of the exported model (the artifact we hand on) on a labelled set when one is given."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bench.accuracy import accuracy_with_runner
from pipeline.bench.latency import measure_latency
from pipeline.data import load_eval_dataset
from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_json
from pipeline.preprocess import Preprocess
from pipeline.progress import log
from pipeline.runtimes import OnnxRuntimeRunner
from pipeline.stage import Stage, StageOutput


@dataclass(frozen=True)
class BenchConfig:
    runtime: str
    batch: int
    threads: int | None
    warmup: int
    runs: int
    preprocess: dict  # what the models expect (Preprocess.to_dict())
    eval: str | None = None
    eval_limit: int | None = None
    seed: int = 0


def make_runner(runtime: str, path: Path, threads: int | None):
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads=threads)
    if runtime == "tensorrt":
        raise PipelineError("TensorRT targets need an engine; the engine stage is not part of this build yet")
    raise PipelineError(f"unknown runtime {runtime!r}")


class BenchStage(Stage):
    name = "bench"
    version = 1

    def __init__(self, models: dict[str, Path], config: BenchConfig):
        super().__init__(config)
        self.models = {name: Path(path) for name, path in models.items()}

    def inputs(self) -> dict[str, Path]:
        return dict(self.models)

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        preprocess = Preprocess.from_dict(config.preprocess)
        example = np.random.default_rng(config.seed).standard_normal(
            (config.batch, *preprocess.input_shape)).astype(np.float32)
        dataset = load_eval_dataset(config.eval, preprocess, config.eval_limit) if config.eval else None
        results = {}
        for name, path in self.models.items():
            with make_runner(config.runtime, path, config.threads) as runner:
                latency = measure_latency(runner, example, warmup=config.warmup, runs=config.runs)
                entry = {"runtime": runner.describe(), "latency": latency.to_dict(), "size_bytes": path.stat().st_size}
                if dataset is not None:
                    entry["accuracy"] = accuracy_with_runner(runner, dataset.images, dataset.labels)
                    entry["eval_dataset"] = dataset.name
                    entry["eval_images"] = len(dataset)
            results[name] = entry
            accuracy = f", top-1 {entry['accuracy']:.4f} on {len(dataset)} images" if dataset is not None else ""
            log(f"bench: {name} median {latency.median_ms:.3f} ms (p90 {latency.p90_ms:.3f}, CV {latency.cv:.2f}){accuracy}")
        atomic_write_json(workdir / "bench.json", results)
        return StageOutput(artifacts={"report": "bench.json"}, metrics=results)

"""`bench` stage: latency of each exported model on the target's runtime, all models timed together in
interleaved rounds by the measurement layer (`pipeline.measure`, like every other latency of the package), and
top-1 accuracy of the exported model (the artifact we hand on) on a labelled set when one is given.

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

from pipeline.data import load_eval_dataset
from pipeline.fileio import atomic_write_json
from pipeline.measure import (
    MIN_ROUNDS,
    LatencySettings,
    example_input,
    latency_record,
    make_runner,
    onnx_flops,
    runner_for,
    time_onnx_models,
    time_runners,
)
from pipeline.measure.accuracy import accuracy_with_runner
from pipeline.preprocess import Preprocess
from pipeline.progress import log
from pipeline.runtimes import OnnxRuntimeRunner, holds_qdq, judged_as_written
from pipeline.stage import Stage, StageOutput

BENCH_ROUNDS = MIN_ROUNDS  # interleaved rounds: the project's floor for a timing claim, no decision to wait on


@dataclass(frozen=True)
class BenchConfig:
    latency: LatencySettings  # how and where: the target's runtime, batch, threads, source; runs per round
    preprocess: dict  # what the models expect (Preprocess.to_dict())
    eval: str | None = None
    eval_limit: int | None = None
    seed: int = 0
    engines: dict = field(default_factory=dict)  # model name -> engine built by the engine stage (local TensorRT)


class BenchStage(Stage):
    name = "bench"
    # 3: Q/DQ accuracy as written for TensorRT; 4: interleaved rounds; 5: config holds LatencySettings;
    # 6: `latency` is the measurement layer's record (LATENCY_RECORD_KEYS), the pooled samples under `samples`
    version = 6

    def __init__(self, models: dict[str, Path], config: BenchConfig):
        super().__init__(config)
        self.models = {name: Path(path) for name, path in models.items()}

    def inputs(self) -> dict[str, Path]:
        return {**self.models, **{f"{name}_engine": Path(path) for name, path in self.config.engines.items()}}

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        settings = config.latency
        preprocess = Preprocess.from_dict(config.preprocess)
        example = example_input(settings, preprocess, config.seed)
        dataset = load_eval_dataset(config.eval, preprocess, config.eval_limit) if config.eval else None
        if settings.source == "proxy":
            log(
                f"[yellow]bench: latency by proxy: onnxruntime on this machine stands in for {settings.proxy_for}[/yellow]"
            )
        label = f"bench: {len(self.models)} model(s), {settings.rounds} interleaved rounds"
        results = {}
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-bench-") as folder:
            runners = {name: self._runner(name, path, Path(folder)) for name, path in self.models.items()}
            if settings.source == "remote":
                timed = time_onnx_models(self.models, settings, example, settings.rounds, label=label)
            else:
                timed = time_runners(runners, settings, example, settings.rounds, label=label)
            for name, path in self.models.items():
                results[name] = self._entry(name, path, runners[name], timed[name], settings, dataset)
        atomic_write_json(workdir / "bench.json", results)
        return StageOutput(artifacts={"report": "bench.json"}, metrics=results)

    def _runner(self, name: str, path: Path, folder: Path):
        settings, engines = self.config.latency, self.config.engines
        if settings.source == "local" and settings.runtime == "tensorrt":
            if name in engines:
                return make_runner("tensorrt", Path(engines[name]), None)
            return runner_for(settings, path, folder)  # e.g. the fp32 teacher: an engine of its own
        return make_runner("onnxruntime", path, settings.threads)  # here, or accuracy here for a remote measurement

    def _entry(self, name: str, path: Path, runner, timed: dict, settings: LatencySettings, dataset) -> dict:
        latency = latency_record(timed, settings, flops=onnx_flops(path))
        samples = {  # what the record summarises: every timed call, pooled over the rounds
            **{key: timed["pooled"][key] for key in ("mean_ms", "min_ms", "max_ms", "runs")},
            "runs_per_round": settings.runs,
            "warmup_per_round": settings.warmup,
        }
        with runner:
            # a remote figure came from the device's runtime; the local runner here only scores accuracy
            ran = (timed.get("measured_on") or {}) if settings.source == "remote" else {}
            entry = {
                "runtime": {k: ran.get(k) for k in ("runtime", "version", "runtime_requested", "host")}
                if ran
                else runner.describe(),
                "size_bytes": path.stat().st_size,
                "latency_source": settings.source,
                "proxy_for": settings.proxy_for,
                "latency": latency,
                "samples": samples,
            }
            if settings.source == "remote":
                entry["measured_on"] = timed["measured_on"]
            if dataset is not None:
                entry.update(self._accuracy(runner, path, dataset))
                entry["eval_dataset"] = dataset.name
                entry["eval_images"] = len(dataset)
        accuracy = f", top-1 {entry['accuracy']:.4f} on {len(dataset)} images" if dataset is not None else ""
        where = {"remote": f" on {settings.host}", "proxy": f" (proxy for {settings.proxy_for})"}.get(
            settings.source, ""
        )
        log(
            f"bench: {name} median {latency['median_ms']:.3f} ms{where} (p90 {latency['p90_ms']:.3f}, "
            f"CV {latency['cv']:.2f}, {settings.rounds} rounds){accuracy}"
        )
        return entry

    def _accuracy(self, runner, path: Path, dataset) -> dict:
        settings = self.config.latency
        deployed_on = "tensorrt" if settings.proxy_for == "tensorrt" else settings.runtime
        precision = "int8" if holds_qdq(path) else "float"
        if isinstance(runner, OnnxRuntimeRunner) and judged_as_written(deployed_on, precision):
            with OnnxRuntimeRunner(path, threads=settings.threads, optimize_graph=False) as as_written:
                return {
                    "accuracy": accuracy_with_runner(as_written, dataset.images, dataset.labels),
                    "accuracy_runtime": "onnxruntime, Q/DQ as written (no graph optimisation)",
                }
        return {
            "accuracy": accuracy_with_runner(runner, dataset.images, dataset.labels),
            "accuracy_runtime": runner.describe()["runtime"],
        }

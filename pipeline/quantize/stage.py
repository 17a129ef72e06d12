"""`quantize` stage: the exported fp32 ONNX model -> INT8, FP16 or binary-weight ONNX, verified with
onnxruntime against the fp32 model (output error and top-1 agreement on held-back unlabelled images,
accuracy on a labelled set when one is given) and timed beside it with the shared timing routine.

Data-free by default: calibration and binary training use the synthesis stage's transfer set; real
images only when the user passes `--calib real --images DIR`. Labelled images are only ever evaluated
on, never used to choose anything."""

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.data.transfer_set import NormalisedImages, TransferSet
from pipeline.errors import PipelineError
from pipeline.export import export_onnx
from pipeline.fileio import atomic_write_json
from pipeline.kd import FeatureKDSettings, feature_kd
from pipeline.measure import LatencySettings, example_input, time_onnx_models
from pipeline.preprocess import preprocess_from_onnx
from pipeline.progress import log
from pipeline.quantize import binary
from pipeline.quantize.calibration import (
    CALIBRATION_SOURCES,
    CalibrationImages,
    load_calibration_images,
    normalised,
    real_images,
)
from pipeline.quantize.cpu_isa import detect_cpu_isa
from pipeline.quantize.fp16 import convert_fp16
from pipeline.quantize.int8 import (
    Int8Settings,
)
from pipeline.quantize.int8_model import DEFAULT_MAX_ACCURACY_DROP, quantize_model_int8
from pipeline.quantize.packed import save_binary_checkpoint
from pipeline.quantize.verify import ONNXRUNTIME_KERNELS, QDQ_AS_WRITTEN, logits, output_error
from pipeline.runtimes import judged_as_written
from pipeline.stage import Stage, StageOutput, optional_field
from pipeline.teacher_spec import TeacherSpec

QUANTIZED_PRECISIONS = ("int8", "fp16", "binary")
MAX_REAL_IMAGES = 20_000  # binary KD on --images: at most this many (held as float32)


@dataclass(frozen=True)
class QuantizeConfig:
    precision: str  # int8 | fp16 | binary
    runtime: str  # the target's runtime: onnxruntime (CPU formats, chosen by measurement) or tensorrt (S8S8 QDQ)
    latency: LatencySettings = field(default_factory=LatencySettings)
    calib: str = "synthetic"  # synthetic (transfer set) | real (--images)
    int8: Int8Settings = field(default_factory=Int8Settings)
    images: str | None = None  # real images for --calib real (unlabelled use)
    calib_images: int = 512
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP  # points of top-1
    binary_training: FeatureKDSettings = field(default_factory=lambda: FeatureKDSettings(iterations=3000))
    binary_coverage: float = 0.9  # at least this share of the binarisable weights becomes binary (binary.py)
    eval: str | None = None  # labelled set, reported only
    eval_limit: int | None = None
    seed: int = 0
    model: TeacherSpec = field(default_factory=TeacherSpec)
    int8_format: str | None = optional_field()  # the format the budget search measured fastest (else: time them)
    # input values the binary model's BatchNorm re-estimation averages over (binary.reestimate_batchnorm's default)
    binary_bn_values: int | None = optional_field()

    def __post_init__(self):
        if self.precision not in QUANTIZED_PRECISIONS:
            raise PipelineError(
                f"unknown precision {self.precision!r}; choose one of fp32, {', '.join(QUANTIZED_PRECISIONS)}"
            )
        if self.calib not in CALIBRATION_SOURCES:
            raise PipelineError(
                f"unknown calibration source {self.calib!r}; choose one of {', '.join(CALIBRATION_SOURCES)}"
            )
        if not 0 <= self.max_accuracy_drop < 100:
            raise PipelineError(f"--max-accuracy-drop is in points (0-100), got {self.max_accuracy_drop}")
        if not 0 < self.binary_coverage <= 1:
            raise PipelineError(
                f"--binary-coverage is a fraction of the binarisable weights (0-1], got {self.binary_coverage}"
            )


class QuantizeStage(Stage):
    name = "quantize"
    version = 2  # 2: TensorRT-bound INT8 judged by its Q/DQ graph as written; equal calibration batches

    def __init__(self, onnx_path: Path, model_path: Path | None, transfer_set: Path | None, config: QuantizeConfig):
        super().__init__(config)
        self.onnx_path = Path(onnx_path)
        self.model_path = Path(model_path) if model_path is not None else None
        self.transfer_set = Path(transfer_set) if transfer_set is not None else None
        if config.precision == "binary" and self.model_path is None:
            raise PipelineError("binary weights are trained from the PyTorch checkpoint; none was given")
        if config.calib == "synthetic" and self.transfer_set is None:
            raise PipelineError(
                "synthetic calibration needs a transfer set (run `synthesize` first) or --calib real --images DIR"
            )

    def inputs(self) -> dict[str, Path]:
        inputs = {"onnx": self.onnx_path}
        if self.config.precision == "binary":
            inputs["model"] = self.model_path
        if self.config.calib == "synthetic":
            inputs["transfer_set"] = self.transfer_set
        return inputs

    def run(self, workdir: Path) -> StageOutput:
        config = self.config
        preprocess = _onnx_preprocess(self.onnx_path, self.model_path, config.model)
        images = load_calibration_images(
            config.calib,
            preprocess,
            transfer_set=self.transfer_set,
            images=config.images,
            count=config.calib_images,
            seed=config.seed,
        )
        log(f"quantize: {config.precision} for {config.runtime}; calibration on {images.description}")
        out = workdir / "model.onnx"
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-quantize-") as scratch:
            scratch = Path(scratch)
            if config.precision == "fp16":
                convert_fp16(self.onnx_path, out)
                details = {"format": "fp16 (float32 inputs/outputs)"}
            elif config.precision == "int8":
                details = self._int8(self.onnx_path, out, images, preprocess, scratch, format_name=config.int8_format)
            else:
                details = self._binary(images, preprocess, workdir, scratch, out)
            verification = self._verify(out, images, preprocess)
        metrics = {
            "precision": config.precision,
            "runtime": config.runtime,
            "calibration": images.source,
            "calibration_images": len(images.calibration),
            "calibration_method": config.int8.method if config.precision != "fp16" else None,
            "size_bytes": out.stat().st_size,
            "fp32_size_bytes": self.onnx_path.stat().st_size,
            "size_ratio": out.stat().st_size / self.onnx_path.stat().st_size,
            **details,
            **verification,
        }
        atomic_write_json(workdir / "quantize.json", metrics)
        artifacts = {"model": "model.onnx", "report": "quantize.json"}
        if config.precision == "binary":
            artifacts["binary_weights"] = "binary_weights.pt"
        return StageOutput(artifacts=artifacts, metrics=metrics)

    def _int8(self, fp32: Path, out: Path, images: CalibrationImages, preprocess, scratch: Path, **how) -> dict:
        """The public INT8 technique with this stage's runtime, INT8 settings, timing and accuracy budget."""
        config = self.config
        return quantize_model_int8(
            fp32,
            out,
            images,
            preprocess,
            scratch,
            runtime=config.runtime,
            settings=config.int8,
            latency=config.latency,
            max_accuracy_drop=config.max_accuracy_drop,
            **how,
        )

    # --- binary weights ----------------------------------------------------------------------------
    def _binary(self, images: CalibrationImages, preprocess, workdir: Path, scratch: Path, out: Path) -> dict:
        config = self.config
        loaded = config.model.load(self.model_path)
        teacher = loaded.model.eval()
        candidates = binary.binarisable_layers(teacher)
        if not candidates:
            raise PipelineError(f"{self.model_path.name} has no layers between its first and last to binarise")
        data = self._training_images(preprocess)
        damage = binary.layer_damage(teacher, candidates, data, torch.from_numpy(images.held_back[:256]), config.seed)
        layers, kept = binary.split_by_damage(damage, config.binary_coverage)
        share = sum(row["weights"] for row in damage if row["layer"] in layers) / sum(row["weights"] for row in damage)
        log(
            f"quantize: binarising {len(layers)} layers ({100 * share:.1f} % of the binarisable weights; first and last "
            f"kept{', and ' + ', '.join(kept) + ' (most damage per weight)' if kept else ''}), KD on {len(data)} {images.source} images"
        )
        student = binary.binarise(copy.deepcopy(teacher), layers)
        bn_values = {"input_values": config.binary_bn_values} if config.binary_bn_values else {}
        binary.reestimate_batchnorm(student, data, seed=config.seed, **bn_values)
        training = feature_kd(
            student,
            teacher,
            data,
            config.binary_training,
            workdir / "binary-training",
            config.seed,
            label=f"binary weights: data-free KD ({len(layers)} layers)",
        )
        student = binary.materialise(student).eval()
        packed_path = workdir / "binary_weights.pt"
        packed = save_binary_checkpoint(
            packed_path,
            student,
            layers,
            arch=loaded.arch,
            preprocess=loaded.preprocess,
            num_classes=loaded.num_classes,
            metadata=loaded.metadata,
        )
        exact = _reload_matches(packed_path, student, torch.from_numpy(images.held_back[:64]))
        fp32_binary = scratch / "binary-fp32.onnx"
        export_onnx(student, loaded.preprocess, fp32_binary)
        details = self._int8(fp32_binary, out, images, preprocess, scratch, repair_allowed=False)
        details.update(
            binarised_layers=layers,
            kept_layers=kept,
            binary_coverage=config.binary_coverage,
            binarised_weight_share=share,
            layer_damage=damage,
            binarised_bytes=binary.packed_bytes(packed),
            binarised_fp32_bytes=binary.fp32_bytes(packed),
            packed_file_bytes=packed_path.stat().st_size,
            packed_reload_exact=exact,
            training=training,
        )
        log(
            f"quantize: binarised layers {binary.fp32_bytes(packed) / 1e3:.1f} kB fp32 -> "
            f"{binary.packed_bytes(packed) / 1e3:.1f} kB packed ({binary.fp32_bytes(packed) / binary.packed_bytes(packed):.1f}x)"
        )
        return details

    def _training_images(self, preprocess):
        """KD data for the binary weights: the whole transfer set (converted per batch) or the real images."""
        config = self.config
        if config.calib == "real":
            return torch.from_numpy(real_images(config.images, preprocess, MAX_REAL_IMAGES, config.seed))
        pool = TransferSet.load(self.transfer_set)
        return NormalisedImages(
            pool.pixels, lambda pixels: torch.from_numpy(normalised(pixels, preprocess)), torch.device("cpu")
        )

    # --- verification --------------------------------------------------------------------------------
    def _verify(self, out: Path, images: CalibrationImages, preprocess) -> dict:
        config = self.config
        as_written = judged_as_written(config.runtime, config.precision)
        reference = logits(self.onnx_path, images.held_back)
        error = output_error(reference, logits(out, images.held_back, as_written=as_written))
        # how the quantised model's output error and accuracy were computed (verify.py)
        result = {"output_error": error, "judged_by": QDQ_AS_WRITTEN if as_written else ONNXRUNTIME_KERNELS}
        if config.eval:
            from pipeline.data import load_eval_dataset
            from pipeline.measure.accuracy import accuracy_with_runner
            from pipeline.runtimes import OnnxRuntimeRunner

            dataset = load_eval_dataset(config.eval, preprocess, config.eval_limit)
            for name, path in (("fp32", self.onnx_path), ("quantized", out)):
                with OnnxRuntimeRunner(
                    path, threads=config.latency.threads, optimize_graph=not (as_written and name == "quantized")
                ) as runner:
                    result[f"accuracy_{name}"] = accuracy_with_runner(runner, dataset.images, dataset.labels)
            result["accuracy_drop_points"] = 100 * (result["accuracy_fp32"] - result["accuracy_quantized"])
            result["eval_images"] = len(dataset)
        accuracy = (
            f"; top-1 {result['accuracy_fp32']:.4f} -> {result['accuracy_quantized']:.4f} on {result['eval_images']} "
            "labelled images"
            if config.eval
            else ""
        )
        log(
            f"quantize: {config.precision} vs fp32{' (Q/DQ as written, as TensorRT computes it)' if as_written else ''}: "
            f"top-1 agreement {error['top1_agreement']:.4f} on {error['images']} held-back {images.source} images{accuracy}"
        )
        if as_written:
            result["output_error_onnxruntime_kernels"] = self._kernel_error(out, reference, images, error)
        if config.runtime != "onnxruntime":
            # a TensorRT model's speed exists only as an engine on its GPU: the engine stage measures it there
            log(f"quantize: latency on {config.runtime} is measured from its engine, not here")
            return result
        timed = time_onnx_models(
            {"fp32": self.onnx_path, "quantized": out},
            config.latency,
            example_input(config.latency, preprocess),
            config.latency.rounds,
            label="quantize: fp32 vs quantised latency",
        )
        result.update(
            latency_fp32_ms=timed["fp32"]["median_ms"],
            latency_quantized_ms=timed["quantized"]["median_ms"],
            speedup=timed["fp32"]["median_ms"] / timed["quantized"]["median_ms"],
        )
        result["slower_than_input"] = result["speedup"] < 1
        log(
            f"quantize: latency {result['latency_fp32_ms']:.3f} -> {result['latency_quantized_ms']:.3f} ms "
            f"({result['speedup']:.2f}x, batch {config.latency.batch})"
        )
        if result["slower_than_input"]:
            log(
                f"quantize: warning: the {config.precision} model is SLOWER than fp32 on this machine "
                f"({result['speedup']:.2f}x at batch {config.latency.batch}); handing it on because it was asked for"
            )
        return result

    @staticmethod
    def _kernel_error(out: Path, reference, images: CalibrationImages, as_written: dict) -> dict:
        """This CPU's onnxruntime integer kernels on the TensorRT-bound model, recorded beside the figure that
        judges it (the Q/DQ graph as written): the two differ where the CPU's u8s8 sums saturate."""
        isa = detect_cpu_isa()
        kernels = output_error(reference, logits(out, images.held_back))
        note = (
            "; this CPU has no VNNI/AMX, so its u8 x s8 sums can saturate: TensorRT's cannot"
            if isa.u8s8_may_saturate
            else ""
        )
        log(
            f"quantize: onnxruntime's integer kernels on this CPU ({isa.int8_class}): relative MSE "
            f"{kernels['relative_mse']:.4g} against {as_written['relative_mse']:.4g} for the Q/DQ graph as written{note}"
        )
        return {**kernels, "cpu_int8_class": isa.int8_class, "u8s8_may_saturate": isa.u8s8_may_saturate}


def _onnx_preprocess(onnx_path: Path, model_path: Path | None, spec: TeacherSpec):
    """The model's preprocessing: from its checkpoint when there is one, else guessed from the ONNX input."""
    if model_path is not None:
        return spec.load(model_path).preprocess
    return preprocess_from_onnx(onnx_path, spec.input_shape)


def _reload_matches(path: Path, model: torch.nn.Module, images: torch.Tensor) -> bool:
    """The packed 1-bit checkpoint, loaded by the project's loader, must reproduce the model exactly."""
    from pipeline.models.load import load_model

    reloaded = load_model(path).model.eval()
    with torch.no_grad():
        exact = bool(torch.equal(reloaded(images), model(images)))
    if not exact:
        raise PipelineError(f"{path.name} does not reproduce the binarised model exactly; refusing to hand it on")
    return exact

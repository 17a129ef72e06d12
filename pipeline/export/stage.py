"""`export` stage: each model to ONNX (dynamic batch, or a fixed-batch program's own batch), checked by onnx's checker and shape inference,
and compared with PyTorch on synthetic and (when given) real images; the stage fails past tolerance."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pipeline.data import load_eval_dataset
from pipeline.export import onnx_cache
from pipeline.export.onnx_export import export_onnx
from pipeline.export.parity import check_parity, raise_on_failure
from pipeline.fileio import atomic_write_json
from pipeline.progress import log
from pipeline.stage import Stage, StageOutput
from pipeline.teacher_spec import TeacherSpec


@dataclass(frozen=True)
class ExportConfig:
    opset: int = 17
    tolerance: float = 1e-4
    synthetic_samples: int = 64
    real_samples: int = 256
    eval: str | None = None  # labelled set for the "real" parity inputs
    seed: int = 0
    specs: dict[str, TeacherSpec] = field(default_factory=dict)  # loading options per model name


class ExportStage(Stage):
    name = "export"
    version = 1

    def __init__(self, models: dict[str, Path], config: ExportConfig):
        super().__init__(config)
        self.models = {name: Path(path) for name, path in models.items()}

    def inputs(self) -> dict[str, Path]:
        return dict(self.models)

    def run(self, workdir: Path) -> StageOutput:
        artifacts, metrics, reports = {}, {}, {}
        for name, path in self.models.items():
            loaded = self.config.specs.get(name, TeacherSpec()).load(path)
            onnx_path = workdir / f"{name}.onnx"
            key = self.cache_key(name)
            result = onnx_cache.fetch(key, onnx_path) if key else None
            try:
                parity = self._parity(loaded, onnx_path) if result else None
            except Exception:  # a damaged entry onnxruntime cannot even open (a fresh export is checked below)
                parity = None
            cached = parity is not None and parity.passed
            if not cached:  # no entry, or a damaged one: export as without a cache
                result = export_onnx(loaded.model, loaded.preprocess, onnx_path, opset=self.config.opset)
                parity = self._parity(loaded, onnx_path)
            reports[name] = {
                "export": result.to_dict(),
                "parity": parity.to_dict(),
                "preprocess": loaded.preprocess.to_dict(),
                "arch": loaded.arch,
                "num_classes": loaded.num_classes,
            }
            raise_on_failure(parity, name)
            if key and not cached:
                onnx_cache.store(key, result)  # only an export that passed its parity check
            source = ", from this machine's export cache" if cached else ""
            log(
                f"export: {name} -> {onnx_path.name} ({result.size_bytes / 1e6:.2f} MB, {result.exporter}{source}); "
                f"parity max |diff| {parity.max_abs_diff:.2e}, top-1 agreement {parity.top1_agreement:.4f}"
            )
            if result.fixed_batch is not None:
                log(
                    f"export: note: {name} takes a fixed batch of {result.fixed_batch} (its graph was exported or "
                    "traced at that batch); its ONNX keeps that batch and runs larger ones as several (export it "
                    "with a dynamic batch, torch.export.Dim, for one that does not)"
                )
            artifacts[name] = onnx_path.name
            metrics[name] = {
                "size_bytes": result.size_bytes,
                "node_count": result.node_count,
                "exporter": result.exporter,
                "from_cache": cached,  # the same checkpoint, loading and exporter exported before
                "opset": result.opset,
                "fixed_batch": result.fixed_batch,  # None: dynamic batch
                "parity_max_abs_diff": parity.max_abs_diff,
                "parity_top1_agreement": parity.top1_agreement,
                "preprocess": loaded.preprocess.to_dict(),
                "arch": loaded.arch,
                "name": loaded.name,  # the arch, or the class of an unregistered model
                "parameters": sum(p.numel() for p in loaded.model.parameters()),
            }
        atomic_write_json(workdir / "parity.json", reports)
        artifacts["parity_report"] = "parity.json"
        return StageOutput(artifacts=artifacts, metrics=metrics)

    def cache_key(self, name: str) -> str | None:
        """The export cache's key for model `name` (export/onnx_cache.py), None without a cache or its file."""
        path = self.models[name]
        if onnx_cache.cache_folder() is None or not path.is_file():
            return None
        spec = asdict(self.config.specs.get(name, TeacherSpec()))
        return onnx_cache.export_key(path, {"spec": spec, "stage_version": self.version}, self.config.opset)

    def cached_models(self) -> int:
        """How many of the models this machine's export cache already holds (the plan counts no export for them)."""
        return sum(1 for name in self.models if (key := self.cache_key(name)) and onnx_cache.holds(key))

    def _parity(self, loaded, onnx_path: Path):
        return check_parity(loaded.model, onnx_path, self._parity_inputs(loaded), tolerance=self.config.tolerance)

    def _parity_inputs(self, loaded) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.config.seed)
        inputs = {"synthetic": torch.randn(self.config.synthetic_samples, *loaded.input_shape, generator=generator)}
        if self.config.eval:
            inputs["real"] = load_eval_dataset(
                self.config.eval, loaded.preprocess, limit=self.config.real_samples
            ).images
        return inputs

"""How the search builds one candidate's model files, each cached by content in <run>/cache/search/: the fp32
checkpoint (the base without the blocks, fine-tuned and fused), its ONNX export, and its fp16 or INT8 form
(the quantize stage's own INT8 technique). A mixin of `SearchStage`, which holds the bases, the pool and the
settings these read."""

import copy
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.drop import recover
from pipeline.export import export_onnx
from pipeline.fileio import atomic_write_json, sha256_file, sha256_json
from pipeline.kd import FeatureKDSettings
from pipeline.measure import LatencySettings
from pipeline.models.checkpoint import save_checkpoint
from pipeline.search.space import Candidate
from pipeline.training import freeze

# a base's short list: the fewest blocks predicted to meet the budget, one more, and one fewer when near the line
FINE_TUNES_PER_BASE = 3


class CandidateModels:
    # --- building one candidate (each piece cached by content) ----------------------------------------
    def _recovery(self, base: str) -> FeatureKDSettings:
        """One candidate's fine-tune: with `fine_tune_seconds`, an equal share of them for each of the
        FINE_TUNES_PER_BASE a base's short list usually holds, or of as many as it holds when that is more
        (`fine_tunes[base]`): the base's fine-tunes together keep to their seconds. The share is part of the cache
        key, so a second search with another budget reuses a fine-tune only where both lists held at most
        FINE_TUNES_PER_BASE block sets for that base (the wall-time bound comes first)."""
        seconds = self.config.fine_tune_seconds
        if seconds is None:
            return self.config.recovery
        share = max(FINE_TUNES_PER_BASE, self.fine_tunes.get(base, 0))
        return replace(self.config.recovery, seconds=round(seconds / share, 1))

    def _key(self, base: str, dropped: tuple[str, ...], *extra) -> str:
        config = self.config
        return sha256_json(
            {
                "model": sha256_file(self.bases[base][0]),
                "dropped": list(dropped),
                "pool": self.pool_hash,
                "recovery": self._recovery(base).to_dict() if dropped else None,
                "recoverability": config.recoverability.to_dict() if dropped else None,
                "held_out": config.held_out,
                "seed": config.seed,
                "extra": extra,
            }
        )[:16]

    def _checkpoint(self, candidate: Candidate) -> Path:
        """The fp32 PyTorch model: the base itself, or the base without the blocks, fine-tuned and fused."""
        base, dropped = candidate.base, candidate.dropped
        if not dropped:
            return self.bases[base][0]
        path = self.cache / "search" / f"{base}-drop{len(dropped)}-{self._key(base, dropped)}.pt"
        if path.is_file():
            return path
        loaded = self.bases[base][1]
        config = self.config
        feature_teacher = freeze(copy.deepcopy(loaded.model).to(self.device))
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-search-") as scratch:
            fused = recover(
                feature_teacher,
                dropped,
                self._train_images(),
                self._recovery(base),
                Path(scratch),
                input_shape=loaded.input_shape,
                check_images=torch.from_numpy(self.held_images[:64]),
                seed=config.seed,
                label=f"search: fine-tune {base} without {len(dropped)} block(s)",
            ).model
        save_checkpoint(
            path,
            fused,
            arch=loaded.arch or "unknown",
            preprocess=loaded.preprocess,
            num_classes=loaded.num_classes,
            metadata={"dropped_blocks": list(dropped), "searched_from": base, "data_free": True},
        )
        return path

    def _fp32_onnx(self, base: str, dropped: tuple[str, ...]) -> Path:
        # exported for timing (export/onnx_export.py): every candidate and the teacher alike, each in a fraction of
        # torch.export's seconds; the export stage exports the chosen model with the default exporter
        key = self._key(base, dropped, "timing-export")
        path = self.cache / "search" / f"{base}-drop{len(dropped)}-{key}-fp32.onnx"
        if not path.is_file():
            from pipeline.models.load import load_model

            checkpoint = self._checkpoint(Candidate(base, dropped, "fp32")) if dropped else self.bases[base][0]
            loaded = load_model(checkpoint) if dropped else self.bases[base][1]
            with tempfile.TemporaryDirectory(prefix="edge-pipeline-search-") as scratch:
                export_onnx(
                    freeze(loaded.model).cpu(), loaded.preprocess, Path(scratch) / "model.onnx", exporter="timing"
                )
                shutil.move(Path(scratch) / "model.onnx", path)  # into place only once complete
        return path

    def _precision_onnx(
        self, base: str, dropped: tuple[str, ...], precision: str, fp32: Path, int8_format: str | None = None
    ) -> Path:
        if precision == "fp32":
            return fp32
        path = fp32.with_name(fp32.name.replace("-fp32.onnx", f"-{precision}-c{self.config.calib_images}.onnx"))
        if path.is_file():
            return path
        with tempfile.TemporaryDirectory(prefix="edge-pipeline-search-") as scratch:
            scratch = Path(scratch)
            if precision == "fp16":
                from pipeline.quantize import convert_fp16

                convert_fp16(fp32, scratch / "model.onnx")
            else:
                details = self._int8(fp32, scratch, int8_format)
                atomic_write_json(path.with_suffix(".int8.json"), {"format": details["format"]["name"]})
            shutil.move(scratch / "model.onnx", path)
        return path

    def _int8(self, fp32: Path, scratch: Path, format_name: str | None) -> dict:
        """The quantize stage's own INT8 technique (same formats, calibration and checks), so the handed-on model is
        the one that was searched; `format_name` (the winner on the full model) skips timing the formats again."""
        from pipeline.quantize import Int8Settings, load_calibration_images, quantize_model_int8

        images = load_calibration_images(
            "synthetic",
            self.preprocess,
            transfer_set=self.transfer_set_path,
            count=self.config.calib_images,
            seed=self.config.seed,
        )
        return quantize_model_int8(
            fp32,
            scratch / "model.onnx",
            images,
            self.preprocess,
            scratch,
            runtime=self._deployed_runtime(),
            settings=Int8Settings(),
            latency=replace_rounds(self.config.latency),
            format_name=format_name,
        )

    def _deployed_runtime(self) -> str:
        return "tensorrt" if self.config.latency.proxy_for == "tensorrt" else self.config.latency.runtime


def replace_rounds(latency: LatencySettings) -> LatencySettings:
    """INT8 format timing inside the search: a few short rounds are enough to rank formats."""
    return replace(latency, rounds=min(latency.rounds, 10))

"""What a budget search will cost, planned from the unit costs measured before any stage runs (costs.py).

The search (search/stage.py) measures each base model once (a latency table, the PRACTISE order's adapter
probes, the full model at each precision), then builds and fine-tunes a short list of candidates near the
budget line, estimates each one's accuracy on held-back synthetic images and times them all in one session.
Which candidates make the list is known only after the tables, so this is an estimate: per base, about two and a
half drop counts per precision, PLANNED_FINE_TUNES distinct block sets fine-tuned. The probes and the fine-tunes are
bounded by their seconds (drop's, split as drop splits them) and are the elastic part a tight budget scales
(recipes/fit.py); the rest is fixed by what must be measured. Model costs are the teacher's, an upper bound
for a student base (the student's fine-tune step is not probed).
"""

import math

from pipeline.drop.latency_table import round_s, session_estimate_s
from pipeline.measure import LatencySettings

# distinct block sets one base's short list fine-tunes: the drop counts next to the line for fp32 and fp16
# (they share theirs) and int8's own (the resnet20 jetson builds: 4 per base at 10e3d0b, 5 and 4 at 72a31a3);
# their seconds are bounded all together, so this count only matters when fine-tunes end by their iterations
PLANNED_FINE_TUNES = 4
# the fewest drops predicted to meet the budget, one more, and sometimes one fewer (search/space.py shortlist):
# 15 candidates for 2 bases x 3 precisions at 72a31a3
CANDIDATES_PER_PRECISION = 2.5
CPU_INT8_FORMATS = 2  # formats an onnxruntime target times on the full model (quantize/int8.py cpu_candidates)


def plan_search(config: dict, costs, searchable: dict | None, eval_images: int | None, pool: int | None) -> dict:
    """`searchable`: {base: {"blocks", "classes"} or None} for the teacher and (when the recipe trains one) the
    student; `pool`: the transfer set's images when this plan's synthesize makes them."""
    if not searchable or costs.drop_step_s <= 0:
        return {"name": "search", "steps": None, "unit": None, "planned_s": None}
    latency = LatencySettings(**config["latency"])
    precisions = list(config["precisions"])
    probing, recovery = config["recoverability"], config["recovery"]
    held = min(config["held_out"], max(1, pool // 5)) if pool else config["held_out"]

    def images_s(count: int) -> float:  # a no-grad PyTorch pass over `count` images at the teacher's cost
        return count * costs.forward_ms_per_image / 1000

    def onnx_images_s(count: int) -> float:  # the same in onnxruntime: estimates and labelled accuracy run there
        return count * (costs.ort_ms_per_image or costs.forward_ms_per_image) / 1000

    int8_s = images_s(config["calib_images"]) if "int8" in precisions else 0.0  # one calibration pass
    formats = CPU_INT8_FORMATS if latency.runtime == "onnxruntime" and latency.proxy_for != "tensorrt" else 1
    timing_round = round_s(latency, costs.latency_ms)
    bases_s = costs.export_s + onnx_images_s(held)  # the teacher's export and its logits on the held-back images
    candidates_s = probes_s = tunes_s = 0.0
    candidates = 0
    for base, facts in searchable.items():
        blocks = facts["blocks"] if facts else 0
        if base != "teacher":  # the teacher's fp32 export is counted above (the stage exports it first)
            bases_s += costs.export_s
        bases_s += _precisions_s(precisions, costs.export_s, int8_s)
        if "int8" in precisions and formats > 1:
            bases_s += session_estimate_s(latency, costs.latency_ms, formats)  # choosing the format, once
        bases_s += len(precisions) * config["speedup_rounds"] * timing_round
        if blocks:
            bases_s += (facts["classes"] + 1) * (session_estimate_s(latency, costs.latency_ms, 1) + costs.export_s)
            probes = blocks * (blocks + 1) // 2  # the whole order: each step probes every block left
            probe_s = probes * (probing["steps"] * costs.drop_step_s + images_s(probing["eval_images"]))
            if probing.get("seconds") is not None:
                probe_s = min(probe_s, probing["seconds"])
            probes_s += probe_s
            tune_s = PLANNED_FINE_TUNES * recovery["iterations"] * costs.drop_step_s
            if (
                config.get("fine_tune_seconds") is not None
            ):  # the base's fine-tunes together (search/candidate_models.py)
                tune_s = min(tune_s, config["fine_tune_seconds"])
            tunes_s += tune_s
        # a base without droppable blocks short-lists itself once per precision
        count = math.ceil(CANDIDATES_PER_PRECISION * len(precisions)) if blocks else len(precisions)
        candidates += count
        # each: its export (the fp32 ones of a block set are shared; counted each, an upper bound), its precision
        # and its label-free estimate on the held-back images
        candidates_s += count * (costs.export_s + onnx_images_s(held))
        candidates_s += count / len(precisions) * _precisions_s(precisions, costs.export_s, int8_s)
    # one interleaved session of the short list and the teacher (a too-busy one is measured again: not planned)
    timing_s = (candidates + 1) * latency.rounds * timing_round
    calibration_s = candidates * onnx_images_s(eval_images or 0) if config.get("eval") else 0.0
    phases = {
        "bases": bases_s + probes_s,
        "candidates": candidates_s + tunes_s,
        "timing": timing_s,
        "calibration": calibration_s,
    }
    return {
        "name": "search",
        "steps": candidates,
        "unit": f"candidates (~{len(searchable)} base(s), ~{PLANNED_FINE_TUNES} fine-tunes each)",
        "planned_s": round(sum(phases.values()), 1),
        "elastic_s": round(probes_s + tunes_s, 1),
        "phases_s": {name: round(seconds, 1) for name, seconds in phases.items()},
    }


def _precisions_s(precisions: list[str], export_s: float, int8_s: float) -> float:
    """The full model at each precision: fp16 a conversion (about an export's cost), int8 a calibration."""
    return sum({"fp16": export_s, "int8": int8_s}.get(precision, 0.0) for precision in precisions)

"""The plan as people read it: its log lines before the work, and the stages as they ran beside it (manifest)."""

from pipeline.progress import duration


def describe_plan(plan: dict) -> list[str]:
    """The plan as log lines: one per stage, then the total (and what it leaves out)."""
    if not plan["stages"]:
        return ["plan: every stage has finished; nothing to estimate"]
    lines = []
    for stage in plan["stages"]:
        if stage["planned_s"] is None:
            lines.append(f"plan: {stage['name']}: not estimated yet")
            continue
        steps = f"~{stage['steps']} {stage['unit']}, " if stage.get("steps") else ""
        note = f" ({stage['note']})" if stage.get("note") else ""
        lines.append(f"plan: {stage['name']}: {steps}~{duration(stage['planned_s'])}{note}")
    unplanned = f" + {', '.join(plan['unplanned'])} (not estimated yet)" if plan["unplanned"] else ""
    costs = plan["unit_costs"]
    lines.append(
        f"plan: ETA {duration(plan['planned_s'])}{unplanned}, from costs measured here "
        f"{'in ' + format(costs['probe_s'], '.1f') + ' s' if costs['probe_s'] else 'when this run began'} "
        f"({plan['cpu']}): synthesis step {costs['synthesis_step_s']:.3g} s, KD step {costs['kd_step_s']:.3g} s "
        f"(batch {costs['synthesis_batch']} / {costs['kd_batch']}, timed at {costs['synthesis_timed_batch']} / "
        f"{costs['kd_timed_batch']}), teacher "
        f"{costs['latency_ms']:.3g} ms on onnxruntime"
    )
    return lines


def actual_stages(manifest: dict, plan: dict) -> dict:
    """The plan's stages as they ran: wall time, steps and the peak memory so far from each stage's entry."""
    stages = []
    for planned in plan["stages"]:
        entry = manifest["stages"].get(planned["name"]) or {}
        metrics = entry.get("metrics") or {}
        steps = metrics.get("steps") if isinstance(metrics.get("steps"), int) else None
        if steps is None and isinstance(metrics.get("finetune"), dict):  # drop: its plan counts fine-tune iterations
            steps = metrics["finetune"].get("iterations")
        actual = {
            "name": planned["name"],
            "steps": steps,
            "wall_s": entry.get("wall_s"),
            "peak_rss_mb": entry.get("peak_rss_mb"),
        }
        if metrics.get("phase_s"):
            actual["phases_s"] = metrics["phase_s"]
        stages.append(actual)
    peaks = [s["peak_rss_mb"] for s in stages if s["peak_rss_mb"] is not None]
    return {
        "stages": stages,
        "wall_s": round(sum(s["wall_s"] or 0 for s in stages), 1),
        "peak_rss_mb": max(peaks, default=None),
        "cpu": plan["cpu"],
    }

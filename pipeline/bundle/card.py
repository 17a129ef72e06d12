"""MODEL_CARD.md, written only from the bundle manifest (so the card never says what the manifest does not)."""


def _accuracy(entry: dict) -> str:
    return ", ".join(f"{100 * value:.2f} % on {name}" for name, value in entry["accuracy"].items()) or "not evaluated"


def _latency(entry: dict) -> str:
    parts = []
    for lat in entry["latency"]:
        where = {
            "remote": f"on {lat.get('host')}",
            "proxy": f"proxy: {lat.get('runtime_used')} here for {lat.get('runtime_requested')}",
        }.get(lat.get("where"), "local")
        runtime = " ".join(str(part) for part in (lat.get("runtime_used"), lat.get("runtime_version")) if part)
        parts.append(
            f"{lat['median_ms']:.3f} ms median (p90 {lat['p90_ms']:.3f}, CV {lat['cv']:.2f}) on "
            f"{lat['target']} [{runtime}, {where}, batch {lat.get('batch')}, {lat.get('rounds')} interleaved rounds]"
        )
    return "; ".join(parts) or "not measured"


def model_card(record: dict) -> str:
    pre = record["preprocessing"]
    build = record["build"]
    lines = [
        f"# Model card: {record['name']}",
        "",
        f"Built by edge-pipeline from teacher `{build['teacher']}` "
        f"({build.get('teacher_name') or build.get('teacher_arch')}, sha256 "
        f"`{build.get('teacher_sha256')}`) with `{build.get('command')}`. Data-free: the student was trained "
        "on synthetic images made from the teacher, not on the teacher's training data.",
        "",
        "## Models",
        "",
        "| file | precision | inputs | outputs | accuracy | latency |",
        "|---|---|---|---|---|---|",
    ]
    for entry in record["models"]:
        io = lambda values: ", ".join(f"`{v['name']}` {v['dtype']} {v['shape']}" for v in values)  # noqa: E731
        lines.append(
            f"| `{entry['file']}` | {entry['precision']} | {io(entry['inputs'])} | {io(entry['outputs'])} | "
            f"{_accuracy(entry)} | {_latency(entry)} |"
        )
    lines += ["", "## Engines", ""]
    for engine in record["engines"] or [{"target": "—", "file": None, "reason": "the target runs onnxruntime"}]:
        if engine.get("file"):
            stamp = engine["stamp"]
            lines.append(
                f"- `{engine['file']}` for {engine['target']}: TensorRT {stamp.get('tensorrt_version')}, "
                f"{stamp.get('gpu_name')} (compute {stamp.get('compute_capability')}), {stamp.get('precision')}. "
                "Loads only on that TensorRT version and GPU family."
            )
        else:
            lines.append(
                f"- {engine['target']}: no engine in this bundle ({engine.get('reason')}){_device_build(engine)}"
            )
    lines += [
        "",
        "## Input",
        "",
        f"- shape (C, H, W): {pre.get('input_shape')}, layout {pre.get('layout')}, channel order "
        f"{pre.get('channel_order')}; resize the image to H x W",
        f"- pixel values divided by {pre.get('pixel_scale')}, then (x - mean) / std with mean {pre.get('mean')} "
        f"and std {pre.get('std')} per channel",
        f"- classes ({len(record['class_labels'])}): {', '.join(record['class_labels'])}",
        "",
        "## Use",
        "",
        "`python example/infer.py IMAGE` (needs onnxruntime, numpy, pillow) prints the top classes.",
        "`pipeline verify` re-checks every file's hash and re-runs the models against `reference/`.",
        "",
        "## Limits",
        "",
        "- Accuracy is what the bundle's models scored on the datasets named above, nothing else.",
        "- Latency figures hold for the named target, runtime and settings; `proxy` figures are not the device's.",
        "",
        f"Libraries at bundle time: {', '.join(f'{k} {v}' for k, v in record['libraries'].items())}.",
    ]
    return "\n".join(lines) + "\n"


def _device_build(engine: dict) -> str:
    """How to build the missing engine on the device: the build line of each TensorRT major the target allows
    (the script picks the device's), then the timing line."""
    commands = engine.get("commands") or {}
    builds = [
        f"TensorRT {name.rsplit('_', 1)[-1]}: " + (line if line.startswith("refused: ") else f"`{line}`")
        for name, line in commands.items()
        if name.startswith("build_tensorrt_")
    ]
    if not builds:
        return f"; build it on the device with `{engine['command']}`" if engine.get("command") else ""
    timing = f", then time it with `{commands['time']}`" if commands.get("time") else ""
    return f"; build it on the device with `{engine['command']}`, which runs trtexec ({'; '.join(builds)}){timing}"

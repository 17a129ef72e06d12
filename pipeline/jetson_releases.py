"""Which TensorRT runs on which JetPack, and where DLA exists (issue 23 item 6), from NVIDIA's documentation:

- "Working with DLA" (TensorRT 11.4.1 and 11.5.0 docs): TensorRT 10.7 was the last 10.x release with DLA; DLA
  was unavailable in 11.0 through 11.3; 11.4.0 had it only on Windows on ARM; 11.4.1 has it on Jetson AGX Orin
  with JetPack 7.2.2 or later, and never on Jetson Thor. Jetson Orin on JetPack 6.x must stay on a 10.x release.
- "Migrating TensorRT from 10.x to 11.x on Jetson/JetPack" (11.3.0, 11.4.1, 11.5.0 docs): JetPack is not
  supported in 11.3.0, 11.4.0 or 11.5.0; 11.4.1 is the release that supports JetPack (7.2.2 or later, on AGX
  Orin and Thor). JetPack 7 is required before any 11.x on a Jetson.
A target file lists the (JetPack, TensorRT, DLA) combinations its board runs (`[tensorrt] releases`); each is
checked against these facts when the file is read, and the engine stage refuses a DLA build no release allows.
Which board has DLA at all (AGX Orin and Xavier do; Orin Nano and Thor do not) is the file's own `dla` claim: a
copied or renamed target file is the same board, so nothing here is keyed on its name.
"""

from pipeline.versions import version_in_range, version_tuple

DLA_LAST_10 = (10, 7)  # the last 10.x release with DLA
JETPACK_11 = {(11, 4, 1): (7, 2, 2)}  # the 11.x releases that support JetPack, and the JetPack each needs
SOURCE = "NVIDIA's TensorRT docs (Working with DLA; Migrating 10.x to 11.x on Jetson/JetPack)"


def release_problem(board: str, jetpack: str, tensorrt: str, dla: bool) -> str | None:
    """Why (JetPack, TensorRT, DLA) cannot exist on `board`, by NVIDIA's documentation; None when it can."""
    trt, jp = version_tuple(tensorrt), version_tuple(jetpack)
    if trt[:1] == (11,):
        if jp[:1] and jp[0] < 7:
            return f"JetPack {jetpack} stays on TensorRT 10.x; TensorRT 11 needs JetPack 7 ({SOURCE})"
        needed = JETPACK_11.get(_padded(trt))
        if needed is None:
            supported = ", ".join(".".join(map(str, v)) for v in JETPACK_11)
            return f"TensorRT {tensorrt} supports no JetPack; on a Jetson TensorRT 11 means {supported} ({SOURCE})"
        if _padded(jp) < needed:
            return f"TensorRT {tensorrt} needs JetPack {'.'.join(map(str, needed))} or later, not {jetpack} ({SOURCE})"
    elif trt[:1] == (10,) and dla and trt[:2] > DLA_LAST_10:
        return f"TensorRT {tensorrt} has no DLA: 10.7 was the last 10.x release with it ({SOURCE})"
    return None


def dla_refusal(board: str, releases: tuple, dla_core: int | None, low: str | None, high: str | None) -> str | None:
    """One line when the target asks for a DLA core that none of its releases within its TensorRT range [low, high]
    can run, and the GPU-only build that would work instead; None when one can."""
    if dla_core is None or not releases:
        return None
    usable = [r for r in releases if r.get("dla") and version_in_range(r["tensorrt"], low, high)]
    if usable:
        return None
    listed = "; ".join(f"JetPack {r['jetpack']} -> TensorRT {r['tensorrt']}" for r in releases)
    return (
        f"{board} asks for DLA core {dla_core}, but none of its releases in range runs DLA ({listed}; {SOURCE}): "
        "remove dla_core to build for the GPU, or use a JetPack/TensorRT pair that has DLA"
    )


def _padded(parts: tuple[int, ...]) -> tuple[int, ...]:
    return (tuple(parts) + (0, 0, 0))[:3]

"""Peak memory of the data-free stages at 224 px (issue 22 item 8): `pipeline distill` (synthesize, then
distill) on a torchvision ResNet-34 state_dict (random weights, 1000 classes) at the quick budget, bounded by
`--steps 2` (one synthesis step, one distill step of 8 KD steps: the steps that hold the most memory, at the
batch the build chooses). Peak RSS is `ru_maxrss` of the command's process and its children.

    python benchmarks/peak_memory.py     # -> benchmarks/results/peak_memory.json
"""

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from datafree import machine  # noqa: E402

WORK = ROOT / "runs" / "bench-memory"


def main() -> None:
    import torch
    import torchvision

    WORK.mkdir(parents=True, exist_ok=True)
    teacher = WORK / "r34.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet34().state_dict(), teacher)
    out = WORK / "run"
    shutil.rmtree(out, ignore_errors=True)
    args = ["distill", "--teacher", str(teacher), "--steps", "2", "--out", str(out), "--eval", "none"]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    wall = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    manifest = json.loads((out / "manifest.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    row = {
        "command": "pipeline " + " ".join(args).replace(str(WORK) + "/", ""),
        "teacher": "torchvision resnet34 state_dict, 3x224x224, 1000 classes (random weights)",
        "student": manifest["stages"]["distill"]["config"]["student"],
        "batch": manifest["budget"]["batch_size"],
        "memory_note": manifest.get("memory_note"),
        "peak_rss_mb": round(peak_mb),
        "limit_mb": 6 * 1024,
        "wall_s": round(wall, 1),
        "commit": commit.stdout.strip(),
        "cpu": machine()["cpu"],
    }
    (ROOT / "benchmarks" / "results" / "peak_memory.json").write_text(json.dumps({"rows": [row]}, indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()

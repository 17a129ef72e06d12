#!/bin/bash
# One A/B run of datafree-ablation.md: the product end to end with one torch thread.
# usage: benchmarks/results/datafree-ablation-run.sh NAME BUDGET SEED [pipeline build args...]
# appends one line (accuracy, student steps, synthetic agreement, pool class counts, wall s, curve) to
# runs/ablation/results.txt
name=$1; budget=$2; seed=$3; shift 3
cd "$(dirname "$0")/../.."
out=runs/ablation/$name-s$seed
rm -rf "$out"
export OMP_NUM_THREADS=${THREADS:-1}
start=$(date +%s)
.venv/bin/python -m pipeline.cli build --teacher embedded:${TEACHER:-lenet5-fmnist} --student ${STUDENT:-lenet5-half} \
  --budget "$budget" --seed "$seed" --eval fmnist --out "$out" --json --quiet "$@" > "$out.out" 2> "$out.err"
rc=$?
.venv/bin/python - "$out" "$name-s$seed" "$rc" "$(( $(date +%s) - start ))" <<'PY' >> runs/ablation/results.txt
import json, sys
out, name, rc, wall = sys.argv[1:]
try:
    stages = json.load(open(out + "/manifest.json"))["stages"]
    acc = stages["bench"]["metrics"]["student"]["accuracy"]
    d = stages["distill"]["metrics"]
    curve = [round(p["accuracy"] * 100, 1) for p in d.get("accuracy_curve", [])]
    print(name, "acc", round(acc * 100, 2), "steps", d.get("student_steps"), "agree", d.get("synthetic_top1_agreement"),
          "counts", d["transfer_set"]["teacher_class_counts"], "wall", wall, curve)
except Exception as error:
    print(name, "FAILED rc", rc, error)
PY

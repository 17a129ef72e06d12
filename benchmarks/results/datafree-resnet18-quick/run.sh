#!/usr/bin/env bash
# usage: run.sh NAME [ARGS]: one quick-budget (default) data-free build of the torchvision resnet18 pair, accuracy
# on the validation split (fmnist-val); run from the repository root, one run at a time. What ran these rows.
set -u
name=$1; shift
out=runs/exp-r18-quick/$name
rm -rf "$out"
.venv/bin/pipeline build --teacher runs/bench-scale/teachers/resnet18-fmnist.pt --target cpu --budget quick \
  --eval fmnist-val --seed 0 --out "$out" "$@"

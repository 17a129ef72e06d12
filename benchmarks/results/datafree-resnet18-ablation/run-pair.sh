#!/usr/bin/env bash
# usage: run-pair.sh TEACHER NAME [ARGS]: run.sh's 5-minute build on the validation split for another teacher
# (the embedded pairs: embedded:resnet20-fmnist, embedded:lenet5-fmnist); one run at a time.
set -u
teacher=$1; name=$2; shift 2
out=runs/exp-r18/$name
rm -rf "$out"
.venv/bin/pipeline build --teacher "$teacher" --target cpu --budget 5m --eval fmnist-val --seed 0 --out "$out" "$@"

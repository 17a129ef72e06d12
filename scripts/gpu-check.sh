#!/bin/sh
# The project's GPU check (issue 23), from a checkout with no install: the tests marked `gpu`, a CUDA distill beside
# the same on the CPU, a 1-process torchrun with NCCL, and the embedded teacher's latency with and without a CUDA
# graph, in one JSON (scripts/gpu_check.py says what each figure is). Usage: scripts/gpu-check.sh [OUT.json]
set -e
cd "$(dirname "$0")/.."
PYTHONPATH=. exec "${PYTHON:-python3}" scripts/gpu_check.py --out "${1:-gpu-check.json}"

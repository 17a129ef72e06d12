# syntax=docker/dockerfile:1
# edge-pipeline with TensorRT, on NVIDIA's NGC base images (CUDA, cuDNN, TensorRT and its Python bindings
# come from the base image; run with the NVIDIA Container Toolkit).
#
# x86-64 with a discrete NVIDIA GPU (default: the NGC TensorRT image, TensorRT 10):
#   docker build -t edge-pipeline .
#   docker run --rm --gpus all -v "$PWD/runs:/workspace/runs" edge-pipeline build --target x86-gpu
#
# Jetson (JetPack 6 / L4T r36: TensorRT 10.3; build on the device, or with buildx --platform linux/arm64).
# PyPI's aarch64 torch has no CUDA: JETSON_INDEX points pip at NVIDIA's Jetson wheels.
#   docker build -t edge-pipeline:jetson \
#     --build-arg BASE_IMAGE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 \
#     --build-arg JETSON_INDEX=https://pypi.jetson-ai-lab.dev/jp6/cu126 .
#   docker run --rm --runtime nvidia -v "$PWD/runs:/workspace/runs" edge-pipeline:jetson build --target jetson-orin-nano
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:24.12-py3

# ---- stage 1: the wheel (pure Python, so any Python image builds it; nothing heavy is installed here) ----
FROM python:3.12-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN python -m pip install --no-cache-dir build==1.2.2 \
    && python -m build --wheel --outdir /wheels

# ---- stage 2: the runtime, on NVIDIA's image ----
FROM ${BASE_IMAGE}
ARG JETSON_INDEX=""
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPELINE_TARGETS_DIR=/opt/edge-pipeline/targets
COPY targets /opt/edge-pipeline/targets
COPY constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /tmp/wheels
# [trt]: tensorrt is already satisfied by the base image's bindings; pycuda builds against its CUDA.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3013 wants pinned versions: this installs our own wheel by path, within pyproject.toml's ranges; on x86 the
# tested torch/torchvision of constraints.txt, on Jetson the builds NVIDIA's index serves for that JetPack.
# hadolint ignore=DL3013
RUN wheel="$(ls /tmp/wheels/edge_pipeline-*.whl)" \
    && constraints=(-c /tmp/constraints.txt) \
    && if [ -n "$JETSON_INDEX" ]; then constraints=(); fi \
    && python3 -m pip install --no-cache-dir "${constraints[@]}" ${JETSON_INDEX:+--extra-index-url "$JETSON_INDEX"} "${wheel}[trt]" \
    && rm -rf /tmp/wheels /tmp/constraints.txt \
    && python3 -c "import tensorrt; print('tensorrt', tensorrt.__version__)" \
    && pipeline --help > /dev/null

WORKDIR /workspace
ENTRYPOINT ["pipeline"]
CMD ["--help"]

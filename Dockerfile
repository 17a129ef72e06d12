# syntax=docker/dockerfile:1
# edge-pipeline on an NVIDIA GPU host, on NVIDIA's NGC TensorRT image (CUDA, cuDNN and TensorRT 10
# with its Python bindings already installed). Run with the NVIDIA Container Toolkit:
#   docker build -t edge-pipeline .
#   docker run --rm --gpus all -v "$PWD/runs:/workspace/runs" edge-pipeline build --budget quick
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:24.11-py3
FROM ${BASE_IMAGE}

# NGC convention: let the container toolkit expose every GPU and the compute libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPELINE_TARGETS_DIR=/opt/edge-pipeline/targets

WORKDIR /opt/edge-pipeline
# Dependencies first, so code edits do not invalidate the (large) torch layer.
COPY pyproject.toml README.md ./
RUN mkdir -p pipeline && touch pipeline/__init__.py \
    && python3 -m pip install --no-cache-dir . \
    && python3 -m pip uninstall -y edge-pipeline
COPY pipeline ./pipeline
COPY targets ./targets
# TensorRT comes from the base image; the [trt] extra would pull a second copy from PyPI.
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && python3 -c "import tensorrt, pipeline; print('tensorrt', tensorrt.__version__)"

WORKDIR /workspace
ENTRYPOINT ["pipeline"]
CMD ["--help"]

# Two commands do all set-up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install dataset sshd qemu format clean

demo: install dataset
	$(VENV)/bin/pipeline build --target cpu
	@echo "Results: runs/resnet20-fmnist-cpu/ (manifest.json, export/*.onnx, bench/bench.json)"

test: install dataset sshd qemu
	$(PY) -m pytest

install: $(STAMP)

# pyproject.toml gives version ranges; constraints.txt pins torch/torchvision to the releases served from local disk.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST is the evaluation set of the embedded teachers; installed when we are root.
dataset:
	@if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || [ -n "$$FASHION_MNIST_DIR" ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "note: Fashion-MNIST not installed (sudo apt-get install dataset-fashion-mnist); accuracy will not be measured"; \
	fi

# The remote-harness tests start a real sshd on 127.0.0.1 (OpenSSH server); installed when we are root.
sshd:
	@if [ -x /usr/sbin/sshd ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server; \
	else \
		echo "note: OpenSSH server not installed (sudo apt-get install openssh-server); the SSH harness tests will skip"; \
	fi

# One INT8 test runs onnxruntime under qemu's Zen 1 CPU model (AVX2, no VNNI) to show that a TensorRT-bound
# model's reported error does not depend on the CPU's instruction set; installed when we are root.
qemu:
	@if command -v qemu-x86_64 >/dev/null || [ "$$(uname -m)" != x86_64 ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user; \
	else \
		echo "note: qemu-user not installed (sudo apt-get install qemu-user); the emulated-CPU INT8 test will skip"; \
	fi

# The house style (pyproject.toml [tool.ruff]; tests/test_style.py checks it).
format: install
	$(VENV)/bin/ruff format pipeline tests benchmarks
	$(VENV)/bin/ruff check --fix pipeline tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

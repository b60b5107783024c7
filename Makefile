# `make demo` and `make test` set everything up on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the builds these machines carry on disk (fast, no multi-GB download)
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m gitune.sweep --space search_spaces/demo.yaml

# The tests, then benchmarks/gpu_check.sh at smoke sizes on the CPU (every GPU-check script runs; ~5 min).
test: $(STAMP)
	$(PY) -m pytest -q
	PYTHON=$(PY) benchmarks/gpu_check.sh --device cpu

# Everything but the multi-process tests (killed workers and drivers, a 2-node cluster, an MLflow server).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf ray_results mlflow.db mlartifacts reports

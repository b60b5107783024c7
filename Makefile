# `make demo` and `make test` set everything up on a fresh machine: they create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv clean clean-results

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

# Build outputs only: the venv's install stamp (the next `make` reinstalls), caches, packaging leftovers.
clean:
	rm -f $(STAMP)
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache build dist *.egg-info

# Sweep results in the working directory (the defaults of --tracking-uri, --storage and gitune.report's --out):
# every MLflow run and Tune checkpoint kept there. Deliberately not part of `clean`.
clean-results:
	rm -rf mlflow.db mlartifacts ray_results reports

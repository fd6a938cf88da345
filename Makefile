# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.run-installed requirements-dev.txt requirements-jax.txt
	$(BIN)/pip install -q -r requirements-dev.txt -r requirements-jax.txt
	touch $@

demo: $(VENV)/.run-installed  ## synthetic flowers -> tiny ViT -> predictions and figures in runs/demo
	$(BIN)/vit-flowers demo --out runs/demo

test: $(VENV)/.dev-installed  ## the test suite (fast tests; slow ones with `make test-slow`)
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q -m slow

$(VENV)/.peer-installed: $(VENV)/.dev-installed benchmarks/requirements-peer.txt
	$(BIN)/pip install -q -r benchmarks/requirements-peer.txt || echo "PyTorch peer not installed: infer_vs_torch will be null"
	touch $@

bench-quick: $(VENV)/.peer-installed  ## benchmarks, small sizes (about 10 min on 2 cores): benchmarks/results.json + README table
	$(BIN)/python benchmarks/run_all.py --quick

bench: $(VENV)/.peer-installed  ## benchmarks, full sizes
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf runs .pytest_cache

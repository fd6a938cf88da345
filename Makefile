# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow test-install browser bench bench-quick mutation clean

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

demo: $(VENV)/.run-installed  ## synthetic flowers -> tiny ViT -> predictions, figures and report pages in runs/demo
	$(BIN)/vit-flowers demo --out runs/demo

# Chromium and its driver for the report page test: installed where this is Debian and we are root,
# else the test skips and says why
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "chromium not installed: the browser test will skip"; \
	else echo "chromium not installed (needs root and apt-get): the browser test will skip"; fi

test: $(VENV)/.dev-installed browser  ## the test suite (fast tests; slow ones with `make test-slow`)
	$(BIN)/python -m pytest -q

test-slow: $(VENV)/.dev-installed browser
	$(BIN)/python -m pytest -q -m slow

test-install: $(VENV)/.dev-installed  ## build the wheel, install it in a fresh venv, run every command from another folder
	$(BIN)/python -m pytest -q -m slow tests/test_install.py

$(VENV)/.peer-installed: $(VENV)/.dev-installed benchmarks/requirements-peer.txt
	$(BIN)/pip install -q -r benchmarks/requirements-peer.txt || echo "PyTorch peer not installed: infer_vs_torch will be null"
	touch $@

bench-quick: $(VENV)/.peer-installed  ## benchmarks, small sizes (about 10 min on 2 cores): benchmarks/results.json + README table
	$(BIN)/python benchmarks/run_all.py --quick

bench: $(VENV)/.peer-installed  ## benchmarks, full sizes
	$(BIN)/python benchmarks/run_all.py

mutation: $(VENV)/.dev-installed  ## mutation score of the core modules (hours): records in .mutation/ (ignored), scores in docs/development.md
	$(BIN)/python tools/mutation.py $(if $(MODULES),--modules $(MODULES)) $(if $(SURVIVORS),--survivors) $(if $(FUNCTIONS),--functions $(FUNCTIONS))

clean:
	rm -rf runs .pytest_cache

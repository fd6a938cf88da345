# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow test-install check lint browser bench bench-quick mutation clean

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

# pytest-xdist: test files spread over TEST_WORKERS processes (each file's tests stay in one, so module
# fixtures are made once); many tests wait on subprocesses and disk, so 2 workers halve the time on 2 cores
TEST_WORKERS ?= 2
test: $(VENV)/.dev-installed browser lint  ## lint, then the test suite (fast tests; slow ones with `make test-slow`)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: $(VENV)/.dev-installed  ## ruff (pyflakes, import order, pyupgrade, bugbear) on everything that is Python here
	$(BIN)/ruff check vit_flowers tests tools benchmarks scripts

# the quick tier for iteration: the unit tests of every module, stopping at the first failure (about 3 minutes
# on 2 cores); `make test` stays the CI command
CHECK_TESTS := filelists labels images decoders metrics options compat primer interrupt augment datasets loader \
	attention predict model train report inputs
CHECK_SKIP := test_plot_command_two_runs or test_plot_only_wrong_and_correct or test_plot_skips_bad_images \
	or test_a_reloaded_run_predicts or test_conv_stem_gives or test_a_non_utf8_name_does_not
CHECK_NODES := tests/test_export.py::test_parse_formats \
	tests/test_export.py::test_a_failing_converter_is_one_clear_error_and_leaves_the_folder_alone \
	tests/test_import_weights.py::test_files_that_are_not_the_posts_weights_are_refused \
	tests/test_terminal.py::test_the_filter_drops_absl_lines_only
check: $(VENV)/.dev-installed lint  ## the quick tier: every module's unit tests, first failure stops
	$(BIN)/python -m pytest -q -x $(foreach t,$(CHECK_TESTS),tests/test_$(t).py) $(CHECK_NODES) \
		-k "not ($(CHECK_SKIP))"

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

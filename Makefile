# The README's commands. Each sets up everything it needs in a local virtual
# environment ($(VENV)) on a fresh machine, then runs.
#   make run     the main job on the embedded default data
#   make test    the test suite
#   make bench   the benchmarks (tables on stdout)
# Override the torch pin with e.g. `make test TORCH_SPEC='torch==2.14.1'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MAX_JOBS ?= 2

SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.h)

.PHONY: install run test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" numpy "setuptools>=64" wheel ninja pytest expecttest
	touch $@

# Built against the torch installed above: no build isolation, by design.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

run: install
	$(PY) examples/seed_tutorial.py

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_cell.py
	$(PY) benchmarks/bench_layer.py

clean:
	rm -rf $(VENV) build lstm_ext/*.so *.egg-info

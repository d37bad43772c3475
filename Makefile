# The README's commands. Each sets up everything it needs in a local virtual
# environment ($(VENV)) on a fresh machine, then runs.
#   make run       the main job: train, evaluate, plot and export on the embedded
#                  default data (Mauna Loa weekly CO2); results in runs/co2/
#   make test      the test suite
#   make deploy    train (unless runs/co2/model.pt exists), build the C++
#                  application, and run it next to Python on the same input
#   make tutorial  the seed tutorial's demo and training loop on our classes
#   make bench     the benchmarks (tables on stdout)
# Override the torch pin with e.g. `make test TORCH_SPEC='torch==2.14.1'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MAX_JOBS ?= 2

SOURCES := setup.py pyproject.toml $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.h)

CPP_BUILD := examples/cpp/build

.PHONY: install run test bench clean tutorial cpp deploy

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" numpy pandas matplotlib tqdm \
		"setuptools>=64" wheel ninja pytest expecttest
	touch $@

# Built against the torch installed above: no build isolation, by design.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

run: install
	$(PY) -m lstm_ext train

tutorial: install
	$(PY) examples/seed_tutorial.py

cpp: install
	cmake -S examples/cpp -B $(CPP_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CPP_BUILD) -j2

deploy: cpp
	test -f runs/co2/model.pt || $(PY) -m lstm_ext train
	@echo "Python forecast (next 13 weeks):"
	@$(PY) -m lstm_ext forecast --model runs/co2/model.pt --steps 13 | tail -n +2 | cut -d, -f2 | paste -sd,
	@echo "C++ application, same model and input (runs/co2/last_window.csv):"
	@$(CPP_BUILD)/lstm_ext_predict runs/co2/model.pt runs/co2/last_window.csv
	@echo "C++ application, streaming one step at a time (last line):"
	@$(CPP_BUILD)/lstm_ext_predict runs/co2/model.pt runs/co2/last_window.csv --stream | tail -n 1

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_cell.py
	$(PY) benchmarks/bench_layer.py
	$(PY) benchmarks/bench_streaming.py

clean:
	rm -rf $(VENV) build $(CPP_BUILD) lstm_ext/*.so *.egg-info

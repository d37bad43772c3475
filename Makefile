# The README's commands. Each sets up everything it needs in a local virtual
# environment ($(VENV)) on a fresh machine, then runs.
#   make run       the main job: train, evaluate, plot and export on the embedded
#                  default data (Mauna Loa weekly CO2); results in runs/co2/
#   make test      the test suite
#   make test-slow the tests it skips for time (real builds, torchrun training)
#   make deploy    train (unless runs/co2/model.pt exists), export the .pt2
#                  package, build the C++ application, and run it on both
#                  formats next to Python on the same input
#   make tutorial  the seed tutorial's demo and training loop on our classes
#   make bench     the benchmarks (tables on stdout)
#   make fuzz N=5000        randomized parity with torch.nn.LSTM, N configurations
#   make test-sanitize      the op tests on an AddressSanitizer + UBSan build
#   make test-torch TORCH_VERSIONS="2.11.0 2.15.0"
#                  the op and module tests against other torch releases, each
#                  in its own environment (.venv-torch-X, build/torch-X)
# Override the torch pin with e.g. `make test TORCH_SPEC='torch==2.14.1'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MAX_JOBS ?= 2

SOURCES := setup.py pyproject.toml csrc/sources.txt $(wildcard csrc/*.cpp csrc/*.h csrc/*/*.cpp csrc/*/*.h csrc/*/*/*.cpp csrc/*/*/*.h)

CPP_BUILD := examples/cpp/build

.PHONY: install run test test-slow bench clean tutorial cpp deploy fuzz test-sanitize test-torch

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" numpy pandas matplotlib tqdm "statsmodels>=0.14" \
		"setuptools>=64" wheel ninja pytest expecttest onnx onnxscript onnxruntime
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
	cmake -S examples/cpp -B $(CPP_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DLSTM_EXT_OPS_LIBRARY= \
		-DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(CPP_BUILD) -j2

# TorchScript (model.pt) and the AOTInductor package (model.pt2, exported from
# the checkpoint unless newer than model.pt) side by side, run by the C++
# application on the same input, against eager Python (1e-5).
deploy: cpp
	test -f runs/co2/model.pt || $(PY) -m lstm_ext train
	test runs/co2/model.pt2 -nt runs/co2/model.pt || \
		$(PY) -m lstm_ext export --format pt2 --checkpoint runs/co2/checkpoint.pt
	@echo "Python forecast (next 13 weeks):"
	@$(PY) -m lstm_ext forecast --model runs/co2/model.pt --steps 13 | tail -n +2 | cut -d, -f2 | paste -sd,
	@echo "C++ application, same model and input (runs/co2/last_window.csv):"
	@$(CPP_BUILD)/lstm_ext_predict runs/co2/model.pt runs/co2/last_window.csv
	@echo "C++ application, the .pt2 package (AOTInductor), same input:"
	@$(CPP_BUILD)/lstm_ext_predict runs/co2/model.pt2 runs/co2/last_window.csv
	@echo "C++ application, streaming one step at a time (last line; .pt, then .pt2):"
	@$(CPP_BUILD)/lstm_ext_predict runs/co2/model.pt runs/co2/last_window.csv --stream | tail -n 1
	@$(CPP_BUILD)/lstm_ext_predict runs/co2/model.pt2 runs/co2/last_window.csv --stream | tail -n 1
	@echo "Side by side:"
	@$(PY) examples/cpp/compare_deploy.py runs/co2 $(CPP_BUILD)/lstm_ext_predict

test: install
	$(PY) -m pytest -q

# The tests marked slow (a real build of the op library, the C++ application's
# op library compiled by CMake as make cpp does, training under torchrun, a
# CMake project against the installed package), which the default suite skips
# to stay under 15 minutes; CI runs them.
test-slow: install
	LSTM_EXT_SLOW=1 $(PY) -m pytest -q -m slow

# The kernels' and modules' tests: what the sanitizer and torch-version runs cover.
OP_TESTS := tests/ops/test_cell_op.py tests/ops/test_layer_op.py tests/ops/test_gemm_op.py \
	tests/ops/test_op_boundaries.py tests/ops/test_ieee.py tests/ops/test_fuzz.py \
	tests/ops/test_threads.py tests/ops/test_processes.py tests/ops/test_double_backward.py \
	tests/ops/test_contention.py tests/ops/test_int8.py tests/ops/test_bf16.py \
	tests/ops/test_row_groups.py tests/ops/test_cpu_capability.py tests/nn/test_projection.py \
	tests/nn/test_cell_module.py tests/nn/test_lstm_module.py tests/nn/test_model.py \
	tests/nn/test_torchscript.py tests/nn/test_quantize.py

N ?= 1000
fuzz: install
	LSTM_EXT_FUZZ_N=$(N) $(PY) -m pytest -q tests/ops/test_fuzz.py

# Another build of the op library, loaded instead of lstm_ext/_C.abi3.so by
# LSTM_EXT_LIBRARY; the Python package is the same source tree. Only the
# capability builds this CPU runs (setup.py, LSTM_EXT_NATIVE_ONLY).
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g
SAN_LIB := build/sanitize/lib/lstm_ext/_C.abi3.so
$(SAN_LIB): $(VENV)/.deps $(SOURCES)
	LSTM_EXT_NATIVE_ONLY=1 CFLAGS="$(SAN_FLAGS)" LDFLAGS="$(SAN_FLAGS)" $(PY) setup.py --quiet build_ext \
		--build-temp build/sanitize/temp --build-lib build/sanitize/lib

# Python itself is not instrumented: the sanitizer runtimes are preloaded, and
# leak checking is off (the interpreter keeps its objects until exit).
test-sanitize: install $(SAN_LIB)
	LSTM_EXT_LIBRARY=$(abspath $(SAN_LIB)) \
	LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_odr_violation=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	$(PY) -m pytest -q $(OP_TESTS)

TORCH_VERSIONS ?= 2.11.0 2.15.0
# Each version gets its own environment; with TORCH_MATRIX_CLEAN=1 (CI) it is
# removed after its run, so that only one CUDA-build torch (4-5 GB) is on disk
# at a time. pip's cache is off (it would hold the wheels a second time) and
# triton is left out (tools/torch_requirements.py says why).
TORCH_MATRIX_CLEAN ?= 0
test-torch: $(foreach v,$(TORCH_VERSIONS),test-torch-$(v))
test-torch-%:
	@df -h . | tail -n 1 | awk '{print "disk before torch $*: " $$4 " free"}'
	test -x .venv-torch-$*/bin/python || $(PYTHON) -m venv .venv-torch-$*
	.venv-torch-$*/bin/python -m pip install --quiet --no-cache-dir --no-deps "torch==$*"
	.venv-torch-$*/bin/python -m pip install --quiet --no-cache-dir packaging
	mkdir -p build && .venv-torch-$*/bin/python tools/torch_requirements.py > build/torch-$*.requirements
	.venv-torch-$*/bin/python -m pip install --quiet --no-cache-dir -r build/torch-$*.requirements \
		numpy "setuptools>=64" wheel ninja pytest expecttest
	PATH="$(abspath .venv-torch-$*)/bin:$$PATH" .venv-torch-$*/bin/python setup.py --quiet \
		build_ext --build-temp build/torch-$*/temp --build-lib build/torch-$*/lib
	PYTHONPATH=$(CURDIR) LSTM_EXT_LIBRARY=$(CURDIR)/build/torch-$*/lib/lstm_ext/_C.abi3.so \
		.venv-torch-$*/bin/python -m pytest -q -p no:cacheprovider $(OP_TESTS)
	@if [ "$(TORCH_MATRIX_CLEAN)" = 1 ]; then rm -rf .venv-torch-$* build/torch-$* build/torch-$*.requirements; fi

bench: install
	$(PY) benchmarks/bench_cell.py
	$(PY) benchmarks/bench_layer.py
	$(PY) benchmarks/bench_streaming.py
	$(PY) benchmarks/bench_double_backward.py
	$(PY) benchmarks/bench_threads.py
	$(PY) benchmarks/bench_threads.py --busy 2

clean:
	rm -rf $(VENV) .venv-torch-* build $(CPP_BUILD) lstm_ext/*.so *.egg-info

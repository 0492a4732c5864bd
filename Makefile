# The two quick-start commands (each installs what is missing, configures and builds first):
#   make demo   - the end-to-end demo on an embedded synthetic model
#   make test   - the whole test suite (CTest), printing its summary
# Also: make build, make asan-test (tests under ASan+UBSan+LSan), make tsan-test (loop/worker hand-off under TSan),
# make bench, make fuzz (libFuzzer, clang), make install (PREFIX=/usr/local), make package (the .deb),
# make deb-test (build, install, run and remove the .deb; root), make clean.

BUILD_DIR ?= build
FUZZ_DIR  ?= build-fuzz
ASAN_DIR  ?= build-asan
TSAN_DIR  ?= build-tsan
JOBS      ?= $(shell nproc)
CMAKE_ARGS ?=
PREFIX    ?= /usr/local
# The sanitizer and fuzz builds: -O1 with line tables (what ASan/TSan/libFuzzer recommend for useful reports)
# compiles about twice as fast as -O2 -g, which keeps .ci/run inside its time limit on a 2-core machine.
SAN_FLAGS := -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"

.PHONY: all deps configure build demo test asan-test tsan-test bench fuzz install package deb-test clean install-python

all: build

deps:
	@scripts/install-deps.sh

$(BUILD_DIR)/build.ninja: | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target deltasync
	$(BUILD_DIR)/src/cli/deltasync demo

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900

# The unit and integration tests again under ASan + UBSan + LeakSanitizer (build-asan/).
asan-test: deps
	cmake -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(SAN_FLAGS) -DDELTASYNC_SANITIZE=address \
	  -DDELTASYNC_BUILD_BENCH=OFF -DDELTASYNC_WITH_CUDA=OFF -DDELTASYNC_WITH_NCCL=OFF
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) --timeout 900 -L 'unit|integration'

# The loop/worker hand-off under ThreadSanitizer (build-tsan/): io, sync and http unit tests, the service
# integration test on both I/O backends and a short soak under wrk load (scripts/tsan-test.sh).
tsan-test: deps
	cmake -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(SAN_FLAGS) -DDELTASYNC_SANITIZE=thread \
	  -DDELTASYNC_BUILD_BENCH=OFF -DDELTASYNC_WITH_CUDA=OFF -DDELTASYNC_WITH_NCCL=OFF
	cmake --build $(TSAN_DIR) -j $(JOBS) --target io_tests sync_tests http_tests deltasync soak_driver
	scripts/tsan-test.sh $(TSAN_DIR)

# Builds the `deltasync` Python module and installs the package into the system interpreter's site-packages
# (docs/python.md); configure with -DDELTASYNC_PYTHON_INSTALL_DIR=DIR (CMAKE_ARGS) to install it elsewhere.
install-python: configure
	cmake --build $(BUILD_DIR) -j $(JOBS) --target deltasync_python
	cmake --install $(BUILD_DIR) --component python

bench: build
	scripts/run-benchmarks.sh $(BUILD_DIR)

fuzz: deps
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(SAN_FLAGS) \
	  -DDELTASYNC_BUILD_FUZZ=ON -DDELTASYNC_BUILD_BENCH=OFF -DDELTASYNC_WITH_CUDA=OFF -DDELTASYNC_WITH_NCCL=OFF
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz_targets
	scripts/run-fuzz.sh $(FUZZ_DIR) $${FUZZ_SECONDS:-30}

install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

package: build
	cd $(BUILD_DIR) && cpack -G DEB

deb-test: build
	scripts/deb-test.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) $(FUZZ_DIR) $(ASAN_DIR) $(TSAN_DIR)

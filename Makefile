# fedge: one command to set up and test (`make test`), one to see it work (`make demo`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Debian tools the test suite runs, as command:package pairs, and libraries/headers it
# needs, as path:package pairs. Installed with apt-get when missing and we are root;
# elsewhere the tests that need them say what to install. Device targets (issue 8):
# Cortex-M under qemu-system-arm, aarch64 under qemu-user, AVR under simavr, RV32 under
# qemu-system-riscv32 (qemu-system-misc). Chromium renders the report in its browser test and
# exports figures through kaleido (issue 12).
DEB_TOOLS := gcc:gcc g++:g++ size:binutils \
	arm-none-eabi-gcc:gcc-arm-none-eabi qemu-system-arm:qemu-system-arm \
	aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64:qemu-user \
	avr-gcc:gcc-avr simavr:simavr \
	riscv64-unknown-elf-gcc:gcc-riscv64-unknown-elf qemu-system-riscv32:qemu-system-misc \
	chromium:chromium
DEB_FILES := /usr/lib/arm-none-eabi/newlib/libm.a:libnewlib-arm-none-eabi \
	/usr/lib/avr/include/avr/io.h:avr-libc \
	/usr/include/simavr/sim_avr.h:libsimavr-dev \
	/usr/lib/picolibc/riscv64-unknown-elf/picolibc.specs:picolibc-riscv64-unknown-elf

.PHONY: test e2e-long demo bench lint system-deps install clean

test: install system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadfile

# Tests too long for every CI run (marked `long`): secure histogram boosting on a real
# Flower SuperLink (~3 min).
e2e-long: install system-deps
	$(BIN)/python -m pytest -m long -p no:cacheprovider

demo: install system-deps
	$(BIN)/fedge demo --out demo-out

# Benchmarks time fedge next to its anchors (the `bench` extra); Cortex-M sizes need
# arm-none-eabi-gcc (Debian: gcc-arm-none-eabi) and are skipped without it.
bench: install system-deps
	$(BIN)/python -m pip install --quiet -e ".[all,dev,bench]"
	$(BIN)/python benchmarks/runtime.py
	$(BIN)/python benchmarks/c_codegen.py

lint: install
	$(BIN)/ruff check src tests benchmarks

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

system-deps:
	@missing=""; \
	for pair in $(DEB_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	for pair in $(DEB_FILES); do \
	  path=$${pair%%:*}; pkg=$${pair#*:}; \
	  [ -e $$path ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages (run as root or install them):$$missing"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis demo-out

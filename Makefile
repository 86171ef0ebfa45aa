# `make demo`: set up and run the main job end to end. `make test`: set up and pass the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean
setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) -m onebit demo

# Two pytest-xdist workers (CI has 2 cores; Verilator, yosys and most tests use one): a module's tests stay on one
# worker, local Ray instances one at a time (tests/conftest.py). `$(PY) -m pytest` alone runs them in one process.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: setup
	$(PY) -m onebit bench

clean:
	rm -rf build .pytest_cache

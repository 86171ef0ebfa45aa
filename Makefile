# `make demo`: set up and run the main job end to end. `make test`: set up and pass the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean
setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) -m onebit demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m onebit bench

clean:
	rm -rf build .pytest_cache

# Dockyard's entry points. `make demo` and `make test` are the two documented commands.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo demo-clean demo-local test lint proto api-snapshot bench clean

setup:
	@scripts/setup.sh

# A fleet of 3 hosts on this machine, bootstrapped over SSH, and rollouts (scripts/demo.py); it starts
# with demo-clean, which removes everything the demo made.
demo: setup
	@scripts/demo.sh up

demo-clean:
	@scripts/demo.sh clean

# One local agent and one container (the demo before the fleet).
demo-local: setup
	@scripts/demo-local.sh

proto: setup
	$(PY) scripts/gen_proto.py

# Record the API contract after adding to it (a test fails if anything recorded is removed or renumbered).
api-snapshot: setup
	$(PY) scripts/api_snapshot.py --write

lint: setup
	$(VENV)/bin/ruff check agent controller tests scripts
	$(VENV)/bin/mypy

test: setup lint
	@set +e; $(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected (exit 5), treated as success"; rc=0; fi; \
	exit $$rc

bench: setup
	@scripts/bench.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# The two commands: `make demo` and `make test`. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
DEMO_DIR ?= demo
BENCH_DIR ?= bench
EXPERIMENT_DIR ?= runs
SEED ?= 0

.PHONY: install demo test test-fast bench experiment clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt synth --out $(DEMO_DIR)/sites --sites 3 --patients 4000,2500,1500 --seed $(SEED) --force
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt validate $(DEMO_DIR)/sites/site-1 $(DEMO_DIR)/sites/site-2 $(DEMO_DIR)/sites/site-3

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt bench --out $(BENCH_DIR) --seed $(SEED) --scale 1000000

experiment: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt experiment claim-pt --out $(EXPERIMENT_DIR)/claim-pt --seed $(SEED)

clean:
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache

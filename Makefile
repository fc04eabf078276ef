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

CLAIMPT := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt
DEMO_SITES := $(DEMO_DIR)/sites/site-1 $(DEMO_DIR)/sites/site-2 $(DEMO_DIR)/sites/site-3

demo: install
	rm -rf $(DEMO_DIR)
	$(CLAIMPT) synth --out $(DEMO_DIR)/sites --sites 3 --patients 4000,2500,1500 --seed $(SEED)
	$(CLAIMPT) validate $(DEMO_SITES)
	$(CLAIMPT) pretrain federated $(foreach s,$(DEMO_SITES),--data $(s)) --rounds 3 --out $(DEMO_DIR)/federated --seed $(SEED)
	for site in 1 2 3; do \
		$(CLAIMPT) -q finetune --checkpoint $(DEMO_DIR)/federated/checkpoint --data $(DEMO_DIR)/sites/site-$$site \
			--task asthma --train-size 300 --seed $(SEED) --out $(DEMO_DIR)/finetune/site-$$site > /dev/null || exit 1; \
		$(CLAIMPT) -q finetune --model logreg --data $(DEMO_DIR)/sites/site-$$site \
			--task asthma --train-size 300 --seed $(SEED) --out $(DEMO_DIR)/logreg/site-$$site > /dev/null || exit 1; \
	done
	$(CLAIMPT) summarize $(DEMO_DIR)/finetune/site-*/metrics.json $(DEMO_DIR)/logreg/site-*/metrics.json

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt bench --out $(BENCH_DIR) --seed $(SEED) --scale 1000000 --federated 20000

experiment: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt experiment claim-pt --out $(EXPERIMENT_DIR)/claim-pt --seed $(SEED)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt experiment fed-vs-central --out $(EXPERIMENT_DIR)/fed-vs-central --seed $(SEED) \
		--data $(EXPERIMENT_DIR)/claim-pt/sites/site-1 --data $(EXPERIMENT_DIR)/claim-pt/sites/site-2 --data $(EXPERIMENT_DIR)/claim-pt/sites/site-3

clean:
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache

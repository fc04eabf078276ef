# The two commands: `make demo` and `make test`. Everything installs into .venv from pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# GPU=1 (make install GPU=1, or any target): TensorFlow with its CUDA libraries (pip's nvidia-*
# packages) for a Linux machine with an NVIDIA GPU and its driver; the same commands then use it.
GPU ?=
STAMP := $(VENV)/.install-stamp$(if $(GPU),-gpu)
comma := ,
DEMO_DIR ?= demo
BENCH_DIR ?= bench
EXPERIMENT_DIR ?= runs
EXPERIMENT_PATIENTS ?= 20000
SEED ?= 0

.PHONY: install demo test browser lint format test-deployment bench check-gpu experiment experiment-claim-pt experiment-fed-vs-central experiment-privacy experiment-advisor experiment-few-shot experiment-out-of-time clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,original$(if $(GPU),$(comma)gpu)]"
	@# tensorflow-cpu and tensorflow share one package directory: with a GPU, tensorflow's files must win
	$(if $(GPU),$(BIN)/python -m pip install --quiet --force-reinstall --no-deps "tensorflow>=2.21$(comma)<2.22")
	rm -f $(VENV)/.install-stamp $(VENV)/.install-stamp-gpu
	touch $(STAMP)

CLAIMPT := PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt
DEMO_SITES := $(DEMO_DIR)/sites/site-1 $(DEMO_DIR)/sites/site-2 $(DEMO_DIR)/sites/site-3

demo: install
	rm -rf $(DEMO_DIR)
	$(CLAIMPT) synth --out $(DEMO_DIR)/sites --sites 3 --patients 10000,8000,6000 --seed $(SEED)
	$(CLAIMPT) validate $(DEMO_SITES)
	$(CLAIMPT) experiment transfer --data $(DEMO_DIR)/sites --out $(DEMO_DIR)/transfer --quick
	@echo "open $(DEMO_DIR)/transfer/report.html"

# Two workers, each test file on one of them (module fixtures are built once; the Ray engine's
# tests never run beside each other).
TEST_WORKERS ?= 2

test: install lint browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

# The report's test renders report.html in Debian's Chromium, installed here when missing (as root);
# elsewhere that one test is skipped with the reason.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the report's browser test"; \
			(apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null) || \
				echo "could not install chromium: the browser test will be skipped"; \
		else echo "chromium not found (Debian: apt-get install chromium): the browser test will be skipped"; fi; \
	fi

# One style: ruff's lint rules and its formatter (pyproject.toml); `make format` applies both.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Only the real SuperLink/SuperNode tests (also part of `make test`: about 3 minutes on 2 cores).
test-deployment: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m deployment

# ORIGINAL=path/to/Claim-PT (a checkout of github.com/2g-XzenG/Claim-PT) adds the original model's
# figures, measured side by side in the same run.
ORIGINAL ?=

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/claimpt bench --out $(BENCH_DIR) --seed $(SEED) --scale 1000000 \
		--federated 20000 --deployment 20000 $(if $(ORIGINAL),--original $(ORIGINAL))

# After `make install GPU=1` on a machine with an NVIDIA GPU: the model bench in both precisions
# and one pretraining epoch on the GPU (exit 2 where TensorFlow sees none); writes $(BENCH_DIR)/gpu.
check-gpu: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m simulations.bench.gpu_check --out $(BENCH_DIR)/gpu --seed $(SEED)

experiment: install
	test -f $(EXPERIMENT_DIR)/sites/site-3/metadata/dataset.json || \
		$(CLAIMPT) synth --out $(EXPERIMENT_DIR)/sites --sites 3 --patients $(EXPERIMENT_PATIENTS) --seed $(SEED)
	$(CLAIMPT) experiment transfer --data $(EXPERIMENT_DIR)/sites --out $(EXPERIMENT_DIR)/transfer
	@echo "open $(EXPERIMENT_DIR)/transfer/report.html"

GRIDS := simulations/experiments/transfer/grids

experiment-few-shot experiment-out-of-time: experiment-%: install
	test -d $(EXPERIMENT_DIR)/transfer/pretrained || (echo "run make experiment first: this grid reuses its encoders" && exit 2)
	$(CLAIMPT) experiment transfer --data $(EXPERIMENT_DIR)/sites --out $(EXPERIMENT_DIR)/$* \
		--config $(GRIDS)/$(subst -,_,$*).toml --pretrained $(EXPERIMENT_DIR)/transfer/pretrained
	@echo "open $(EXPERIMENT_DIR)/$*/report.html"

experiment-privacy: install
	test -f $(EXPERIMENT_DIR)/privacy-data/site-3/metadata/dataset.json || \
		$(CLAIMPT) synth --out $(EXPERIMENT_DIR)/privacy-data --sites 3 --patients 6000 --seed $(SEED)
	test -f $(EXPERIMENT_DIR)/robustness-data/site-5/metadata/dataset.json || \
		$(CLAIMPT) synth --out $(EXPERIMENT_DIR)/robustness-data --sites 5 --patients 3000 --seed $(SEED)
	$(CLAIMPT) experiment privacy --data $(EXPERIMENT_DIR)/privacy-data \
		--robustness-data $(EXPERIMENT_DIR)/robustness-data --out $(EXPERIMENT_DIR)/privacy --seed $(SEED)
	@echo "open $(EXPERIMENT_DIR)/privacy/report.html"

# The transfer advisor judged on simulated consortia it never saw (resumable): run
# `claimpt experiment advisor --only 1,3,5,7` and `--only 2,4,6,8` in parallel on 2 cores, about an
# hour and a half per consortium each (6 hours), then this target (or one run without --only) writes the report.
experiment-advisor: install
	$(CLAIMPT) experiment advisor --out $(EXPERIMENT_DIR)/advisor
	@echo "see $(EXPERIMENT_DIR)/advisor/results.md"

experiment-claim-pt: install
	$(CLAIMPT) experiment claim-pt --out $(EXPERIMENT_DIR)/claim-pt --seed $(SEED)

experiment-fed-vs-central: install
	$(CLAIMPT) experiment fed-vs-central --out $(EXPERIMENT_DIR)/fed-vs-central --seed $(SEED)

clean:
	rm -rf $(DEMO_DIR) $(BENCH_DIR) .pytest_cache

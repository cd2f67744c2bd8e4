# One-command set-up: every target that needs Python creates .venv and installs into it first.
# torch is installed alone first (pinned), then the package under a constraint that keeps that torch:
# an unpinned resolve would pull a multi-GB CUDA build (see DEVELOPERS.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed-$(TORCH_VERSION)
DATA ?= $(if $(DEBIASLAB_DATA),$(DEBIASLAB_DATA),$(abspath ../shared/data))
export DEBIASLAB_DATA := $(DATA)

.PHONY: venv test lint demo docs bench-speed bench-cost bench-ddp bench-tune bench-faults clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	echo "torch==$(TORCH_VERSION)" > $(VENV)/constraints.txt
	$(PY) -m pip install --quiet -c $(VENV)/constraints.txt -e '.[dev]'
	@touch $(STAMP)

test: venv
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

DEMO_WORKERS ?= 2

# `debiaslab bench quick`: every method on Colored MNIST at 1 % conflicting, seed 0, a short budget, two runs at a
# time; ends with the results table of every method (runs and report under runs/bench/quick; reruns skip finished
# runs). Set DEMO_WORKERS to use more cores.
demo: venv
	$(PY) -m debiaslab bench quick --workers $(DEMO_WORKERS)

# docs/results/*.md and the README's results blocks, regenerated from the run records under benchmarks/results/
docs: venv
	$(PY) benchmarks/make_docs.py

bench-speed: venv
	$(PY) benchmarks/engine_overhead.py --epochs 5

# seconds per training epoch of ULE, LfF, BAM and DeNetDM relative to ERM, and BAM's auxiliary-table memory
bench-cost: venv
	$(PY) benchmarks/method_cost.py --epochs 3

# gradient synchronisation of a ResNet-18 step on two gloo CPU processes: per-tensor all-reduce vs DDP's
# bucketed one vs one coalesced buffer (writes benchmarks/results-ddp-sync.json)
bench-ddp: venv
	$(PY) benchmarks/ddp_sync.py --rounds 9

# wall time of a 20-trial search (ERM, Colored MNIST 1 %, 8-epoch cap, one thread) without pruning and with the
# median and Hyperband pruners, and the share of trials pruned
bench-tune: venv
	$(PY) benchmarks/tune_pruning.py --trials 20 --epochs 8 --threads 1 --out benchmarks/results-tune-pruning.json

# kills, corrupted files, a full disk (a tmpfs when run as root) and bad inputs, each counted by what it did
# (writes benchmarks/results-fault-probe.json; the figures are in docs/reliability.md)
bench-faults: venv
	$(PY) benchmarks/fault_probe.py --work runs/fault-probe --json benchmarks/results-fault-probe.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

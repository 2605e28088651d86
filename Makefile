# Fine-tuning strategy study. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
# hydra/launcher=ray's own environment (the ray extra pins cloudpickle<3, which joblib 1.6 refuses: docs/sweeps.md, "Ray")
RAY_VENV ?= .venv-ray
PY := $(VENV)/bin/python
ARGS ?=
empty :=
space := $(empty) $(empty)

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## create .venv and install the pinned dependencies, the notebook tools and this package (editable)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,notebook]'

# Two workers: most fast tests wait on a subprocess's imports or a small run, so two share the 2 cores
# well (595 s -> 435 s on one host). Tests, not files, are dealt out: a module fixture is then built
# by both workers, but one long file no longer ends the run alone (506 s -> 471 s on a slower host).
# The slow tier stays serial: its SLURM and timing tests size their runs for a machine to themselves.
test: ## fast tests (unit + small end-to-end runs; about 5-7 min on 2 Intel cores, 6-8 on 2 slower AMD ones; two pytest-xdist workers)
	$(PY) -m pytest -q -m "not slow and not ray" -n 2 --dist load $(ARGS)

test-slow: ## slow end-to-end tests (the full default study)
	$(PY) -m pytest -q -m "slow and not ray" $(ARGS)

install-ray: $(RAY_VENV)/.installed ## create .venv-ray: this package with the ray extra (hydra/launcher=ray), apart from .venv

$(RAY_VENV)/.installed: pyproject.toml
	test -x $(RAY_VENV)/bin/python || $(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install -q --upgrade pip
	$(RAY_VENV)/bin/python -m pip install -q -e '.[ray]' pytest==9.2.0
	touch $@

# Only tests/test_ray.py is collected there: other test files import dev tools that .venv-ray lacks.
test-ray: install-ray ## hydra/launcher=ray end to end (tests/test_ray.py) in .venv-ray: a private Ray, a running cluster, a sweep
	$(RAY_VENV)/bin/python -m pytest -q -m ray tests/test_ray.py $(ARGS)

smoke: ## run this first: one epoch, 5 images per class at 32 px, untracked (under a minute; outputs/DATE/TIME)
	$(PY) -m src.train experiment=smoke $(ARGS)

study: ## the three-strategy comparison on the default model and data
	$(PY) -m src.train -m strategy=frozen,full,layerwise $(ARGS)

sweep: ## Optuna search (a preset in sweeps/): make sweep [SWEEP=default] [ARGS="hydra.sweeper.n_trials=40 dataset=..."]; again to resume
	$(PY) -m src.train -m sweep=$(or $(SWEEP),default) $(ARGS)

grid: ## which strategy wins by data size and domain (about 1 h): make grid MEDMNIST_DIR=folder/with/pneumoniamnist.npz
	@test -f $(or $(MEDMNIST_DIR),data/medmnist)/pneumoniamnist.npz || { echo "error: no $(or $(MEDMNIST_DIR),data/medmnist)/pneumoniamnist.npz (set MEDMNIST_DIR; digits alone: python -m src.train -m experiment=data_size_grid dataset=digits)" >&2; exit 2; }
	MEDMNIST_DIR=$(or $(MEDMNIST_DIR),data/medmnist) $(PY) -m src.train -m experiment=data_size_grid $(ARGS)

domain-shift: ## OOD accuracy per strategy (train on PACS photo, test on art_painting, cartoon): make domain-shift PACS_DIR=folder/with/pacs
	@test -d "$(PACS_DIR)/photo" || { echo "error: no $(PACS_DIR)/photo (set PACS_DIR to the folder with photo/, art_painting/, cartoon/)" >&2; exit 2; }
	PACS_DIR="$(abspath $(PACS_DIR))" $(PY) -m src.train -m experiment=domain_shift $(ARGS)

report: ## table + HTML report (DIR/report/index.html) of results folders: make report DIR="multirun/a sweeps-out/b"
	$(PY) -m src.report $(or $(DIR),multirun) $(ARGS)

notebook: ## run notebooks/*.ipynb headless on results folders: make notebook DIR="multirun/a sweeps-out/b" (paths from here; HTML into notebook-out/)
	@$(PY) -c "import nbconvert, ipykernel" 2>/dev/null || { echo "error: nbconvert/ipykernel not installed in $(VENV): run make install" >&2; exit 2; }
	RESULTS_DIRS="$(subst $(space),:,$(strip $(DIR)))" $(PY) -m nbconvert --to html --execute \
		--ExecutePreprocessor.timeout=600 --ExecutePreprocessor.kernel_name=python3 \
		--output-dir $(or $(OUT),notebook-out) notebooks/*.ipynb

bench: ## our step vs a plain PyTorch loop, the frozen feature cache, cost vs unfreeze depth (about 10 min)
	$(PY) benchmarks/step.py $(ARGS)
	$(PY) benchmarks/cache.py
	$(PY) benchmarks/depth.py

bench-data: ## image folders: cache miss vs hit, decode on 1 and 2 workers, JPEG draft speed and pixel difference (about 2 min)
	$(PY) benchmarks/data.py $(ARGS)

bench-pruning: ## the default sweep with pruning on and off, single- and multi-objective, 8-epoch trials (about 80 min)
	$(PY) benchmarks/pruning.py $(or $(ARGS),trainer.epochs=8 trainer.num_threads=1 logger=none)

bench-augment: ## augmentation presets: cost per batch, and none vs standard for each strategy on digits (about 20 min)
	$(PY) benchmarks/augment.py $(ARGS)

clean: ## remove run outputs and caches (not the venv)
	rm -rf outputs multirun sweeps-out bench-out notebook-out wandb .pytest_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +

.PHONY: help install install-ray test test-slow test-ray smoke study sweep grid domain-shift report notebook bench bench-data bench-augment bench-pruning clean

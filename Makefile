# Set-up and entry points. `make demo` and `make test` each create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
# The CPU build of torch lies on this project's machines; on a GPU machine set TORCH=torch
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
DEMO_SPEC ?= specs/molecular/mpnn_freesolv.yaml

.PHONY: demo test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[bench]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/graphdl describe $(DEMO_SPEC)
	$(BIN)/graphdl run $(DEMO_SPEC) --out runs/demo

test: $(VENV)/.installed
	$(BIN)/python -m graphdl.build_kernels
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

lint: $(VENV)/.installed
	$(BIN)/ruff check graphdl tests benchmarks

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/pyg_layers.py
	$(BIN)/python benchmarks/molecular.py

clean:
	rm -rf $(VENV) runs .pytest_cache

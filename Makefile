# Two entry points for a fresh machine: `make demo` (main job) and `make test` (lint + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint format

$(BIN)/jointdiff: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch, pinned: a looser spec pulls a multi-GB CUDA build on Linux.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,s3,onnx]'  # s3: Ray, so CI runs the local-Ray end-to-end test; onnx: the CPU U-Net
	touch $@

install: $(BIN)/jointdiff

demo: install
	$(BIN)/jointdiff demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

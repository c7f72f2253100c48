# Every target installs what it needs first (into .venv), so on a fresh machine
# `make demo` and `make test` are the only commands you type.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXP ?= neuron_fusion
ARGS ?=

.PHONY: install demo test test-all tables slurm bench clean-results

install: $(STAMP)

# torch 2.14.1 + torchvision 0.29.1 are taken from this machine's wheel store when it has them
# (lmms-eval needs torchvision; PyPI's torchvision does not import beside the CPU-only 2.13.0).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: install
	$(PY) -m harness +experiment=neuron_fusion $(ARGS)
	$(PY) -m harness.tables
	@echo "results: results/runs/*/result.json  tables: results/tables/"

test: install
	$(PY) -m pytest -m "not gpu" $(ARGS)

tables: install
	$(PY) -m harness.tables $(ARGS)

slurm: install
	$(PY) -m harness.slurm submit +experiment=$(EXP) $(ARGS)

bench: install
	$(PY) -m harness.bench $(ARGS)

# Every target installs what it needs first (into .venv), so on a fresh machine
# `make demo` and `make test` are the only commands you type.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
STAMP := $(VENV)/.installed
LOCK_VENV ?= build/lock-venv
EXP ?= neuron_fusion
ARGS ?=
# The rehearsal's mini datasets and results (kept apart from real results).
REHEARSAL_DATA ?= .cache/harness/rehearsal
REHEARSAL_RESULTS ?= results/rehearsal

.PHONY: install lock demo test tables slurm bench rehearsal

# The venv holds exactly what requirements.lock pins (the tested environment). A venv from an
# older lock, or one where a package was changed by hand, is re-installed; what still differs
# afterwards (a package the lock does not name) stops here with its name.
install: $(STAMP)
	@$(PY) -m harness.environment check --quick 2>/dev/null \
		|| { echo "$(VENV) differs from $(LOCK): re-installing"; $(MAKE) --no-print-directory -B $(STAMP); }

# On machines with a local wheel store pip takes torch 2.14.1 + torchvision 0.29.1 from disk.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(LOCK) -e ".[test]"
	$(PY) -m harness.environment check
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges in a scratch venv and write what it got as the new lock.
# Then `make test`, and commit pyproject.toml and requirements.lock together.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[test]"
	$(LOCK_VENV)/bin/python -m harness.environment freeze > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)
	@echo "wrote $(LOCK); now run make test and commit pyproject.toml with it"

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

# The paper's experiment on the twin pairs with mini copies of the 13 datasets, offline, on CPU:
# every method x every twin, then one main table per twin (see README).
rehearsal: install
	$(PY) -m harness.rehearsal --out $(REHEARSAL_DATA)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HARNESS_RESULTS=$(REHEARSAL_RESULTS) \
		$(PY) -m harness +experiment=rehearsal eval.data_root=$(abspath $(REHEARSAL_DATA)) $(ARGS)
	$(PY) -m harness.tables --results $(REHEARSAL_RESULTS)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HARNESS_RESULTS=$(REHEARSAL_RESULTS)/select \
		$(PY) -m harness +experiment=rehearsal_select eval.data_root=$(abspath $(REHEARSAL_DATA))
	@echo "rehearsal records: $(REHEARSAL_RESULTS)/runs  tables: $(REHEARSAL_RESULTS)/tables"
	@echo "selection rehearsal: $(REHEARSAL_RESULTS)/select/tables"

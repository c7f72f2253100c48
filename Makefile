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
# The Python the lock is resolved for (its header names it): pip would resolve other wheels, or
# none, for another one.
LOCK_PYTHON := $(shell sed -n 's/^\# Python \([0-9][0-9.]*\),.*/\1/p' $(LOCK) | head -n 1)

.PHONY: install python-check lock demo test tables slurm bench bench-eval rehearsal \
	rehearsal-uncapped gpu-check

# The venv holds exactly what requirements.lock pins (the tested environment). A venv from an
# older lock, or one where a package was changed by hand, is re-installed; what still differs
# afterwards (a package the lock does not name) stops here with its name.
install: python-check $(STAMP)
	@$(PY) -m harness.environment check --quick 2>/dev/null \
		|| { echo "$(VENV) differs from $(LOCK): re-installing"; $(MAKE) --no-print-directory -B $(STAMP); }

# Stops at once, before any venv is made, when the Python that would run the venv (the existing
# $(VENV)'s, else PYTHON) is not the lock's.
python-check:
	@py="$(PYTHON)"; [ -x "$(PY)" ] && py="$(PY)"; \
	v=$$("$$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
		|| { echo "make: '$$py' is not a Python interpreter. $(LOCK) is resolved for Python $(LOCK_PYTHON): point PYTHON= at one, e.g. make install PYTHON=/usr/bin/python$(LOCK_PYTHON)" >&2; exit 1; }; \
	[ "$$v" = "$(LOCK_PYTHON)" ] || { \
		if [ "$$py" = "$(PY)" ]; then echo "make: $(VENV) runs Python $$v, but $(LOCK) is resolved for Python $(LOCK_PYTHON): remove $(VENV) and run make install PYTHON=/path/to/python$(LOCK_PYTHON)" >&2; \
		else echo "make: $(PYTHON) is Python $$v, but $(LOCK) is resolved for Python $(LOCK_PYTHON) (other Pythons are not tested and may get other wheels, or none). Install Python $(LOCK_PYTHON) (pyenv install $(LOCK_PYTHON), uv python install $(LOCK_PYTHON), module load python/$(LOCK_PYTHON)) and run make install PYTHON=/path/to/python$(LOCK_PYTHON)" >&2; fi; \
		exit 1; }

# On machines with a local wheel store pip takes torch 2.14.1 + torchvision 0.29.1 from disk.
$(STAMP): pyproject.toml $(LOCK) | python-check
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

# What one merged model costs to evaluate, projected from a few docs per task (docs/performance.md).
bench-eval: install
	$(PY) -m harness.bench eval $(ARGS)

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

# Each twin on all 13 paper13 tasks with every task's own generation length (no cap): a merge
# that talks nonsense must be scored, not crash (the default test run covers one twin).
rehearsal-uncapped: install
	HARNESS_UNCAPPED_ALL_TWINS=1 $(PY) -m pytest tests/test_rehearsal_uncapped.py $(ARGS)

# Before submitting a sweep, on one GPU node: the gpu tests, then one twin per family merged and
# evaluated on cuda through both tools, offline, under a temporary results folder; one verdict
# line per step. On a machine without CUDA the CUDA steps are skipped, saying so.
gpu-check: install
	$(PY) -m harness.gpu_check $(ARGS)

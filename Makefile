# Two commands do all the set-up on a fresh machine with Python >= 3.10:
#   make demo   - create .venv, install placement-lint (with the runtime extra), lint the bundled
#                 fixtures, then confirm one finding on a real 2-rank gloo mesh
#   make test   - create .venv, install placement-lint with test and runtime extras, run every test
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 installs a CPU build here
TORCH  ?= torch==2.13.0

.PHONY: demo test bench clean

$(VENV)/.static: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

$(VENV)/.runtime: $(VENV)/.static
	$(PY) -m pip install -q '$(TORCH)' numpy
	touch $@

demo: $(VENV)/.runtime
	@echo '$$ placement-lint fixtures/'
	@$(VENV)/bin/placement-lint fixtures/; rc=$$?; echo "(exit code $$rc: 1 means findings)"; test $$rc -le 1
	@echo
	@echo '$$ placement-lint confirm fixtures/tp_expert_matmul.py --harness fixtures/harnesses/tp_expert_matmul.py:harness --nproc 2 --backend gloo'
	@$(VENV)/bin/placement-lint confirm fixtures/tp_expert_matmul.py --harness fixtures/harnesses/tp_expert_matmul.py:harness \
		--nproc 2 --backend gloo; rc=$$?; echo "(exit code $$rc: 1 means a finding was not refuted)"; test $$rc -le 1

test: $(VENV)/.runtime
	$(PY) -m pytest -q

bench: $(VENV)/.runtime
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .placement_lint_cache .pytest_cache

# medcl: two commands. `make demo` runs the main job, `make test` passes the tests.
# Both create .venv when missing and install what they need; re-running is quick (a stamp file tracks pyproject.toml).
#
# MEDCL_TORCH chooses the torch install:
#   (unset)                    CPU build torch==2.13.0, installed before anything else so no CUDA wheels are pulled.
#   MEDCL_TORCH=keep           keep the torch already in .venv (e.g. a CUDA build you installed yourself).
#   MEDCL_TORCH="torch==2.7.1 --index-url https://download.pytorch.org/whl/cu126"   any pip arguments.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MEDCL_TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
STAMP := $(VENV)/.medcl-installed

.PHONY: install demo test test-all lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ "$(MEDCL_TORCH)" != "keep" ]; then \
		echo "medcl: installing $(MEDCL_TORCH)"; \
		$(PY) -m pip install -q --disable-pip-version-check $(MEDCL_TORCH) 2>&1 | grep -v "is ignored: it is neither" || true; \
	fi
	@$(PY) -W ignore -c "import torch" || { echo "medcl: torch is not importable in $(VENV)"; exit 1; }
	@echo "medcl: installing medcl and its dependencies into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,serve,report]" 2>&1 | grep -v "is ignored: it is neither" || true
	@$(PY) -c "import medcl, monai, pydicom, nibabel, transformers, lightning, mlflow" \
		|| { echo "medcl: install failed (see pip output above)"; exit 1; }
	@touch $(STAMP)

demo: install
	$(VENV)/bin/medcl demo

test: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf demo_out .pytest_cache mlflow.db mlartifacts

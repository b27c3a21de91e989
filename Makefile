# corl: two commands on a fresh machine, `make test` and `make demo`.
# Both create .venv when it is missing and install the whole stack idempotently: the stamp
# file is rebuilt only when pyproject.toml or this Makefile change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.corl-installed
# The CPU wheel of torch that this kind of machine has on disk; override for a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test demo bench clean-venv

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	# the optional extras too (Ray for sweeps, loggers, ONNX export, MP4 video), so `make test` covers them
	$(PIP) install -q -e ".[test,ray,tensorboard,wandb,onnx,video]"
	# Packages whose metadata pins what does not build on Python 3.11 (see README, Install).
	$(PIP) install -q --no-deps safety-gymnasium==0.4.0 dsrl==0.1.0
	$(PY) -c "import corl.compat as c; c.import_dsrl(); print('corl stack installed')"
	touch $(STAMP)

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests

demo: install
	@echo "make demo: DRCORL with the *quick* preset (minutes on a CPU) on OfflineCarCircle-v0;"
	@echo "the default (no --preset) is the paper's GPU-scale settings."
	$(VENV)/bin/corl run drcorl --task OfflineCarCircle-v0 --preset quick
	@echo "make demo: BC-Safe (behaviour cloning of the safe episodes), the baseline DRCORL must beat;"
	$(VENV)/bin/corl run bc --task OfflineCarCircle-v0 --preset quick
	@echo "make demo: both on the same 20 evaluation episodes; the last line says whether DRCORL is safe and beats BC-Safe."
	$(VENV)/bin/corl eval drcorl bc --task OfflineCarCircle-v0

bench: install
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)

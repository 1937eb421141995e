# Two commands: `make demo` (install + the whole loop at toy scale) and `make test`.
# Both create .venv with Python 3.12 and install what they need; as root they also install system packages.
SHELL := /bin/bash
PY312 ?= $(shell PYENV_VERSION=3.12.1 python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null || command -v python3.12)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export WANDB_MODE ?= offline
export WANDB_SILENT := true

.PHONY: demo test test-franky venv clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/install_system.sh
	@bash scripts/install_system.sh
	@test -x $(PY) || $(PY312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[ros,robot,test]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# only the franky-sim fault injection (frames stop, NaN/oversize action, policy raises, node killed, e-stop)
test-franky: $(STAMP)
	$(PY) -m pytest -q tests/test_bridge_franky.py -m franky_sim

demo: $(STAMP)
	bash scripts/demo.sh

clean-demo:
	rm -rf runs/demo datasets/demo

# Two commands do all the set-up on a fresh machine:
#   make run   - create .venv, install, run the training flow end to end
#   make test  - same set-up, then ruff and the test suite
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
# Where the data comes from: a folder of <Language>.txt files, a .zip, or an http(s) URL.
# The development copy beside the checkout is used when present (no internet here).
SOURCE  ?= $(if $(wildcard ../shared/data/names),../shared/data/names,https://download.pytorch.org/tutorial/data.zip)
ARGS    ?=

# Nothing phones home.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: setup run test lint bench clean lock

setup: $(VENV)/.installed

# torch==2.13.0 goes first, alone: it is a CPU wheel on local disk, and any other spec pulls a
# multi-GB CUDA build. The project's own range accepts it, so the second step installs no torch.
# The CPU build is found where pip is told to look (here PIP_FIND_LINKS / pip.conf); on a machine
# without one, `PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make setup` finds it there.
# constraints.txt pins every package to the versions the tests last passed with (make lock).
PIN     ?= -c constraints.txt
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade $(PIN) pip
	$(PY) -m pip install --quiet $(PIN) torch==2.13.0
	$(PY) -m pip install --quiet $(PIN) -e '.[dev]'
	touch $@

# Re-resolve pyproject.toml's ranges in a scratch environment (the same set-up, without the pins)
# and pin the result: run it after changing a dependency, then the tests, then commit constraints.txt.
# torch is pinned without its build label (2.13.0, not 2.13.0+cpu): the CPU build here and PyPI's
# CUDA build of a GPU machine both satisfy it, where +cpu would refuse the CUDA one.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) --no-print-directory setup VENV=$(LOCK_VENV) PIN=
	{ echo "# Every package namelang installs, pinned (make lock writes this; make setup installs with it)."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable; } > constraints.txt.tmp
	sed -i -E 's/^(torch==[^+]+)[+].*/\1/' constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	rm -rf $(LOCK_VENV)

run: setup
	$(VENV)/bin/namelang train --source "$(SOURCE)" $(ARGS)

# lint first: it takes a second, and CI then refuses what `make lint` would. The suite runs on
# TEST_WORKERS processes (pytest-xdist; 0: one process, as for a debugger): its longest tests mostly
# wait for servers, so two share even two cores well (worksteal: a worker done early takes over
# tests the other has not started).
TEST_WORKERS ?= 2
test: setup
	$(VENV)/bin/ruff check pipeline flows tests bench
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(ARGS)

lint: setup
	$(VENV)/bin/ruff check pipeline flows tests bench

bench: setup
	$(PY) bench/ingest.py
	$(PY) bench/train.py
	$(PY) bench/accents.py
	$(PY) bench/predict.py
	$(PY) bench/flow.py

# the data steps' outputs, caches, checkpoints and saved models; not mlruns/, which holds the registry
clean:
	rm -rf data/processed data/raw data/cache data/checkpoints data/models

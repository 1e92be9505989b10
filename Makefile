# Two entry points for a fresh machine (see README):
#   make train   set up .venv, train on CIFAR-10 (5-min CPU recipe, or the GPU fast recipe), print the test accuracy
#   make test    set up .venv, run the test suite (make test-fast: without the tests marked slow)
# On a machine without an NVIDIA GPU the venv gets torch==2.13.0 (CPU build); an open
# range would pull gigabytes of CUDA packages. On a GPU machine the venv sees the
# machine's own torch (--system-site-packages) and installs none.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,plots,tune,web,desktop,onnx,postgres
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1)
# The shared JPEG copy, when it sits beside the checkout; CIFARLAB_DATA overrides it.
SHARED_DATA := $(wildcard ../shared/data/cifar10-jpeg75.tar.gz)
export CIFARLAB_DATA ?= $(SHARED_DATA)

.PHONY: setup setup-core sysdeps train test test-fast mutation clean

# setup-core: torch, numpy, pillow and cifarlab itself (all `make train` needs), with the web
# extra, so that the README's quickstart (predict, serve, train) runs in the venv make train made;
# setup: that plus every optional extra (what the tests exercise)
setup-core: $(VENV)/.core
setup: $(VENV)/.installed

$(VENV)/.core: pyproject.toml Makefile
ifeq ($(HAS_GPU),1)
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
else
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
endif
	$(PY) -m pip install --quiet -e ".[web]"
	touch $@

$(VENV)/.installed: $(VENV)/.core
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# the main job: on a GPU the record-speed recipe, on a CPU the 5-minute one (docs/cpu-frontier.md).
# On a CPU the whole `make train`, venv setup included, ends within TRAIN_SECONDS of being typed:
# the training gets what setup left of it, minus 5 s for the command's start and exit, as its
# --time-budget (training/budget.py plans the epochs to fit; never under 60 s)
TRAIN_RECIPE := $(if $(HAS_GPU),fast,cpu-5min)
TRAIN_SECONDS ?= 300
MAKE_STARTED := $(shell date +%s)

train: setup-core
ifeq ($(HAS_GPU),1)
	$(VENV)/bin/cifarlab train --recipe $(TRAIN_RECIPE)
else
	@sync  # the venv's files to disk now: their writeback slowed the training's step timing by 10-25%
	@left=$$(( $(TRAIN_SECONDS) - 5 - $$(date +%s) + $(MAKE_STARTED) )); [ $$left -ge 60 ] || left=60; \
	echo "$(VENV)/bin/cifarlab train --recipe $(TRAIN_RECIPE) --time-budget $$left"; \
	$(VENV)/bin/cifarlab train --recipe $(TRAIN_RECIPE) --time-budget $$left
endif

# Debian packages the browser, desktop and PostgreSQL tests need (chromium, Qt's shared
# libraries, postgresql);
# installs only what is missing, only as root, else prints what is missing.
sysdeps:
	@bash scripts/sysdeps.sh

test: setup sysdeps
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

# the fast lane: every test but those marked slow (the goal: under 2 minutes on 2 quiet cores)
test-fast: setup sysdeps
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# plants each fault of scripts/mutation_check.py in a scratch copy and checks its tests fail
mutation: setup
	$(PY) scripts/mutation_check.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache

# The Keras 3 side of benchmarks/keras_throughput.py, in a virtualenv of its own: keras and
# tensorflow-cpu are no cifarlab dependencies (nothing in src/ imports them). Set-up only:
# `make keras-throughput` then times cifarlab against Keras (docs/keras-throughput.md).
KERAS_VENV ?= .venv-keras
KERAS_PKGS ?= tensorflow-cpu==2.21.0 keras==3.15.1
.PHONY: keras-env keras-throughput
keras-env: $(KERAS_VENV)/.installed

$(KERAS_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_VENV)/bin/python -m pip install --quiet $(KERAS_PKGS)
	touch $@

keras-throughput: setup-core keras-env
	$(PY) benchmarks/keras_throughput.py --keras-python $(KERAS_VENV)/bin/python $(KERAS_ARGS)

# The two commands a new user runs: `make demo` and `make test`.
# Each installs what it needs into .venv first; stamps make a second run install nothing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check -q
TORCH_VERSION := 2.13.0
PYTEST_ARGS ?=

.PHONY: help install sim deploy-tools test test-fast test-slow demo bench proto images images-test clean

help:
	@echo "make demo       end-to-end demo on a dataset it records itself (train -> serve -> evaluate)"
	@echo "make test       install and run the whole test suite, slow tests included (what CI runs)"
	@echo "make test-fast  the quick development loop: everything but the slow tests"
	@echo "make test-slow  the slow tests only"
	@echo "make bench      run benchmarks/ and print their RESULT lines"
	@echo "make sim        install the LIBERO simulator (no torch) and its headless rendering libraries"
	@echo "make deploy-tools  install the validators the deploy tests use (docker-compose, promtool, hadolint, kubernetes-validate)"
	@echo "make images     build the three service images (needs a Docker engine)"
	@echo "make images-test  build the images and run the compose services for real (Docker, else podman; not in make test)"

$(VPY):
	$(PYTHON) -m venv $(VENV)

# torch first, from the pinned CPU build, so that no range below pulls a CUDA build.
$(VENV)/.stamp-torch: | $(VPY)
	$(PIP) install torch==$(TORCH_VERSION)
	touch $@

# openpi's own client and server (the serving benchmark's peer) with --no-deps: see pyproject's dev extra.
$(VENV)/.stamp-project: pyproject.toml $(VENV)/.stamp-torch
	$(PIP) install -e '.[all]'
	$(PIP) install --no-deps openpi-client==0.1.2 openpi-server==0.1.0
	touch $@

$(VENV)/.stamp-sim: scripts/install_sim.sh $(VENV)/.stamp-project
	VENV=$(VENV) bash scripts/install_sim.sh
	touch $@

$(VENV)/.stamp-deploy: scripts/install_deploy_tools.sh $(VENV)/.stamp-project
	VENV=$(VENV) bash scripts/install_deploy_tools.sh
	touch $@

install: $(VENV)/.stamp-project
sim: $(VENV)/.stamp-sim
deploy-tools: $(VENV)/.stamp-deploy

test: $(VENV)/.stamp-project $(VENV)/.stamp-sim $(VENV)/.stamp-deploy
	$(VPY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.stamp-project $(VENV)/.stamp-sim $(VENV)/.stamp-deploy
	$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.stamp-project $(VENV)/.stamp-sim
	$(VPY) -m pytest -m slow $(PYTEST_ARGS)

demo: $(VENV)/.stamp-project $(VENV)/.stamp-sim
	VENV=$(VENV) bash scripts/demo.sh

bench: $(VENV)/.stamp-project $(VENV)/.stamp-sim
	VENV=$(VENV) bash scripts/bench.sh

proto: $(VENV)/.stamp-project
	VENV=$(VENV) bash scripts/gen_proto.sh

images:
	docker build -f services/trainer/Dockerfile -t vla-libero/trainer:0.1.0 .
	docker build -f services/policy_server/Dockerfile -t vla-libero/policy-server:0.1.0 .
	docker build -f services/sim_client/Dockerfile -t vla-libero/sim-client:0.1.0 .

# Not part of `make test`: it builds three images (minutes) and needs a container engine.
images-test: $(VENV)/.stamp-project $(VENV)/.stamp-sim
	VENV=$(VENV) bash scripts/images_test.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

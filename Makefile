# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The processors' hot path compiled in place by mypyc (setup.py lists it), rebuilt when a source changes.
COMPILED := $(VENV)/.compiled
CLI := $(BIN)/pinwheel-connector

.PHONY: help install run test lint typecheck kafka kafka-stop registry registry-stop topics bench bench-cost bench-peers chaos chaos-cluster \
	lock wheel-test clean docker-engine docker-images compose-test test-docker

help:
	@echo "make run      - the whole pipeline on a local Kafka, fed with signed traffic"
	@echo "make test     - the tests but the slow and compose ones, against a real Kafka it picks (JOBS=2 workers)"
	@echo "make kafka    - start the local Kafka broker (make kafka-stop to stop it)"
	@echo "make registry - start a local Apicurio schema registry (make registry-stop to stop it)"
	@echo "make lint     - ruff check + ruff format --check + lint-imports;  make typecheck - mypy --strict"
	@echo "make bench    - benchmarks (results in docs/);  make chaos - fault-injection runs"
	@echo "make bench-cost - what the processors cost the Kafka cluster per input event (records, offsets, bytes, transactions)"
	@echo "make bench-peers - the processors' bench job on Quix Streams too (.venv-peers)"
	@echo "make chaos-cluster - only the fault-injection runs on a 3-node Kafka cluster"
	@echo "make compose-test - docker compose end-to-end;  make test-docker - Kafka tests on testcontainers"
	@echo "make docker-engine - make sure a Docker engine answers;  make docker-images - build local base images"
	@echo "make lock     - re-pin constraints.txt (dev) and requirements.lock (runtime, hashed) after editing pyproject.toml"
	@echo "make wheel-test - the wheel in a fresh venv per CPython 3.11/3.12/3.13 found, its unit tests against it"

$(STAMP): pyproject.toml constraints.txt
	@echo "[setup] creating $(VENV) and installing the pinned dependencies (constraints.txt: make lock)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@PINWHEEL_COMPILE=0 $(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

$(COMPILED): $(STAMP) setup.py $(shell find processors schemas -name '*.py')
	@echo "[setup] compiling the processors' hot path with mypyc (setup.py; about a minute)"
	@PINWHEEL_COMPILE=1 $(BIN)/python setup.py -q build_ext --inplace >$(VENV)/compile.log 2>&1 \
		|| { tail -40 $(VENV)/compile.log; echo "[setup] compiling failed: $(VENV)/compile.log"; exit 1; }
	@find common processors schemas -name '*.so' -exec touch {} +  # newer than their sources (tests/conftest.py checks)
	@touch $(COMPILED)

install: $(COMPILED)

run: $(COMPILED)
	$(CLI) run

# `make test` runs on JOBS pytest-xdist worker processes sharing one broker and one registry
# (tests/shared_session.py); `make test JOBS=1` runs in one process, as before (docs/development.md).
JOBS ?= 2
XDIST = $(if $(filter 0 1,$(JOBS)),-p no:xdist,-n $(JOBS) --dist loadgroup)

test: $(COMPILED)
	$(BIN)/python -m pytest -m "not slow and not compose" --durations=20 $(XDIST)

# Containers: a Docker engine (docker/engine.sh installs and starts one as root on Debian, PINWHEEL_DOCKER_HOST
# picks its socket), the base images built locally where no registry answers (docker/local-images.sh, cached).
ENGINE := engine=$$(bash docker/engine.sh) && export "$$engine" && images=$$(bash docker/local-images.sh) \
	&& export $$images

docker-engine:
	@bash docker/engine.sh

docker-images: $(STAMP)
	@$(ENGINE)

compose-test: $(STAMP)
	@$(ENGINE) && $(BIN)/python -m pytest -m compose -s tests/compose

test-docker: $(COMPILED)
	@$(ENGINE) && PINWHEEL_TEST_BROKER=docker PINWHEEL_TEST_KAFKA_IMAGE=$$KAFKA_IMAGE \
		$(BIN)/python -m pytest -m "kafka and not slow and not secure" -p no:xdist

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

typecheck: $(STAMP)
	$(BIN)/mypy

kafka: $(STAMP)
	$(CLI) kafka start

kafka-stop: $(STAMP)
	$(CLI) kafka stop

registry: $(STAMP)
	$(CLI) registry start

registry-stop: $(STAMP)
	$(CLI) registry stop

topics: $(STAMP)
	$(CLI) topics create

bench: $(COMPILED)
	$(BIN)/python -m bench.codec_bench
	$(BIN)/python -m bench.event_bench
	$(BIN)/python -m bench.gateway_bench
	$(BIN)/python -m bench.pipeline_bench
	$(BIN)/python -m bench.processor_bench
	$(BIN)/python -m bench.restore_bench
	$(BIN)/python -m bench.e2e_bench
	$(BIN)/python -m bench.broker_cost

bench-cost: $(COMPILED)
	$(BIN)/python -m bench.broker_cost

PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

# The peers' own virtualenv: the [peers] extra alone (it conflicts with the project's pins); bench/peers runs
# the project's code in it from PYTHONPATH.
$(PEERS_STAMP): pyproject.toml
	@echo "[setup] creating $(PEERS_VENV) with the [peers] extra (Quix Streams, faust-streaming)"
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	@$(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['peers']))" > $(PEERS_VENV)/requirements.txt
	@$(PEERS_VENV)/bin/python -m pip install -q -r $(PEERS_VENV)/requirements.txt
	@touch $(PEERS_STAMP)

bench-peers: $(COMPILED) $(PEERS_STAMP)
	$(BIN)/python -m bench.peers --peers-python $(PEERS_VENV)/bin/python

chaos: $(COMPILED)
	$(BIN)/python -m chaos

chaos-cluster: $(COMPILED)
	$(BIN)/python -m chaos --cluster

# Re-pin the dependencies (after changing pyproject.toml; commit both files), for every platform and Python the
# project supports (uv's universal resolution): constraints.txt, every package of the dev venv (`make install`);
# requirements.lock, the runtime's alone (the [speed] extra included) with the hash of every file, as the
# Dockerfile installs them (`pip install --require-hashes`). The runtime's versions are the dev venv's: tested
# together. Versions already pinned are kept; UPGRADE=1 takes the
# newest releases the bounds in pyproject.toml allow.
UV_COMPILE := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --no-header --quiet \
	$(if $(UPGRADE),--upgrade)

lock: $(STAMP)
	$(UV_COMPILE) --extra dev --extra msk --extra speed --no-annotate -o constraints.txt
	$(UV_COMPILE) --extra speed --generate-hashes -c constraints.txt -o requirements.lock

# The built wheel installed as a user installs it (requirements.lock, then the wheel), on each CPython 3.11-3.13
# found on PATH or under pyenv (PYTHONS="path ..." to choose), and the unit tests run against it (tests/wheel_check.py).
wheel-test: $(STAMP)
	$(BIN)/python -m tests.wheel_check $(foreach p,$(PYTHONS),--python $(p))

clean:
	-$(CLI) kafka stop
	-$(CLI) registry stop
	find common processors schemas -name '*.so' -delete
	rm -rf $(VENV) build var .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache

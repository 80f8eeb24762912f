# POSTD Integrations — every developer task goes through here.
# `make up` runs the whole stack on embedded defaults; `make test` runs the suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := .postd

# Source roots put on the virtualenv's path (one .pth file); the same list feeds mypy.
ROOTS := libs/common libs/protos sandbox services/gateway services/connectors \
         services/vault services/publisher services/webhook-router services/health
PROTO_SRC := $(shell find protos -name '*.proto' 2>/dev/null)

.PHONY: help install protos up down test test-unit test-integration lint fmt lock bench chaos audit clean

help:
	@echo "make up      - run the whole stack locally (embedded PostgreSQL + broker)"
	@echo "make down    - stop a running 'make up'"
	@echo "make test    - run the whole test suite"
	@echo "make lint    - ruff, mypy --strict, buf lint"
	@echo "make bench   - benchmarks, reported as ratios against raw limits (BENCH_SCALE=full)"
	@echo "make chaos   - faults under a publish load against the whole stack"
	@echo "make audit   - pip-audit over requirements.lock (needs the internet)"
	@echo "make protos  - regenerate Python code from protos/"
	@echo "make lock    - re-resolve requirements.in into requirements.lock"

# The virtualenv is rebuilt whenever the lock file changes.
$(VENV)/.installed: requirements.lock
	@test -x $(PY) || { echo "==> creating virtualenv in $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing locked dependencies (requirements.lock)"
	@$(PY) -m pip install --disable-pip-version-check --progress-bar on --require-hashes -r requirements.lock
	@printf '%s\n' $(addprefix $(CURDIR)/,$(ROOTS)) > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/postd.pth"
	@touch $@

install: $(VENV)/.installed libs/protos/.stamp

# Generated code is built, never committed: every target that runs code depends on
# this stamp, which is older than any .proto that changed.
libs/protos/.stamp: $(VENV)/.installed $(PROTO_SRC) tools/gen_protos.py buf.yaml
	@echo "==> generating protobuf/gRPC code"
	@$(PY) tools/gen_protos.py
	@touch $@

protos: libs/protos/.stamp

up: install
	@$(PY) -m postd_common.devstack up --state $(STATE)

down:
	@$(PY) -m postd_common.devstack down --state $(STATE)

test: install
	@$(PY) tools/ensure_test_deps.py
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	@$(PY) -m pytest -m "not integration and not e2e" $(PYTEST_ARGS)

lint: install
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy
	@$(VENV)/bin/buf lint
	@$(VENV)/bin/hadolint Dockerfile

fmt: install
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

lock: $(VENV)/.installed
	@$(VENV)/bin/uv pip compile requirements.in --python-version 3.11 --generate-hashes -o requirements.lock

bench: install
	@$(PY) -m bench $(BENCH_ARGS)

# Kills, broker and database restarts and platform faults while posts are published;
# fails when any job is lost, duplicated or stuck (bench/chaos.py; CHAOS_ARGS="--jobs 100").
chaos: install
	@$(PY) -m bench.chaos $(CHAOS_ARGS)

# Known vulnerabilities in the locked dependencies; fails (never passes silently) when
# the vulnerability database cannot be reached (tools/audit.py).
audit: $(VENV)/.installed
	@$(PY) tools/audit.py

# Kubernetes manifests: build every overlay with `kubectl kustomize`, validate it offline
# against the Kubernetes schemas and check the deployment policy (deploy/check.py).
.PHONY: k8s-check
k8s-check: $(VENV)/.installed
	@$(PY) deploy/check.py

clean:
	rm -rf libs/protos/postd libs/protos/.stamp .mypy_cache .ruff_cache .pytest_cache

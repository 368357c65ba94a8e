# The two commands of the README are `make up` and `make test`; both install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Workspace packages over libs/: the services, and the `kubemate` command (cli) on top of them.
SERVICES := services/gateway services/ingest services/worker services/retrieval services/model_manager \
	services/cli
# A portable llama.cpp build: the default -march=native wheel can crash on another CPU, and pip
# caches the wheel it builds, so it must be one any machine of this kind can run.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock libs/pyproject.toml pyproject.toml $(addsuffix /pyproject.toml,$(SERVICES))
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=25.1" wheel
	# torch first and pinned: the CPU build on this machine's disk. Anything that depends on
	# torch, installed before it, would pull a multi-GB CUDA build.
	$(PIP) install --quiet "$$(grep '^torch==' requirements.lock)"
	# Every dependency at the version the lock pins, then the workspace's own packages, editable
	# and without dependencies (the lock holds them all, with every extra and the test tools).
	$(PIP) install --quiet -r requirements.lock
	$(PIP) install --quiet --no-deps -e libs $(addprefix -e ,$(SERVICES))
	touch $@

install: $(VENV)/.installed ## Create .venv and install Kubemate with the embedded backends and test tools

# After a pyproject's dependencies change (a unit test fails until then). LOCK_ARGS=--upgrade
# re-resolves from scratch instead of keeping the pins that are still allowed.
lock: ## Pin every dependency again into requirements.lock (pip-tools)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=25.1" wheel "pip-tools>=7.5"
	$(PY) .ci/lock.py $(LOCK_ARGS)

up: install console ## Install, then run the whole embedded stack (Ctrl-C stops it)
	$(VENV)/bin/kubemate up

# The web console (console/, served by the gateway at /): npm ci when its lock file changed,
# vite build when a source is newer than the build.
CONSOLE_SOURCES := $(shell find console/src console/public -type f 2>/dev/null) \
	$(addprefix console/,index.html package.json tsconfig.json vite.config.ts)
console/node_modules/.package-lock.json: console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund
	touch $@

console/dist/index.html: console/node_modules/.package-lock.json $(CONSOLE_SOURCES)
	cd console && npm run build

console: console/dist/index.html ## Build the web console (npm ci + vite build) when its sources changed

console-test: console ## The console's type check and component tests (Vitest)
	cd console && npm run typecheck && npm test

# Debian's prometheus and prometheus-alertmanager: promtool and amtool check and unit-test the
# shipped alert rules and Alertmanager config, and the servers themselves take an alert from a
# failed document to a webhook (tests/e2e/test_alerts_reach_a_person.py). Installed when the
# machine allows it (root with apt); those tests fail when it could have and did not (CI, root
# with apt), and skip only elsewhere.
# Chromium (Debian's, never a downloaded build) runs the console's browser tests, with a CJK font
# for its Chinese pages; without it those tests fail and say so.
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
test-tools:
	@command -v promtool >/dev/null && command -v amtool >/dev/null \
	  && command -v prometheus >/dev/null && command -v prometheus-alertmanager >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && { $(APT_INSTALL) prometheus prometheus-alertmanager >/dev/null 2>&1 \
	            || { apt-get update -qq && $(APT_INSTALL) prometheus prometheus-alertmanager >/dev/null; }; }; } \
	  || echo "prometheus/alertmanager not installed: the alert tests will skip (they fail in CI)"
	@command -v chromium >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && { $(APT_INSTALL) chromium fonts-wqy-microhei >/dev/null 2>&1 \
	            || { apt-get update -qq && $(APT_INSTALL) chromium fonts-wqy-microhei >/dev/null; }; }; } \
	  || echo "chromium not installed: the console's browser tests will fail"

test: install test-tools console ## Install, then run lint, the console's tests, unit, integration and e2e tests
	$(VENV)/bin/ruff check .
	$(MAKE) console-test
	$(VENV)/bin/pytest

test-unit: install ## Only the unit tests (no network)
	$(VENV)/bin/pytest tests/unit

# The k6 load tests (loadtest/k6/) through loadtest/k6_run.py: tokens minted, a few documents
# seeded per tenant, every script run. URL= a running stack (signed with the same key as this
# shell's KUBEMATE_AUTH__* settings), else a fresh embedded stack; LOAD_ARGS= more options
# (--scripts query,chat --env RATE=10 --sweep ...; see the script's --help).
load: install ## k6 load tests against URL= (default: a fresh embedded stack); LOAD_ARGS=...
	$(PY) loadtest/k6_run.py $(if $(URL),--url $(URL)) $(LOAD_ARGS)

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs/kubemate services

.PHONY: help install lock up console console-test test test-tools test-unit lint load

# make run   - set up what serving needs, then serve on 127.0.0.1:5000 (data in ./data)
# make test  - set up everything, then run every test
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LISTEN ?= 127.0.0.1:5000
ROOT ?= ./data

.PHONY: setup setup-serve run test lint clean clients interop-report clients-lint-report fuzz \
	conformance engines \
	conformance-report soak bench bench-tools bench-ui \
	screenshots

# Two installs: `make run` gets what serving needs; everything else also the test
# tools (pytest, ruff, schemathesis, ...). Each leaves a stamp; the test install
# leaves both.
$(VENV)/.installed-serve: pyproject.toml scripts/setup.sh
	scripts/setup.sh serve

$(VENV)/.installed-test: pyproject.toml scripts/setup.sh
	scripts/setup.sh test

setup: $(VENV)/.installed-test

setup-serve: $(VENV)/.installed-serve

run: setup-serve
	@echo "make run: serving http://$(LISTEN) with data in $(ROOT); stop with Ctrl-C."
	@echo "make run: the oci-ref command is $(VENV)/bin/oci-ref (or put it on PATH: . $(VENV)/bin/activate)"
	$(VENV)/bin/oci-ref serve --listen $(LISTEN) --root $(ROOT)

# Real clients for tests/interop (root + apt on Debian amd64). Elsewhere the interop
# tests run for the clients found and skip the rest, except under CI=true, where a
# missing client fails. CLIENTS picks install-clients.sh components (default: all;
# chromium is the headless browser of the web view tests).
CLIENTS ?= apt engines oras cosign skopeo118 crane oraspy chromium
clients:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f /etc/debian_version ] \
	    && [ "$$(dpkg --print-architecture)" = amd64 ]; then \
	  OCI_CLIENTS_COMPONENTS="$(CLIENTS)" scripts/install-clients.sh; \
	else echo "make clients: needs root, apt-get and Debian amd64; interop tests use what is installed"; fi

# The interop table (docs/interop.md), generated from a run: the interop tests against
# each of INTEROP_REGISTRIES with JUnit XML, then scripts/interop-report.py. Fails
# when the oci-ref run fails (the control peer is expected to fail some tests).
INTEROP_REGISTRIES ?= oci-ref distribution
INTEROP_XML := build/interop
interop-report: setup clients
	@mkdir -p $(INTEROP_XML); rm -f $(INTEROP_XML)/*.xml; rc=0; \
	for r in $(INTEROP_REGISTRIES); do \
	  $(PY) -m pytest tests/interop -q --registry=$$r --junitxml=$(INTEROP_XML)/$$r.xml; s=$$?; \
	  if [ $$s -eq 5 ]; then echo "make interop-report: no tests collected" >&2; s=1; fi; \
	  if [ $$r = oci-ref ] && [ $$s -ne 0 ]; then rc=$$s; fi; \
	done; \
	$(PY) scripts/interop-report.py $(INTEROP_REGISTRIES:%=$(INTEROP_XML)/%.xml) \
	  -o docs/interop.md || exit 1; \
	exit $$rc

# The client lint table (docs/clients-lint.md), generated from a run: the interop tests
# against `oci-ref serve --lint`, each module's lint report kept in LINT_XML, then
# scripts/clients-lint-report.py. Under CI=true a missing client fails the run.
LINT_XML := build/lint
clients-lint-report: setup clients
	@rm -rf $(LINT_XML); mkdir -p $(LINT_XML); \
	$(PY) -m pytest tests/interop -q --ignore=tests/interop/test_auth_clients.py \
	  --lint-reports $(LINT_XML) --junitxml=$(LINT_XML)/junit.xml; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make clients-lint-report: no tests collected" >&2; exit 1; fi; \
	$(PY) scripts/clients-lint-report.py $(LINT_XML) --junit $(LINT_XML)/junit.xml \
	  -o docs/clients-lint.md || exit 1; \
	exit $$rc

# PostgreSQL and haproxy for the scale-out tests (tests/engines.py; root + apt on
# Debian). Elsewhere those tests skip with the install command, or fail under CI=true.
engines:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f /etc/debian_version ]; then \
	  scripts/install-engines.sh; \
	else echo "make engines: needs root and apt-get (Debian); engine tests use what is installed"; fi

# pytest exit 5 (no tests collected) must fail the run, never pass silently.
# tests/e2e/test_conformance.py runs the upstream conformance suites (CONFORMANCE_DIR,
# default ../shared/conformance/; under CI=true missing binaries or podman fail).
# The tests run in PYTEST_WORKERS processes (pytest-xdist), twice the cores by default:
# most of their time is spent waiting on servers and client binaries, not computing.
# Each test file runs whole, in order, in one of them (--dist loadfile): a module's
# servers start once, as in a single-process run. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))
test: setup clients engines
	$(PY) -m ruff check oci_ref tests conformance bench scripts
	$(PY) -m mypy
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	  exit $$rc

# schemathesis for longer, with fresh seeds (make test runs a bounded, seeded pass).
FUZZ_EXAMPLES ?= 300
fuzz: setup
	OCI_REF_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OCI_REF_FUZZ_RANDOM=1 \
	  $(PY) -m pytest -s tests/e2e/test_openapi_fuzz.py

# The SIGKILL fault test for many iterations (make test runs a few).
SOAK_ITERATIONS ?= 50
soak: setup
	OCI_REF_SOAK_ITERATIONS=$(SOAK_ITERATIONS) OCI_REF_SOAK_SEED=$${OCI_REF_SOAK_SEED:-$$RANDOM} \
	  $(PY) -m pytest -s tests/e2e/test_crash_safety.py

# oci-ref against CNCF distribution in one run (bench/README.md); BENCH_ARGS=--quick
# for about a minute. distribution comes from `clients`, wrk and hey from `bench-tools`,
# PostgreSQL and haproxy (the replicas' column) from `engines`.
bench: setup clients bench-tools engines
	$(PY) bench/run.py $(BENCH_ARGS)

# The load generators of make bench (root + apt on Debian); without them the bench
# uses its built-in generator and says so.
bench-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -f /etc/debian_version ]; then \
	  scripts/install-bench.sh; \
	else echo "make bench-tools: needs root and apt-get (Debian); the bench uses what is installed"; fi

# The README's screenshots of the web view (docs/ui/), taken by its browser tests.
screenshots: setup clients
	OCI_REF_SCREENSHOTS=docs/ui $(PY) -m pytest -q tests/e2e/test_ui_browser.py \
		tests/e2e/test_ui_browser_cache.py

# The web view's render time for a repository with 1,000 tags (bench/ui.py).
bench-ui: setup
	$(PY) bench/ui.py $(BENCH_UI_ARGS)

# The upstream OCI conformance suites, each run against its own fresh oci-ref, in
# parallel (conformance/README.md). Suite binaries from CONFORMANCE_DIR (default
# ../shared/conformance/ when present), or CONFORMANCE_LEGACY_BIN / CONFORMANCE_BIN;
# CONFORMANCE_ENGINE=podman|docker runs them in a container built offline FROM
# scratch from the binaries. RUNS selects runs. Also writes the oci-conformance entry
# (distribution-spec/v1.1/oci-ref) under conformance/results/oci-conformance/.
# `make test` runs the same runs (tests/e2e/test_conformance.py).
# REPLICAS=N runs every suite through N replicas on PostgreSQL with blobs in S3 (moto;
# REPLICA_BLOBS=fs: a shared root) behind haproxy, each run on a fresh database and
# bucket (tests/replicas.py starts them; the engines come from `make engines`); the
# results then go to conformance/results/replicas-N, without an oci-conformance entry.
RUNS ?= legacy,legacy-alt,1.1,dev,all,basic,token
REPLICAS ?= 0
REPLICA_BLOBS ?= s3
ifeq ($(REPLICAS),0)
CONFORMANCE_RESULTS ?= conformance/results
CONFORMANCE_DOC ?= docs/conformance.md
CONFORMANCE_NEEDS := setup
else
CONFORMANCE_RESULTS ?= conformance/results/replicas-$(REPLICAS)
CONFORMANCE_DOC ?= docs/conformance-replicas.md
CONFORMANCE_NEEDS := setup engines
endif
export CONFORMANCE_DIR CONFORMANCE_LEGACY_BIN CONFORMANCE_BIN CONFORMANCE_ENGINE
export CONFORMANCE_ENGINE_ARGS CONFORMANCE_LEGACY_IMAGE CONFORMANCE_IMAGE
conformance: $(CONFORMANCE_NEEDS)
	$(PY) conformance/run.py --results $(CONFORMANCE_RESULTS) --runs $(RUNS) \
	  --replicas $(REPLICAS) --blobs $(REPLICA_BLOBS) $(CONFORMANCE_ARGS) \
	  --submission $(CONFORMANCE_RESULTS)/oci-conformance

# docs/conformance.md (with REPLICAS=N: docs/conformance-replicas.md) from the JUnit
# files of a fresh `make conformance` (the report is written even when a run fails,
# and then make fails).
conformance-report: setup
	$(MAKE) conformance; rc=$$?; \
	$(PY) scripts/conformance-report.py $(CONFORMANCE_RESULTS) -o $(CONFORMANCE_DOC) \
	  || exit 1; exit $$rc

lint: setup
	$(PY) -m ruff check oci_ref tests conformance bench scripts
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

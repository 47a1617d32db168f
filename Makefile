# oxlet: `make standalone` runs a one-node cluster; `make test` runs every test.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: setup build release test fmt-check clippy unit standalone clean

setup:
	@bash scripts/setup.sh

build:
	$(CARGO) build --workspace --all-targets

release:
	$(CARGO) build --release --bin oxlet

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Unit and integration tests (integration tests need root: namespaces, containerd, registries).
test: setup fmt-check clippy
	$(CARGO) test --workspace

standalone: setup release
	./target/release/oxlet standalone --data-dir $(CURDIR)/.oxlet

clean:
	$(CARGO) clean

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
	$(CARGO) test --workspace --no-fail-fast

# Where `make standalone` keeps its cluster: server/ and agent/ (bundled images in agent/images).
OXLET_DATA_DIR ?= /var/lib/oxlet

# A one-node cluster: the bundled images (built locally, no internet), then `oxlet standalone`
# in the foreground; Ctrl-C stops it, the next run finds the same cluster.
standalone: setup release
	$(CARGO) run --release -p oxlet-e2e --bin build_images -- --out $(OXLET_DATA_DIR)/agent/images
	./target/release/oxlet standalone --data-dir $(OXLET_DATA_DIR)

clean:
	$(CARGO) clean

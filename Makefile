# Tandem — every target installs what it needs first (scripts/setup.sh is
# idempotent), so `make demo` and `make test` work on a fresh Debian machine.
GO      ?= go
BIN     ?= bin
PKGS    ?= ./...
# Integration tests start real MariaDB/Redis/broker processes; give them room.
TEST_TIMEOUT ?= 45m

.PHONY: all setup build test test-short bench demo lint fmt clean

all: build

setup:
	@bash scripts/setup.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# The one test command (also what .ci/run calls). -race always; -count=1 so
# a cached pass never hides a real run.
test: setup lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

# Unit tests only (no servers): fast feedback while editing.
test-short:
	$(GO) test -race -short -count=1 $(PKGS)

bench: setup build
	@bash scripts/bench.sh

demo: setup build
	$(GO) run ./cmd/tandem-demo

clean:
	rm -rf $(BIN) .tandem

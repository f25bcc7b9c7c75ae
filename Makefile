# rotatord: `make run` for a local try, `make test` for every test.
GO      ?= go
PKGS    := ./...

.PHONY: all build run test browser vet fmt-check bench bench-rotation clean

all: build

build:
	$(GO) build -o bin/rotatord ./cmd/rotatord

# Everything local, no Docker: PostgreSQL from the machine's binaries in
# .rotatord-dev/, an in-process nats-server, rotatord and a demo agent
# process that rotates every two minutes. The binary runs itself (not
# `go run`), so Ctrl-C ends it with exit status 0. DEVFLAGS adds flags
# (rotatord dev -h lists them).
run:
	@$(GO) build -o bin/rotatord ./cmd/rotatord
	@bin/rotatord dev $(DEVFLAGS)

# Formatting, vet, and every test with the race detector. Tests start their
# own PostgreSQL (or use ROTATORD_TEST_DATABASE_URL) and nats-server; the
# console's tests drive Debian's chromium, installed first when missing.
test: fmt-check vet browser
	$(GO) test -race -count=1 -parallel 4 -timeout 10m $(PKGS)

# Debian's chromium for the console's browser tests (headless), installed
# with apt-get when it is missing and this runs as root; otherwise say how.
# ROTATORD_SKIP_BROWSER=1 skips those tests instead.
browser:
	@if [ -z "$$ROTATORD_SKIP_BROWSER" ] && ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the browser tests"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "the browser tests need chromium: sudo apt-get install chromium (or ROTATORD_SKIP_BROWSER=1 make test)"; \
		fi; \
	fi

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# Resolver lookups: Go benchmarks of the handler, then a loopback load run
# side by side with a bare net/http handler (docs/benchmarks.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/resolver/
	$(GO) run ./cmd/resolverbench $(BENCHFLAGS)

# Rotation end to end with 1,000 and 10,000 connected agents, the time
# from a revoke request to the agent being dropped (also after 3,000
# revocations), and three simulated days of a 10,000-agent fleet's account
# JWT (docs/benchmarks.md).
bench-rotation:
	$(GO) test -run '^$$' -bench 'FleetRotation' -benchtime 1x -timeout 30m ./cmd/rotatord
	$(GO) test -run '^$$' -bench 'RevokeToDrop' -benchtime 300x -timeout 20m ./cmd/rotatord
	$(GO) test -run '^$$' -bench 'SteadyState/agents=10000' -benchtime 1x -timeout 60m ./internal/rotate

# A development CA and the TLS certificates of the compose stack (nats-server,
# rotatord, the resolver client, PostgreSQL, an admin and an example agent) in
# deploy/certs/ (gitignored). Existing ones are kept; FORCE=1 makes new ones.
.PHONY: certs
certs:
	sh scripts/dev-certs.sh $(if $(FORCE),--force) deploy/certs

clean:
	rm -rf bin

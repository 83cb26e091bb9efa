# extauthz: run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/extauthz
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The release build: a static, reproducible binary. The Dockerfile runs the same command.
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BUILD_FLAGS := -trimpath -ldflags "$(LDFLAGS)"
RUN_ARGS ?= --config examples/extauthz.yaml
TEST_TIMEOUT ?= 12m
# How long each fuzz target runs: briefly in `make test`, longer by hand (make fuzz FUZZTIME=10m).
# `make test` counts executions (Nx), not seconds: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" when a duration -fuzztime expires on a loaded machine (go.dev/issue/75804,
# fixed in Go 1.27); a count has no deadline to race.
FUZZTIME ?= 2s
TEST_FUZZTIME ?= 3000x
SOAK_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the static binary into bin/extauthz.
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o $(BIN) ./cmd/extauthz

.PHONY: run
run: build ## Build and run the sidecar with the example config (embedded in-memory store unless redis.url is set).
	./$(BIN) serve $(RUN_ARGS)

.PHONY: test
test: ## Run every test (unit, integration against redis-server, end to end) with -race.
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)

.PHONY: fuzz
fuzz: ## Run every fuzz target (found by name) for FUZZTIME each; seed corpora also run in every go test.
	@set -e; n=0; log=$$(mktemp); for f in $$(grep -rl --include='*_test.go' '^func Fuzz' internal cmd); do \
	  dir=$$(dirname $$f); \
	  for fn in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "fuzz ./$$dir $$fn ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$dir >$$log 2>&1 || { cat $$log; rm -f $$log; echo "fuzz: $$n passed, 1 failed"; exit 1; }; \
	    n=$$((n+1)); \
	  done; \
	done; rm -f $$log; echo "fuzz: $$n passed, 0 failed"

.PHONY: bench
bench: ## Run the benchmark matrix against a private Redis (not a test; BENCH_ARGS='-topology cluster').
	$(GO) run ./test/bench -mode full $(BENCH_ARGS)

.PHONY: bench-quick
bench-quick: ## A shorter subset of the benchmark matrix (BENCH_ARGS='-topology sentinel').
	$(GO) run ./test/bench -mode quick $(BENCH_ARGS)

.PHONY: soak
soak: ## 10-minute memory soak: RSS, heap, goroutines, Redis connections must stay flat (not a test; SOAK_ARGS='-duration 2m').
	$(GO) run ./test/bench -mode soak $(SOAK_ARGS)

.PHONY: microbench
microbench: ## Go micro-benchmarks of the hot path, with allocations.
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

.PHONY: examples
examples: ## Write examples/nginx, caddy and traefik again from examples/extauthz.yaml (a test checks they match).
	@mkdir -p examples/traefik
	$(GO) run ./cmd/extauthz config nginx --config examples/extauthz.yaml --listen '{{LISTEN}}' --upstream '{{UPSTREAM}}' --extauthz '{{EXTAUTHZ_HTTP}}' > examples/nginx/nginx.conf.tmp && mv examples/nginx/nginx.conf.tmp examples/nginx/nginx.conf
	$(GO) run ./cmd/extauthz config caddy --config examples/extauthz.yaml --listen '{{LISTEN}}' --upstream '{{UPSTREAM}}' --extauthz '{{EXTAUTHZ_HTTP}}' --bind '{{BIND}}' --admin '{{ADMIN}}' > examples/caddy/Caddyfile.tmp && mv examples/caddy/Caddyfile.tmp examples/caddy/Caddyfile
	$(GO) run ./cmd/extauthz config traefik --config examples/extauthz.yaml --listen '{{LISTEN}}' --upstream '{{UPSTREAM}}' --extauthz '{{EXTAUTHZ_HTTP}}' > examples/traefik/dynamic.yaml.tmp && mv examples/traefik/dynamic.yaml.tmp examples/traefik/dynamic.yaml

.PHONY: lint
lint: ## gofmt and go vet.
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	$(GO) vet ./...

.PHONY: image
image: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t extauthz:$(VERSION) .

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin

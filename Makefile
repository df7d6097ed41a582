# CommuCat build, run and test targets. `make help` lists them.

GO        ?= go
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 15s
BENCHTIME ?= 1s
MATRIX_DIR ?= $(BIN)/testnet-matrix
STATICCHECK_VERSION := v0.8.2
# Under CI=true, tests that need root, TUN, a server or a built binary fail
# instead of skipping when their prerequisite is missing.
ifeq ($(CI),true)
export COMMUCAT_REQUIRE_ALL := 1
endif

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: plugins ## build bin/commucat and the plugins
	$(GO) build -trimpath -o $(BIN)/commucat ./cmd/commucat

.PHONY: plugins
plugins: ## build the transport plugins into bin/plugins/
	$(GO) build -trimpath -o $(BIN)/plugins/ ./cmd/commucat-transport-...

.PHONY: proto
proto: ## regenerate plugins/proto (needs protoc, protoc-gen-go, protoc-gen-go-grpc)
	cd plugins/proto && protoc --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative transport.proto

.PHONY: run
run: build ## build and run the gateway on its embedded defaults
	./$(BIN)/commucat gateway

# Debian packages the tests use: openssl (a TLS prober in the reality
# tests) and iproute2 (to inspect the testnet's namespaces by hand).
TEST_PACKAGES := openssl iproute2

.PHONY: test-deps
test-deps: ## install the Debian packages the tests need (as root, when missing)
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run make test-deps as root)"; fi; \
	fi

.PHONY: test
test: test-deps build ## install what the tests need, then run the whole test suite
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 12m $(PKGS)

.PHONY: race
race: ## run the test suite with the race detector
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m $(PKGS)

.PHONY: lint
lint: ## gofmt, go vet, staticcheck, and the Windows and macOS builds of commucat
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)
	GOOS=windows $(GO) build -o /dev/null ./cmd/commucat
	GOOS=darwin $(GO) build -o /dev/null ./cmd/commucat

.PHONY: bench
bench: build ## run every benchmark, then commucat bench (results: docs/BENCHMARKS.md)
	@f=/sys/module/haltpoll/parameters/guest_halt_poll_ns; if [ "$$(cat $$f 2>/dev/null)" = 0 ]; then \
		echo "note: idle vCPUs halt at once here ($$f is 0): round trips include waking them (docs/BENCHMARKS.md)"; fi
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) $(PKGS)
	$(GO) test -count=1 -run='Sweep|FailoverTime' -v ./core/router -args -sweep
	./$(BIN)/commucat bench --plugins $(BIN)/plugins

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each
	GO=$(GO) FUZZTIME=$(FUZZTIME) bash .ci/fuzz $(PKGS)

.PHONY: testnet-matrix
testnet-matrix: build ## (root) every transport x every censor profile in the testnet: report and pictures in MATRIX_DIR
	./$(BIN)/commucat testnet matrix --dir $(MATRIX_DIR)

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN)

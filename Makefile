# provisiond — build, test and run. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS := -X github.com/edgeprov/provisiond/internal/version.Version=$(VERSION) \
           -X github.com/edgeprov/provisiond/internal/version.Commit=$(COMMIT)
PKGS := ./...
HOST_PKGS := ./primitives/... ./cmd/provisiond ./e2e ./reliability
TEST_TIMEOUT ?= 15m
BENCH_TIME ?= 1s
BENCH_REPEAT ?= 4
# more runs of the 10,000-node fleet benchmark (explorer/server/pgstore), for medians
FLEET_REPEAT ?= 2
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
PREFIX ?= /usr/local

.PHONY: help build test lint bench demo deps install clean fuzz

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# Static binaries (CGO_ENABLED=0): no libc or dynamic loader is mapped into
# the daemon (1.4 MB of its idle RSS), and names resolve through Go's own
# resolver (/etc/hosts and DNS, no NSS modules). Symbols and DWARF are kept:
# they are not loaded, so stripping them (-s -w) would shrink the file, not
# the RSS.
build: ## build provisiond, explorerd and provctl into bin/ (static)
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

test: ## run every test with the race detector (root tests run for real as root)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list $(PKGS) | grep -vxF -f <($(GO) list $(HOST_PKGS)))
	@# These act on the host as root (namespaces, mounts, runc) and start daemons whose
	@# orphan cleanup owns every prv- namespace of the host: one package at a time.
	$(GO) test -race -count=1 -p 1 -timeout $(TEST_TIMEOUT) $(HOST_PKGS)

lint: ## go vet, staticcheck and gofmt
	$(GO) vet $(PKGS)
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) $(PKGS)
	@fmt=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$fmt" ]; then echo "not gofmt-ed:"; echo "$$fmt"; exit 1; fi

bench: bench-deps ## run every benchmark and write docs/benchmarks.md (BENCH_TIME=1s; BENCH_REPEAT=4 more engine throughput runs, the doc shows their median; root runs the container and lab ones)
	@mkdir -p .bench
	@# -p 1: one package's benchmarks at a time, so they measure the machine, not each other.
	set -o pipefail; $(GO) test -p 1 -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) -timeout 90m $(PKGS) | tee .bench/out.txt
	set -o pipefail; PROVISIOND_LAB_TEST=1 $(GO) test -run '^$$' -bench 'TunnelThroughput|NetworksRSS' -benchmem -benchtime 1x -timeout 30m ./lab/ | tee -a .bench/out.txt
	set -o pipefail; $(GO) test -run '^$$' -bench 'EngineThroughput' -benchmem -benchtime $(BENCH_TIME) -count $(BENCH_REPEAT) -timeout 30m ./internal/engine/ | tee -a .bench/out.txt
	set -o pipefail; $(GO) test -run '^$$' -bench 'Fleet' -benchmem -benchtime $(BENCH_TIME) -count $(FLEET_REPEAT) -timeout 30m ./explorer/server/pgstore/ | tee -a .bench/out.txt
	$(GO) run ./internal/benchdoc -out docs/benchmarks.md -command "make bench BENCH_TIME=$(BENCH_TIME) BENCH_REPEAT=$(BENCH_REPEAT)" < .bench/out.txt
	@echo "wrote docs/benchmarks.md"

.PHONY: bench-deps
bench-deps: ## install what the benchmarks compare against (podman; root)
	./scripts/bench-deps.sh

fuzz: ## run each fuzz target for FUZZ_TIME (default 10s)
	@./scripts/fuzz.sh $${FUZZ_TIME:-10s}

.PHONY: soak
SOAK_KILLS ?= 100
SOAK_TIMEOUT ?= 60m
soak: ## run the reliability proofs with the long kill -9 soak (SOAK_KILLS=100; root; about 10 minutes)
	SOAK_KILLS=$(SOAK_KILLS) $(GO) test -race -count=1 -v -timeout $(SOAK_TIMEOUT) ./reliability/

.PHONY: screenshots
screenshots: ## rewrite docs/ui-*.png: the explorer's pages in headless Chromium (chromium)
	$(GO) test -count=1 -run 'TestUIInBrowser' ./explorer/server/ -args -screenshots $(CURDIR)/docs

demo: build ## start explorerd and provisiond locally, reserve a network, a volume and a container (root)
	./scripts/demo.sh

deps: ## install what the tests and the daemon need (Debian packages, staticcheck)
	./scripts/deps.sh

install: build ## install binaries into $(PREFIX)/bin and the systemd units
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/systemd/system
	install -m 0755 $(BIN)/provisiond $(BIN)/explorerd $(BIN)/provctl $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 systemd/provisiond.service systemd/explorerd.service $(DESTDIR)/etc/systemd/system/

clean: ## remove build output and the demo state
	rm -rf $(BIN) .demo

.PHONY: systemd-test
systemd-test: ## boot systemd (systemd-nspawn, Debian rootfs cached in /var/cache) and prove provisiond under its unit (root; about 3 minutes, 5 with the first rootfs build)
	PROVISIOND_SYSTEMD_TEST=1 $(GO) test -race -count=1 -v -timeout 30m ./systemd/systemdtest/ $(SYSTEMD_TEST_FLAGS)

.PHONY: lab-test
lab-test: ## prove networks in a multi-node lab of namespaces: egress, isolation, published ports, WireGuard across nodes (root; about 4 minutes)
	PROVISIOND_LAB_TEST=1 $(GO) test -race -count=1 -v -timeout 30m ./lab/ $(LAB_TEST_FLAGS)

.PHONY: lab-bench
lab-bench: ## measure tunnel vs underlay TCP throughput between lab nodes and the memory (RSS and PSS) of 10 and 100 WireGuard networks (root; about 5 minutes)
	PROVISIOND_LAB_TEST=1 $(GO) test -count=1 -run '^$$' -bench 'TunnelThroughput|NetworksRSS' -benchtime 1x -timeout 30m ./lab/

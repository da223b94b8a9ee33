# Tenure. `make demo` and `make test` are the quick start; everything else
# the targets need (linters) is installed into .tools/ through the Go proxy.

GO          ?= go
TOOLS       := $(CURDIR)/.tools/bin
STATICCHECK := $(TOOLS)/staticcheck
STATICCHECK_VERSION := v0.8.2
PKGS        := ./...
# Fuzz targets run for FUZZTIME each by `make fuzz`.
FUZZTIME    ?= 20s

.PHONY: all demo test unit sim sim-long lint fmt vet staticcheck bench bench-micro bench-peers etcdpeer fuzz tools clean

all: lint test

## demo: a local cluster on loopback: assignment, a crash and a graceful leave.
demo:
	$(GO) run ./cmd/tenure-demo

## test: lint, every test with the race detector, the etcd side of the benchmark (its own module), then the long simulation.
test: lint unit etcdpeer sim

unit:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# SIM_SEEDS seeded worlds of the lease protocol (random faults, then the
# extreme-drift set) without the race detector, which finds nothing in the
# single-goroutine simulation and slows it tenfold. A failure prints the
# seed and the command that replays it.
SIM_SEEDS ?= 2000
sim:
	TENURE_SIM_SEEDS=$(SIM_SEEDS) $(GO) test -count=1 -timeout 15m -run 'TestRandomSeeds|TestScenarioDrift$$' -v ./lease/leasesim

## sim-long: SIM_LONG_SEEDS random worlds (about an hour on 2 cores); SIM_FROM sets the first seed.
SIM_LONG_SEEDS ?= 100000
SIM_FROM ?= 1
sim-long:
	TENURE_SIM_SEEDS=$(SIM_LONG_SEEDS) TENURE_SIM_FROM=$(SIM_FROM) $(GO) test -count=1 -timeout 6h -run 'TestRandomSeeds$$' -v ./lease/leasesim

## lint: gofmt, go vet, staticcheck and the generated-code check.
lint: fmt vet staticcheck proto-check

fmt:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) $(PKGS)

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(STATICCHECK)

## bench: every scenario of the harness at a quick size; writes bench/RESULTS.md and bench/plots/.
bench:
	$(GO) run ./bench all

## bench-micro: the lookup micro-benchmarks (Tenure against buraksezer/consistent, and the client's local table).
bench-micro:
	$(GO) test ./shard -run '^$$' -bench . -benchmem -count 5
	$(GO) test ./client -run '^$$' -bench Lookup -benchmem -count 5

## fuzz: run each fuzz target (every decoder of network or user input) for FUZZTIME.
fuzz:
	$(GO) test ./membership -run '^$$' -fuzz '^FuzzDecodeMeta$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shard -run '^$$' -fuzz '^FuzzDecodeClaims$$' -fuzztime $(FUZZTIME)
	$(GO) test ./shard -run '^$$' -fuzz '^FuzzDecodeRange$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proto/voter/v1 -run '^$$' -fuzz '^FuzzRequestFromPB$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proto/voter/v1 -run '^$$' -fuzz '^FuzzReplyFromPB$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proto/tenure/v1 -run '^$$' -fuzz '^FuzzEntryFromPB$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proto/tenure/v1 -run '^$$' -fuzz '^FuzzCheckNodeID$$' -fuzztime $(FUZZTIME)
	$(GO) test ./proto/tenure/v1 -run '^$$' -fuzz '^FuzzPageStart$$' -fuzztime $(FUZZTIME)
	$(GO) test ./server -run '^$$' -fuzz '^FuzzRequests$$' -fuzztime $(FUZZTIME)
	$(GO) test ./client -run '^$$' -fuzz '^FuzzWatchEvents$$' -fuzztime $(FUZZTIME)
	$(GO) test ./daemon -run '^$$' -fuzz '^FuzzLoadOptions$$' -fuzztime $(FUZZTIME)
	$(GO) test ./daemon -run '^$$' -fuzz '^FuzzParseVoters$$' -fuzztime $(FUZZTIME)
	$(GO) test ./daemon -run '^$$' -fuzz '^FuzzParseSeeds$$' -fuzztime $(FUZZTIME)
	$(GO) test ./daemon -run '^$$' -fuzz '^FuzzParseGossipKeys$$' -fuzztime $(FUZZTIME)
	$(GO) test ./daemon -run '^$$' -fuzz '^FuzzParseAddr$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/tenurectl -run '^$$' -fuzz '^FuzzParseInterleaved$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/tenurectl -run '^$$' -fuzz '^FuzzParseAddrs$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cmd/tenurectl -run '^$$' -fuzz '^FuzzParseShard$$' -fuzztime $(FUZZTIME)

## bench-peers: check the etcd side (target etcdpeer), then Tenure against etcd's concurrency.Election in one run at a quick size (PEERS_FLAGS; `go run ./bench peers -json` for the full size).
PEERS_FLAGS ?= -reps 5 -moves 50
bench-peers: etcdpeer
	$(GO) run ./bench peers $(PEERS_FLAGS)

## etcdpeer: vet, staticcheck, test (-race) and build bench/etcdpeer, the etcd side of `bench peers`: a module of its own, which `./...` in Tenure's module does not reach.
etcdpeer: $(STATICCHECK)
	cd bench/etcdpeer && $(GO) vet ./... && $(STATICCHECK) ./... && $(GO) test -race -count=1 ./... && $(GO) build -o /dev/null .

clean:
	rm -rf .tools

.PHONY: build
## build: bin/tenured (the daemon) and bin/tenurectl (the CLI).
build:
	$(GO) build -o bin/ ./cmd/tenured ./cmd/tenurectl

# ---------------------------------------------------------------------------
# Docker. Images are built FROM scratch around static binaries built here
# (no registry is needed); e2e/docker/compose.yaml runs a 5-node cluster of
# them. DOCKER_NODE_PKG is the node binary: tenured, or any program that
# takes tenured's flags.

.PHONY: docker-images e2e e2e-clean

DOCKER           ?= docker
DOCKER_CONTEXT   := bin/docker
DOCKER_NODE_PKG  ?= ./cmd/tenured
DOCKER_STORE_PKG ?= ./examples/ledger/cmd/ledgerstore
E2E_TIMEOUT      ?= 20m

## docker-images: tenure-node:dev (DOCKER_NODE_PKG) and tenure-ledgerstore:dev for e2e/docker/compose.yaml.
docker-images:
	rm -rf $(DOCKER_CONTEXT) && mkdir -p $(DOCKER_CONTEXT)/data
	CGO_ENABLED=0 $(GO) build -trimpath -o $(DOCKER_CONTEXT)/tenure-node $(DOCKER_NODE_PKG)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(DOCKER_CONTEXT)/tenure-box ./e2e/docker/cmd/tenure-box
	CGO_ENABLED=0 $(GO) build -trimpath -o $(DOCKER_CONTEXT)/ledgerstore $(DOCKER_STORE_PKG)
	$(DOCKER) build -q -f e2e/docker/Dockerfile --target node -t tenure-node:dev $(DOCKER_CONTEXT)
	$(DOCKER) build -q -f e2e/docker/Dockerfile --target ledgerstore -t tenure-ledgerstore:dev $(DOCKER_CONTEXT)

## e2e: the Docker chaos suite (needs a Docker engine and docker compose or docker-compose; builds its own images and removes them).
e2e:
	$(GO) test -tags e2edocker -count=1 -timeout $(E2E_TIMEOUT) -v ./e2e/docker

## e2e-clean: remove what an interrupted e2e run left behind (its compose projects are named tenuree2e*, its images labelled tenure.e2e).
e2e-clean:
	-ids=$$($(DOCKER) ps -aq --filter name=tenuree2e); [ -z "$$ids" ] || { $(DOCKER) unpause $$ids 2>/dev/null; $(DOCKER) rm -f $$ids; }
	-ids=$$($(DOCKER) network ls -q --filter name=tenuree2e); [ -z "$$ids" ] || $(DOCKER) network rm $$ids
	-ids=$$($(DOCKER) volume ls -q --filter name=tenuree2e); [ -z "$$ids" ] || $(DOCKER) volume rm $$ids
	-ids=$$($(DOCKER) images -q --filter label=tenure.e2e); [ -z "$$ids" ] || $(DOCKER) rmi -f $$ids

# ---------------------------------------------------------------------------
# Protocol buffers. Every .proto file under proto/ is compiled in one protoc
# run; the generated Go code is committed next to it, so that building Tenure
# needs neither protoc nor the plugins. protoc comes from the system
# (Debian: protobuf-compiler); the plugins are pinned here and installed into
# $(TOOLS) with two separate `go install` commands, since they live in
# different modules. Each plugin binary carries its version in its file name,
# so changing a version below reinstalls it instead of reusing a stale one.

.PHONY: proto proto-check proto-lint proto-tools

PROTOC                     ?= protoc
PROTO_MODULE               := github.com/tenurehq/tenure
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTOC_GEN_GO              := $(TOOLS)/protoc-gen-go-$(PROTOC_GEN_GO_VERSION)
PROTOC_GEN_GO_GRPC         := $(TOOLS)/protoc-gen-go-grpc-$(PROTOC_GEN_GO_GRPC_VERSION)
PROTO_FILES                 = $(shell find proto -name '*.proto' 2>/dev/null | LC_ALL=C sort)

# proto_gen compiles every .proto file and writes the Go code into the
# directory $(1), laid out by import path below the module root.
define proto_gen
$(PROTOC) -I . \
	--plugin=protoc-gen-go=$(PROTOC_GEN_GO) \
	--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GO_GRPC) \
	--go_out=$(1) --go_opt=module=$(PROTO_MODULE) \
	--go-grpc_out=$(1) --go-grpc_opt=module=$(PROTO_MODULE) \
	$(PROTO_FILES)
endef

# protoc_ensure installs protoc when it is missing, the shell runs as root
# and apt-get exists (a CI container); otherwise it leaves protoc missing and
# the target decides whether that is an error or a skip.
define protoc_ensure
command -v $(PROTOC) >/dev/null 2>&1 || { \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "$(PROTOC) not found: installing protobuf-compiler with apt-get"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null; }; \
	fi; }
endef

# protoc header lines: protoc-gen-go writes "// \tprotoc        v3.21.12" and
# protoc-gen-go-grpc "// - protoc             v3.21.12" into every file.
PROTOC_VERSION_LINE := ^//( 	| - )protoc +v

$(PROTOC_GEN_GO):
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	mv $(TOOLS)/protoc-gen-go $@

$(PROTOC_GEN_GO_GRPC):
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	mv $(TOOLS)/protoc-gen-go-grpc $@

proto-tools: $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)

## proto: regenerate the Go code of every .proto file under proto/.
# Generated files whose .proto file is gone are removed. protoc writes into a
# scratch directory first, so a compile error leaves the tree untouched.
proto: proto-tools
	@set -e; $(protoc_ensure); \
	command -v $(PROTOC) >/dev/null 2>&1 || { echo "proto: protoc not found; install protobuf-compiler (Debian) or set PROTOC"; exit 1; }; \
	if [ -z "$(PROTO_FILES)" ]; then echo "proto: no .proto files under proto/"; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "$(PROTOC) $(PROTO_FILES)"; \
	$(call proto_gen,$$tmp); \
	find proto -name '*.pb.go' -delete; \
	cp -R "$$tmp/proto/." proto/

## proto-lint: compile every .proto file with warnings as errors and check
## that each file's package and go_package match its directory.
# proto/voter/v1/x.proto must declare `package tenure.voter.v1;` (and
# proto/tenure/v1, the public API, `package tenure.v1;`) and a
# go_package of $(PROTO_MODULE)/proto/voter/v1, or the generated code would
# land elsewhere. Skipped, with a message, where protoc cannot be had.
proto-lint:
	@set -e; $(protoc_ensure); \
	if ! command -v $(PROTOC) >/dev/null 2>&1; then echo "proto-lint: SKIPPED: protoc is unavailable"; exit 0; fi; \
	if [ -z "$(PROTO_FILES)" ]; then exit 0; fi; \
	$(PROTOC) -I . --fatal_warnings --descriptor_set_out=/dev/null $(PROTO_FILES); \
	bad=0; \
	for f in $(PROTO_FILES); do \
		dir=$${f%/*}; pkg="tenure.$$(echo "$${dir#proto/}" | tr / . | sed 's/^tenure\.//')"; \
		grep -Eq "^package $$pkg;" "$$f" || { echo "$$f: want package $$pkg;"; bad=1; }; \
		grep -Eq "^option go_package = \"$(PROTO_MODULE)/$$dir[;\"]" "$$f" || \
			{ echo "$$f: want option go_package = \"$(PROTO_MODULE)/$$dir;...\""; bad=1; }; \
	done; \
	exit $$bad

## proto-check: fail if the committed generated code differs from what the
## .proto files and the pinned plugins produce.
# The comparison ignores the header line that records the protoc version:
# protoc comes from the system package manager, so another machine (a newer
# Debian, a developer's laptop) may run another release that generates the
# same code but stamps a different version. The plugin versions, pinned
# above, are compared like the rest of the file. Skipped, with a message,
# where protoc cannot be had.
proto-check: proto-lint proto-tools
	@set -e; $(protoc_ensure); \
	if ! command -v $(PROTOC) >/dev/null 2>&1; then echo "proto-check: SKIPPED: protoc is unavailable"; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p "$$tmp/gen" "$$tmp/committed" "$$tmp/regenerated"; \
	if [ -n "$(PROTO_FILES)" ]; then $(call proto_gen,$$tmp/gen); fi; \
	for f in $$(find proto -name '*.pb.go'); do \
		mkdir -p "$$tmp/committed/$${f%/*}"; \
		sed -E '\#$(PROTOC_VERSION_LINE)#d' "$$f" > "$$tmp/committed/$$f"; \
	done; \
	for f in $$(cd "$$tmp/gen" && find . -name '*.pb.go'); do \
		mkdir -p "$$tmp/regenerated/$${f%/*}"; \
		sed -E '\#$(PROTOC_VERSION_LINE)#d' "$$tmp/gen/$$f" > "$$tmp/regenerated/$$f"; \
	done; \
	if ! (cd "$$tmp" && diff -ru committed regenerated); then \
		echo; \
		echo "proto-check: the generated code under proto/ is out of date with its .proto files"; \
		echo "proto-check: or with the pinned plugins (the protoc version line is ignored)."; \
		echo "proto-check: run 'make proto' and commit the result; never edit *.pb.go by hand."; \
		exit 1; \
	fi; \
	echo "proto-check: generated code is up to date"

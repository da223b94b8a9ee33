# Tenure. `make demo` and `make test` are the quick start; everything else
# the targets need (linters) is installed into .tools/ through the Go proxy.

GO          ?= go
TOOLS       := $(CURDIR)/.tools/bin
STATICCHECK := $(TOOLS)/staticcheck
STATICCHECK_VERSION := v0.8.2
PKGS        := ./...
# Fuzz targets run for FUZZTIME each by `make fuzz`.
FUZZTIME    ?= 20s

.PHONY: all demo test unit lint fmt vet staticcheck bench fuzz tools clean

all: lint test

## demo: a local cluster on loopback: assignment, a crash and a graceful leave.
demo:
	$(GO) run ./cmd/tenure-demo

## test: lint, then every test with the race detector.
test: lint unit

unit:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## lint: gofmt, go vet and staticcheck.
lint: fmt vet staticcheck

fmt:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) $(PKGS)

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(STATICCHECK)

## bench: lookup benchmarks, Tenure against buraksezer/consistent in one run.
bench:
	$(GO) test ./shard -run '^$$' -bench . -benchmem -count 5

## fuzz: run each fuzz target for FUZZTIME.
fuzz:
	$(GO) test ./membership -run '^$$' -fuzz '^FuzzDecodeMeta$$' -fuzztime $(FUZZTIME)

clean:
	rm -rf .tools

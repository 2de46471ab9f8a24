# The two commands of the README: `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/stream-conductor
LDFLAGS := -s -w -X main.version=$(VERSION)

FUZZTIME ?= 30s

.PHONY: run test deps deps-test build lint unit integration fuzz bench clean

## run: install what is missing, build, and start the daemon with its defaults,
## under the highest open-file limit the shell allows (nginx inherits it: one
## descriptor per stream)
run: deps build
	ulimit -n $$(ulimit -Hn) 2>/dev/null || echo "make run: could not raise the open-file limit (ulimit -n); the daemon logs how many streams it allows"; \
	exec ./$(BIN)

## test: gofmt check, go vet, every test (unit and integration) with -race,
## and every Go benchmark once, so that none rots
test: deps-test lint
	$(GO) test -race -count=1 ./...
	$(GO) test -run XXX -bench . -benchtime 1x ./...

## bench: the Go benchmarks of BENCHMARKS.md
bench:
	$(GO) test -run XXX -bench . -benchmem ./store ./nginxconf ./reconcile ./httpapi

deps:
	@./scripts/install-deps.sh

deps-test:
	@./scripts/install-deps.sh test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/stream-conductor
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/sc-echo ./cmd/sc-echo
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/scbench ./cmd/scbench

lint:
	@./scripts/check-tracked.sh
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration:
	$(GO) test -race -count=1 -v ./integration/

## fuzz: run every fuzz target for FUZZTIME each (go test runs their seed corpora always)
fuzz:
	$(GO) test ./nginxconf -run XXX -fuzz FuzzValidateRender -fuzztime $(FUZZTIME)
	$(GO) test ./httpapi -run XXX -fuzz FuzzStreamBody -fuzztime $(FUZZTIME)
	$(GO) test ./httpapi -run XXX -fuzz FuzzSeedRoutes -fuzztime $(FUZZTIME)

clean:
	rm -rf bin

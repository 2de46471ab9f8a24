# The two commands of the README: `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/stream-conductor
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: run test deps build lint unit integration clean

## run: install what is missing, build, and start the daemon with its defaults
run: deps build
	./$(BIN)

## test: gofmt check, go vet, and every test (unit and integration) with -race
test: deps lint
	$(GO) test -race -count=1 ./...

deps:
	@./scripts/install-deps.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/stream-conductor
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/sc-echo ./cmd/sc-echo

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

integration:
	$(GO) test -race -count=1 -v ./integration/

clean:
	rm -rf bin

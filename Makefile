# unum — see README.md. Every target works on a fresh Debian machine with Go.
GO        ?= go
BIN       := bin/unum
PKGS      := ./...
# Packages whose cores run concurrently get the race detector in `make test`.
RACE_PKGS := ./audit/... ./identity/... ./policy/... ./storage/... ./internal/... ./control/... ./node/... ./scheduler/...
TEST_TIMEOUT ?= 15m

.PHONY: all build run test test-race bench lint generate clean deps

all: build

build:
	$(GO) build -o $(BIN) ./cmd/unum

run: build
	./$(BIN) dev

test: build
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	$(GO) test -count=1 -race -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

bench: build
	$(GO) test -run='^$$' -bench=. -benchtime=1x $(PKGS)
	./$(BIN) bench svid

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# Regenerates the committed protobuf code (needs protoc: apt-get install protobuf-compiler).
generate:
	protoc --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
	       --plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" \
	       --go_out=. --go_opt=paths=source_relative \
	       --go-grpc_out=. --go-grpc_opt=paths=source_relative \
	       api/unum/v1/unum.proto

clean:
	rm -rf bin

# unum — see README.md. Every target works on a fresh Debian machine with Go.
GO        ?= go
BIN       := bin/unum
PKGS      := ./...
# Packages whose cores run concurrently get the race detector in `make test`.
# Not the fault cluster: its tests drive unum processes (which the race run
# of the packages above covers) and take minutes; the plain run has them.
RACE_PKGS := ./audit/... ./identity/... ./policy/... ./storage/... \
	$$($(GO) list ./internal/... | grep -v /internal/faultcluster) ./control/... ./node/... ./scheduler/...
TEST_TIMEOUT ?= 15m
# make test keeps every test's outcome here (go test -json) for the threat
# register's check: a mitigated threat whose test failed or skipped fails it.
RESULTS   := .test-results
# With -json, go test prints no progress: this turns its package results
# into "pass <package> <seconds>s" lines.
PROGRESS  := sed -u -n -E 's/^\{"Time":"[^"]*","Action":"(pass|fail|skip)","Package":"([^"]*)","Elapsed":([0-9.]+)[,}].*$$/\1\t\2\t\3s/p'
# Pipelines in recipes fail when any stage fails.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: all build run test test-race bench lint generate generate-bpf clean deps threatmodel

all: build

build:
	$(GO) build -o $(BIN) ./cmd/unum

run: build
	./$(BIN) dev

# The whole suite, then the race detector on the concurrent packages, then
# the threat register's check over both runs. Every step runs even when an
# earlier one failed, so one run reports everything; any failure fails it.
test: build deps
	$(GO) vet $(PKGS)
	@rm -rf $(RESULTS) && mkdir -p $(RESULTS)
	@status=0; \
	echo "go test -json $(PKGS) > $(RESULTS)/test.json"; \
	$(GO) test -json -count=1 -timeout $(TEST_TIMEOUT) $(PKGS) | tee $(RESULTS)/test.json | $(PROGRESS) || status=1; \
	echo "go test -json -race $(RACE_PKGS) > $(RESULTS)/race.json"; \
	$(GO) test -json -count=1 -race -timeout $(TEST_TIMEOUT) $(RACE_PKGS) | tee $(RESULTS)/race.json | $(PROGRESS) || status=1; \
	./$(BIN) threatmodel check --results $(RESULTS)/test.json,$(RESULTS)/race.json || status=1; \
	exit $$status

# Regenerates docs/THREATMODEL.md from threatmodel/ and the shipped policy
# (internal/cli.TestThreatModelDocIsCurrent fails when it is stale).
threatmodel: build
	./$(BIN) threatmodel -o md > docs/THREATMODEL.md

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

# Regenerates the committed BPF objects and their Go loaders
# (enforcement/kernel/*_bpfe[lb].{go,o}) from enforcement/kernel/bpf/*.c.
BPF_CFLAGS := -O2 -g -Wall -Werror -I/usr/include/$$(gcc -print-multiarch)
generate-bpf:
	@command -v clang >/dev/null && command -v llvm-strip >/dev/null && [ -f /usr/include/bpf/bpf_helpers.h ] || \
		(apt-get update && apt-get install -y clang llvm libbpf-dev)
	cd enforcement/kernel && BPF2GO_CFLAGS="$(BPF_CFLAGS)" $(GO) generate ./...

# Tools the root-only tests and benchmarks call (iptables for
# `unum bench enforce`, ip for its network namespaces; ip, iptables, tc and
# nsenter for the fault cluster, internal/faultcluster).
# Installed only as root (CI); elsewhere the tests that need them skip.
deps:
	@[ "$$(id -u)" != 0 ] || { command -v iptables >/dev/null && command -v ip >/dev/null && \
		command -v tc >/dev/null && command -v nsenter >/dev/null; } || \
		(apt-get update && apt-get install -y iptables iproute2 util-linux)

clean:
	rm -rf bin

# Build, package and test the concourse-ci-machine charm. `make help` lists the targets.
SHELL       := /bin/bash
GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
ARCH        ?= $(shell $(GO) env GOARCH)
BUILD       := build
CHARM       := $(BUILD)/concourse-ci-machine_$(ARCH).charm
LDFLAGS     := -s -w -X main.version=$(VERSION)
GOTESTFLAGS ?= -timeout 14m

.PHONY: help build charm test vet fmt-check bench demo clean

help:
	@echo "make build     - static dispatch binary in $(BUILD)/dispatch"
	@echo "make charm     - $(CHARM) (same layout charmcraft packs)"
	@echo "make test      - gofmt check, go vet and every test (what CI runs)"
	@echo "make bench     - the Go benchmarks"
	@echo "make demo      - the local demo (see README)"

build:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILD)/dispatch ./cmd/concourse-ci-machine

charm: build
	$(GO) run ./tools/mkcharm -dispatch $(BUILD)/dispatch -arch $(ARCH) -out $(CHARM) metadata.yaml config.yaml actions.yaml
	@echo "built $(CHARM)"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test: fmt-check vet
	$(GO) test $(GOTESTFLAGS) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x ./...

demo: charm
	$(GO) run ./tests/demo

clean:
	rm -rf $(BUILD)

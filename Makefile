# Vireo. `make demo` and `make test` install what is missing (apt packages included), build, and run.
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH)

.PHONY: deps build demo test lint clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

demo: build
	@scripts/demo.sh

# The CLI tests run the built `vireo` binary, so build everything before testing.
test: build
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

lint:
	$(SWIFT) format lint --recursive Sources Tests

clean:
	rm -rf .build .demo-data

# Vireo. `make demo` and `make test` install what is missing (apt packages included), build, and run.
SWIFT ?= swift
export PATH := /opt/swift/usr/bin:$(PATH)

.PHONY: deps build demo test lint format clean

deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build

demo: build
	@scripts/demo.sh

# The CLI tests run the built `vireo` binary, so build everything before testing.
test: deps lint build
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# Formatting is checked against .swift-format; `make format` fixes what it finds.
lint:
	$(SWIFT) format lint --strict --parallel --recursive Sources Tests Plugins Benchmarks Package.swift

format:
	$(SWIFT) format format --in-place --parallel --recursive Sources Tests Plugins Benchmarks Package.swift

clean:
	rm -rf .build .demo-data

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
# The guest images the real-VM tests boot are built first, on their own: built while the suites
# run, their compilers and compressors took the CPU the in-process clusters' heartbeats need.
TEST_IMAGES ?= /tmp/vireo-test-images
test: deps lint build
	$(SWIFT) build --build-tests
	.build/debug/vireo image build tiny web --images $(TEST_IMAGES) >/dev/null
	VIREO_TEST_IMAGES=$(TEST_IMAGES) $(SWIFT) test --skip-build

# Formatting is checked against .swift-format; `make format` fixes what it finds.
lint:
	$(SWIFT) format lint --strict --parallel --recursive Sources Tests Plugins Benchmarks Package.swift

format:
	$(SWIFT) format format --in-place --parallel --recursive Sources Tests Plugins Benchmarks Package.swift

clean:
	rm -rf .build .demo-data

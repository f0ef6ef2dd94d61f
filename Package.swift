// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Vireo",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vireo", targets: ["vireo"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.24.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
    ],
    targets: [
        // Value types only: IDs, hosts, VM specs and their state machine, the image catalogue,
        // errors. No I/O.
        .target(name: "VireoModel"),
        // Runs host tools (qemu-img, cc, ip, ...) to their end; a missing one is named with its
        // Debian package.
        .target(
            name: "VireoProcess",
            dependencies: ["VireoModel", .product(name: "Subprocess", package: "swift-subprocess")]
        ),
        // The migration certificate authority: per-migration TLS credentials (controller only).
        .target(
            name: "VireoSecurity",
            dependencies: [
                "VireoModel",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        // The TLS tunnel that carries a live migration's memory stream between two hosts, with
        // the credentials the authority issued for that migration.
        .target(
            name: "VireoTunnel",
            dependencies: [
                "VireoModel",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Headless Chromium over the DevTools protocol on a pipe: the web console checked and timed
        // in a real browser (tests, `vireo bench console`).
        .target(name: "VireoBrowser", dependencies: ["VireoModel"]),
        // The hypervisor driver protocol and what a driver can do.
        .target(name: "VireoDriver", dependencies: ["VireoModel"]),
        // Deterministic in-memory hypervisor with injectable time.
        .target(
            name: "VireoDriverSimulated",
            dependencies: ["VireoModel", "VireoDriver", .product(name: "HeapModule", package: "swift-collections")]),
        // Real VMs: QEMU processes driven over QMP.
        .target(
            name: "VireoDriverQEMU",
            dependencies: [
                "VireoModel", "VireoDriver", "VireoImage", "VireoProcess", "VireoTunnel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libvirt's C API, from the system (libvirt-dev).
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        // VMs as libvirt domains through libvirt's C API (any URI: qemu:///system, test:///default).
        .target(
            name: "VireoDriverLibvirt",
            dependencies: [
                "VireoModel", "VireoDriver", "VireoImage", "VireoProcess", "CLibvirt",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Application telemetry without I/O: Prometheus text exposition, series selectors, recent
        // samples, SLO windows and burn rates.
        .target(name: "VireoTelemetry", dependencies: ["VireoModel"]),
        // The embedded time-series store (SQLite through GRDB) and the engine that ingests samples
        // into it and judges objectives.
        .target(
            name: "VireoTelemetryStore",
            dependencies: ["VireoModel", "VireoTelemetry", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // Several hosts on one machine: namespaces, a bridge, cgroups, an agent each.
        .target(name: "VireoTestbed", dependencies: ["VireoModel", "VireoImage", "VireoProcess", "VireoDriverQEMU"]),
        // Builds guest images on the host from Debian packages. The guest's own files (init, the
        // web service's C source) are in Embedded/.
        .target(
            name: "VireoImage",
            dependencies: [
                "VireoModel", "VireoProcess",
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["Embedded"],
            plugins: ["EmbedFiles"]
        ),
        // Pure, synchronous placement: cluster snapshot -> decision with reasons.
        .target(name: "VireoPlacement", dependencies: ["VireoModel"]),
        // Trace-driven data-centre simulator: PlanetLab traces, power models, CloudSim metrics.
        .target(
            name: "VireoSim",
            dependencies: [
                "VireoModel", "VireoPlacement", "VireoAPI",
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Store protocol and the SQLite (GRDB) implementation.
        .target(
            name: "VireoStore",
            dependencies: ["VireoModel", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The store of a highly available control plane: PostgreSQL through postgres-nio, passing
        // the same conformance suite; and a private PostgreSQL server for tests and benchmarks.
        .target(
            name: "VireoStorePostgres",
            dependencies: [
                "VireoModel", "VireoStore", "VireoProcess",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // DTOs shared by server and client, manifest parsing, the OpenAPI document (Embedded/).
        .target(
            name: "VireoAPI",
            dependencies: ["VireoModel", "VireoTelemetry", .product(name: "Yams", package: "Yams")],
            exclude: ["Embedded"],
            plugins: ["EmbedFiles"]
        ),
        // The controller: desired state, scheduler, host liveness, events.
        .target(
            name: "VireoController",
            dependencies: [
                "VireoModel", "VireoAPI", "VireoStore", "VireoPlacement", "VireoTelemetry", "VireoTelemetryStore",
                "VireoSecurity",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Hummingbird routes, auth, error mapping, metrics endpoint, the web console (its page, script
        // and style in Embedded/).
        .target(
            name: "VireoHTTP",
            dependencies: [
                "VireoModel", "VireoAPI", "VireoController", "VireoSecurity",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdAuth", package: "hummingbird-auth"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Embedded"],
            plugins: ["EmbedFiles"]
        ),
        // HTTP client for the CLI, the agent and tests.
        .target(
            name: "VireoClient",
            dependencies: [
                "VireoModel", "VireoAPI", "VireoSecurity",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // Agent: registers its host, heartbeats, reconciles the driver against desired state.
        .target(
            name: "VireoAgent",
            dependencies: [
                "VireoModel", "VireoAPI", "VireoDriver",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Compiles the files in a target's Embedded/ folder into it as string constants.
        .executableTarget(name: "EmbedFilesTool"),
        .plugin(name: "EmbedFiles", capability: .buildTool(), dependencies: ["EmbedFilesTool"]),
        .executableTarget(
            name: "vireo",
            dependencies: [
                "VireoModel", "VireoAPI", "VireoClient", "VireoController", "VireoHTTP", "VireoAgent",
                "VireoDriver", "VireoDriverSimulated", "VireoDriverQEMU", "VireoDriverLibvirt", "VireoStore", "VireoImage",
                "VireoPlacement", "VireoStorePostgres",
                "VireoTestbed", "VireoTelemetry", "VireoTelemetryStore", "VireoSim", "VireoProcess", "VireoSecurity",
                "VireoTunnel", "VireoBrowser",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "VireoTests",
            dependencies: [
                "VireoModel", "VireoAPI", "VireoClient", "VireoController", "VireoHTTP", "VireoAgent",
                "VireoDriver", "VireoDriverSimulated", "VireoDriverQEMU", "VireoDriverLibvirt", "VireoStore", "VireoImage",
                "VireoPlacement", "VireoStorePostgres",
                "VireoTestbed", "VireoTelemetry", "VireoTelemetryStore", "VireoSim", "VireoProcess", "VireoSecurity",
                "VireoTunnel", "VireoBrowser",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // Captured expositions the tests read by path.
            exclude: ["Fixtures"]
        ),
    ]
)

// Benchmarks (ordo-one/benchmark) join only when asked, so normal builds do not pay for them:
//   VIREO_BENCHMARKS=1 swift package --disable-sandbox benchmark
if Context.environment["VIREO_BENCHMARKS"] == "1" {
    package.dependencies.append(
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.29.0", traits: ["MallocInterposer"]))
    package.targets.append(
        .executableTarget(
            name: "PlacementBenchmark",
            dependencies: ["VireoModel", "VireoPlacement", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/PlacementBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ))
    package.targets.append(
        .executableTarget(
            name: "RebalanceBenchmark",
            dependencies: ["VireoModel", "VireoPlacement", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/RebalanceBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ))
    package.targets.append(
        .executableTarget(
            name: "MigrationCredentialsBenchmark",
            dependencies: [
                "VireoModel", "VireoSecurity", .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/MigrationCredentialsBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ))
    package.targets.append(
        .executableTarget(
            name: "UsageArchiveBenchmark",
            dependencies: ["VireoModel", "VireoStore", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/UsageArchiveBenchmark",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ))
}

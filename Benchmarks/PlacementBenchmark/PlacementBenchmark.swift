import Benchmark
import VireoModel
import VireoPlacement

/// Initial placement of one VM among 10,000 hosts: a verdict for every host, then the best.
/// Hosts carry varied load so that every filter and the scorer run.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        timeUnits: .microseconds,
        maxDuration: .seconds(10),
        maxIterations: 20_000
    )

    let snapshot = ClusterSnapshot(
        hosts: (0..<10_000).map { i in
            HostSnapshot(
                id: HostID("host-\(i)"), name: "host-\(i)", state: i % 50 == 0 ? .unreachable : .ready, cpus: 32,
                memoryMiB: 131_072, allocatedCPUs: (i * 7) % 140, allocatedMemoryMiB: (i * 7919) % 131_072,
                capabilities: i % 3 == 0 ? [.liveMigration] : [])
        })
    let request = PlacementRequest(cpus: 2, memoryMiB: 4096)

    Benchmark("place one VM among 10,000 hosts") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(InitialPlacement.place(request, in: snapshot))
        }
    }

    Benchmark("place one VM among 10,000 hosts, needing live migration") { benchmark in
        let needsMigration = PlacementRequest(cpus: 2, memoryMiB: 4096, requiredCapabilities: [.liveMigration])
        for _ in benchmark.scaledIterations {
            blackHole(InitialPlacement.place(needsMigration, in: snapshot))
        }
    }
}

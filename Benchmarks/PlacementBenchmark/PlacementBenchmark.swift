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

    let snapshot = PlacementCluster(
        hosts: (0..<10_000).map { i in
            PlacementHost(
                id: HostID("host-\(i)"), name: "host-\(i)", state: i % 50 == 0 ? .unreachable : .ready, cores: 32,
                memoryMiB: 131_072, capabilities: i % 3 == 0 ? CapabilitySet([.liveMigration]) : CapabilitySet([]),
                reservedVCPUs: (i * 7) % 140, reservedMemoryMiB: Double((i * 7919) % 131_072))
        })
    let request = PlacementVM(id: VMID("new"), name: "new", vcpus: 2, memoryMiB: 4096)

    Benchmark("place one VM among 10,000 hosts") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(InitialPlacement.place(request, in: snapshot))
        }
    }

    Benchmark("place one VM among 10,000 hosts, needing live migration") { benchmark in
        let needsMigration = PlacementVM(
            id: VMID("new"), name: "new", vcpus: 2, memoryMiB: 4096, requiredCapabilities: CapabilitySet([.liveMigration]))
        for _ in benchmark.scaledIterations {
            blackHole(InitialPlacement.place(needsMigration, in: snapshot))
        }
    }
}

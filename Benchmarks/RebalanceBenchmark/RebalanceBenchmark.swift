import Benchmark
import VireoModel
import VireoPlacement

/// A full rebalancing plan for 10,000 hosts (32 cores) and 100,000 VMs (10 per host, 0–4 cores
/// each, deterministic pseudo-random), one application per host; 1% of them breaching on hosts
/// at about 94% CPU, the rest fine. Both policies read the same snapshot.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal],
        timeUnits: .milliseconds,
        maxDuration: .seconds(20),
        maxIterations: 200
    )

    var generator: UInt64 = 42
    func next() -> Double {
        generator = generator &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Double(generator >> 11) / Double(1 << 53)
    }
    var hosts: [RebalanceHost] = []
    var vms: [RebalanceVM] = []
    var apps: [RebalanceApplication] = []
    for h in 0..<10_000 {
        let name = "host-\(h)"
        hosts.append(RebalanceHost(id: HostID(name), name: name, cpus: 32, memoryMiB: 131_072))
        let suffering = h % 100 == 0
        for v in 0..<10 {
            let cores = suffering ? 2.5 + next() : 4 * next()
            vms.append(
                RebalanceVM(
                    id: VMID("vm-\(h)-\(v)"), name: "vm-\(h)-\(v)", host: HostID(name), cpus: 4, memoryMiB: 4_096,
                    cpuUsageHistory: [cores, cores, cores], dirtyRateMiBPerSecond: 10 + 90 * next(),
                    application: v == 0 ? "app-\(h)" : nil))
        }
        let burn = suffering ? 5 + 10 * next() : 0.5
        apps.append(
            RebalanceApplication(
                name: "app-\(h)",
                objectives: [
                    ObjectiveStatus(
                        name: "latency", kind: .responseTime, state: suffering ? .breaching : .ok,
                        stateChangedAt: nil, sli: nil, target: 0.2, goodWindows: 100, badWindows: 5, emptyWindows: 0,
                        errorBudgetRemaining: 0.8,
                        burnRates: [.init(lookbackSeconds: 3_600, rate: burn), .init(lookbackSeconds: 300, rate: burn)],
                        lastWindowEnd: nil)
                ]))
    }
    // The cluster model is built once, outside the timed loop, as the controller builds it once
    // per plan.
    let cluster = PlacementCluster(RebalanceSnapshot(now: 0, hosts: hosts, vms: vms, applications: apps))

    Benchmark("rebalance plan, slo, 10,000 hosts / 100,000 VMs") { benchmark in
        let policy = SLOPolicy()
        for _ in benchmark.scaledIterations { blackHole(policy.plan(cluster)) }
    }

    Benchmark("rebalance plan, threshold, 10,000 hosts / 100,000 VMs") { benchmark in
        let policy = ThresholdPolicy()
        for _ in benchmark.scaledIterations { blackHole(policy.plan(cluster)) }
    }
}

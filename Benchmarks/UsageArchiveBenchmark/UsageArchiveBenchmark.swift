import Benchmark
import Foundation
import Synchronization
import VireoModel
import VireoStore

/// One step of the usage history at 10,000 hosts and 100,000 VMs (10 per host) written to a
/// `history.db` file that already holds earlier steps of the same cluster, as the controller
/// writes it once a minute. Retention keeps the last five steps, so from the sixth iteration on
/// each step also deletes the oldest one: the steady state of a full archive.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal],
        timeUnits: .milliseconds,
        maxDuration: .seconds(30),
        maxIterations: 30
    )

    let fingerprint = HostFingerprint(
        cpus: 64, memoryMiB: 262_144, driver: "simulated", capabilities: [.liveMigration, .pause],
        attributes: ["accelerator": "none"])
    let hosts = (0..<10_000).map { h in
        UsageStep.Host(id: .generate(), name: String(format: "host-%05d", h), fingerprint: fingerprint, cpuLoad: 0.25)
    }
    let vms = (0..<100_000).map { v in
        UsageStep.VM(
            id: .generate(), name: String(format: "vm-%06d", v), app: v % 10 == 0 ? "app-\(v / 10 % 100)" : nil, cpus: 1,
            memoryMiB: 64, host: hosts[v / 10].id, cpuCores: 0.01 * Double(v % 100), residentMiB: 64)
    }
    let objective = Objective(name: "latency", kind: .responseTime, metric: "http_seconds", quantile: 0.99, target: 0.05)
    let apps = (0..<100).map { UsageStep.Application(name: "app-\($0)", objectives: [objective], state: .ok) }
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-usage-bench-\(UUID())").path
    func step(_ i: Int) -> UsageStep {
        UsageStep(start: t0.addingTimeInterval(60 * Double(i)), seconds: 60, hosts: hosts, vms: vms, applications: apps)
    }
    func cutoff(_ i: Int) -> Date { t0.addingTimeInterval(60 * Double(i - 4)) }
    // One archive for every iteration, each iteration its next step.
    let archive = Mutex<(archive: SQLiteUsageArchive?, next: Int)>((nil, 0))

    Benchmark("usage step, 10,000 hosts / 100,000 VMs, file archive") { benchmark in
        let (opened, i) = try archive.withLock { state in
            if state.archive == nil {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                state.archive = try SQLiteUsageArchive(path: directory + "/history.db")
            }
            state.next += 1
            return (state.archive!, state.next - 1)
        }
        // The cluster is known to the archive before the timed steps, as it is after the first minute.
        if i == 0 { try await opened.record(step(0), deletingBefore: cutoff(0)) }
        benchmark.startMeasurement()
        try await opened.record(step(i + 1), deletingBefore: cutoff(i + 1))
        benchmark.stopMeasurement()
    }
}

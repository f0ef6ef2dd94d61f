import ArgumentParser
import Foundation
import Logging
import VireoAPI
import VireoController
import VireoModel
import VireoStore
import VireoStorePostgres

/// One load of `vireo bench standby`.
struct StandbyLoad: Codable {
    var seconds: Double
    var cpuSeconds: Double
    /// Opening a controller over the store as one that takes the lead does (`Controller.open`),
    /// timed apart just before the load.
    var leaderSeconds: Double
}

/// Result of `vireo bench standby`.
struct StandbyBenchResult: Codable {
    var hosts: Int
    var vms: Int
    var rounds: Int
    /// Making the cluster (hosts stored, VMs created and placed through a controller).
    var populateSeconds: Double
    var loadP50Seconds: Double
    var loadMaxSeconds: Double
    var cpuP50Seconds: Double
    /// This process's resident memory after the last load, and its peak, MiB.
    var residentMiB: Double
    var peakResidentMiB: Double
    var each: [StandbyLoad]
}

struct BenchStandby: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "standby",
        abstract: "Time the snapshot a standby controller loads from PostgreSQL to serve reads.",
        discussion: """
            Starts a private PostgreSQL server (Debian's postgresql) in a temporary directory, stores \
            --hosts hosts, creates --vms VMs through a controller over it (each placed, with its \
            placement explanation, as a real create), then loads --rounds snapshots exactly as a \
            standby does while reads come: a controller over the store that never writes, behind \
            the API's router, the VMs without their placement explanations. Reports each load's wall \
            and CPU time, the time a controller that takes the lead takes to open the store (timed \
            apart, just before), and this process's memory. Progress goes to standard error.
            Example: vireo bench standby --hosts 10000 --vms 100000 -o json
            """)

    @Option(help: "Hosts stored (ready, 64 CPUs and 256 GiB each).") var hosts: Int = 1000
    @Option(help: "VMs created (1 CPU, 512 MiB each).") var vms: Int = 10_000
    @Option(help: "Snapshots loaded.") var rounds: Int = 5
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...100_000).contains(hosts) else { throw ValidationError("--hosts must be 1...100000 (got \(hosts))") }
        guard (0...1_000_000).contains(vms) else { throw ValidationError("--vms must be 0...1000000 (got \(vms))") }
        guard vms <= hosts * 64 else {
            throw ValidationError("--vms \(vms) do not fit on --hosts \(hosts) (64 CPUs each, one per VM)")
        }
        guard (1...100).contains(rounds) else { throw ValidationError("--rounds must be 1...100 (got \(rounds))") }
        guard PostgresServer.installedBinaries() != nil else {
            throw ValidationError("needs PostgreSQL: install Debian's postgresql (scripts/install-deps.sh does)")
        }
    }

    func run() async throws {
        let result = try await withPrivatePostgres("standby") { _, url in try await measure(url: url) }
        if output.output == .json { return try printJSON(result) }
        print(
            String(
                format:
                    "%d hosts, %d VMs: a standby's snapshot loads in %.2f s (max %.2f s), %.2f CPU-s; resident %.0f MiB (peak %.0f MiB)",
                result.hosts, result.vms, result.loadP50Seconds, result.loadMaxSeconds, result.cpuP50Seconds,
                result.residentMiB, result.peakResidentMiB))
    }

    func measure(url: String) async throws -> StandbyBenchResult {
        let quiet = Logger(label: "vireo.bench", factory: { _ in SwiftLogNoOpLogHandler() })
        let store = try await PostgresStore.open(try PostgresLocation(url: url), logger: quiet)
        defer { store.close() }
        let populating = ContinuousClock.now
        try await populate(store, logger: quiet)
        let populateSeconds = (ContinuousClock.now - populating).secondsValue
        stderr(String(format: "%d hosts and %d VMs stored in %.1f s; loading %d snapshots", hosts, vms, populateSeconds, rounds))

        var each: [StandbyLoad] = []
        for round in 1...rounds {
            let opening = ContinuousClock.now
            let leader = try await Controller.open(store: store, logger: quiet)
            let leaderSeconds = (ContinuousClock.now - opening).secondsValue
            withExtendedLifetime(leader) {}
            let cpu = processCPUSeconds()
            let start = ContinuousClock.now
            let responder = try await StandbyReads.snapshot(of: store, settings: ControllerSettings(), tokens: nil)
            let load = StandbyLoad(
                seconds: (ContinuousClock.now - start).secondsValue, cpuSeconds: processCPUSeconds() - cpu,
                leaderSeconds: leaderSeconds)
            withExtendedLifetime(responder) {}
            each.append(load)
            stderr(
                String(
                    format: "snapshot %d: %.2f s, %.2f CPU-s (a leader's open: %.2f s)", round, load.seconds,
                    load.cpuSeconds, leaderSeconds))
        }
        let memory = try processMemory(pid: getpid())
        let times = each.map(\.seconds).sorted()
        return StandbyBenchResult(
            hosts: hosts, vms: vms, rounds: rounds, populateSeconds: populateSeconds, loadP50Seconds: percentile(times, 0.5),
            loadMaxSeconds: times.last ?? 0, cpuP50Seconds: percentile(each.map(\.cpuSeconds).sorted(), 0.5),
            residentMiB: memory.rss, peakResidentMiB: memory.peak, each: each)
    }

    /// Stores the hosts, then creates the VMs through a controller over the store, so that each
    /// is placed and explained as a real create makes it.
    func populate(_ store: PostgresStore, logger: Logger) async throws {
        let now = Date()
        let records = (0..<hosts).map { index in
            HostRecord(
                id: .generate(), name: String(format: "h%05d", index), state: .ready,
                fingerprint: HostFingerprint(cpus: 64, memoryMiB: 256 * 1024, driver: "simulated", capabilities: [.pause]),
                address: "127.0.0.1:\(20_000 + index % 40_000)", registeredAt: now, lastHeartbeatAt: now, stateChangedAt: now)
        }
        for start in stride(from: 0, to: records.count, by: 1000) {
            try await store.commit(StoreBatch(hosts: Array(records[start..<min(records.count, start + 1000)])))
        }
        let controller = try await Controller.open(store: store, logger: logger)
        let next = NextIndex()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    while let index = await next.take(below: vms) {
                        _ = try await controller.createVM(
                            VMSpec(name: String(format: "vm-%06d", index), image: "tiny", cpus: 1, memoryMiB: 512))
                        if (index + 1) % 10_000 == 0 { stderr("\(index + 1) VMs created") }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}

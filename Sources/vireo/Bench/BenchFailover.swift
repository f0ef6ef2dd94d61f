import ArgumentParser
import Foundation
import VireoAPI
import VireoClient
import VireoDriver
import VireoModel
import VireoStore
import VireoStorePostgres

/// One round of `vireo bench failover`.
struct FailoverRound: Codable {
    var round: Int
    /// From `kill -9` of the leader until a VM create through the CLI's client (given every
    /// controller's URL) succeeded.
    var writeSeconds: Double
    /// From `kill -9` until every agent had heartbeated to the new leader and every VM ran.
    var agentsSeconds: Double
}

/// Result of `vireo bench failover`.
struct FailoverBenchResult: Codable {
    var rounds: Int
    var controllers: Int
    var hosts: Int
    var vms: Int
    /// Stopped VMs written to the database beforehand (`--stored-vms`).
    var storedVMs: Int
    var leaseTTLSeconds: Double
    var writeP50Seconds: Double
    var writeMaxSeconds: Double
    var agentsMaxSeconds: Double
    /// VMs missing or duplicated at the end (must be 0).
    var lost: Int
    var each: [FailoverRound]
}

struct BenchFailover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Measure failover between controllers sharing one PostgreSQL database: kill -9 the leader, time the takeover.",
        discussion: """
            Starts a private PostgreSQL server (Debian's postgresql) in a temporary directory, two \
            `vireo controller` processes on it on loopback ports, and --hosts `vireo agent` processes \
            on the simulated driver given both controllers' URLs; creates --vms VMs. Then, each round, \
            kills the leader with SIGKILL and times until a VM create through a client given both \
            URLs succeeds, and until every agent has heartbeated to the new leader and every VM runs; \
            then starts the killed controller again (it stands by). At the end every VM is counted: \
            none may be missing or duplicated. --stored-vms makes the cluster a new leader loads \
            large: stopped VMs written to the database before the controllers start, each with a \
            placement explanation of 16 host verdicts. Progress goes to standard error.
            Example: vireo bench failover --rounds 3 --stored-vms 100000 -o json
            """)

    @Option(help: "How many times to kill the leader.") var rounds: Int = 5
    @Option(help: "Agents (simulated hosts), each a `vireo agent` process.") var hosts: Int = 3
    @Option(help: "VMs created before the first round.") var vms: Int = 10
    @Option(name: .customLong("stored-vms"), help: "Stopped VMs written to the database before the controllers start.")
    var storedVMs: Int = 0
    @Option(help: ArgumentHelp("The controllers' --lease-ttl.", valueName: "duration")) var leaseTTL: String = "5s"
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...1000).contains(rounds) else { throw ValidationError("--rounds must be 1...1000 (got \(rounds))") }
        guard (1...50).contains(hosts) else { throw ValidationError("--hosts must be 1...50 (got \(hosts))") }
        guard (0...1000).contains(vms) else { throw ValidationError("--vms must be 0...1000 (got \(vms))") }
        guard (0...1_000_000).contains(storedVMs) else {
            throw ValidationError("--stored-vms must be 0...1000000 (got \(storedVMs))")
        }
        guard let ttl = DurationText.seconds(leaseTTL), ttl >= 1, ttl <= 60 else {
            throw ValidationError("--lease-ttl must be a duration from 1s to 1m (got '\(leaseTTL)')")
        }
        guard PostgresServer.installedBinaries() != nil else {
            throw ValidationError("needs PostgreSQL: install Debian's postgresql (scripts/install-deps.sh does)")
        }
    }

    func run() async throws {
        let children = Children()
        try await withPrivatePostgres(
            "failover", finally: { children.killAll() },
            { directory, url in try await measure(directory: directory, store: url, children: children) })
    }

    func measure(directory: String, store: String, children: Children) async throws {
        let executable = try currentExecutable()
        let ports = [try LoopbackPort.free(), try LoopbackPort.free()]
        let urls = ports.map { "http://127.0.0.1:\($0)" }
        func startController(_ index: Int) throws -> Process {
            try children.start(
                executable,
                [
                    "controller", "--data-dir", "\(directory)/controller-\(index)", "--listen", "127.0.0.1:\(ports[index])",
                    "--store", store, "--lease-ttl", leaseTTL, "--heartbeat", "1s", "--migration-tls", "off",
                    "--log-level", "notice",
                ], log: "\(directory)/controller-\(index).log")
        }
        if storedVMs > 0 { try await storeVMs(url: store) }
        var controllers = [try startController(0)]
        let api = VireoClient(server: urls.joined(separator: ","), timeout: .seconds(10))
        try await benchWait("the first controller leads", within: 60) { (try? await api.health()) != nil }
        controllers.append(try startController(1))
        for host in 0..<hosts {
            _ = try children.start(
                executable,
                [
                    "agent", "--controller", urls.joined(separator: ","), "--name", "h\(host)", "--state-dir",
                    "\(directory)/agent-\(host)", "--driver", "simulated", "--driver-opt", "boot-delay-ms=50",
                    "--log-level", "warning",
                ], log: "\(directory)/agent-\(host).log")
        }
        try await benchWait("\(hosts) hosts ready", within: 60) {
            try await api.hosts().items.filter { $0.state == .ready }.count == hosts
        }
        for vm in 0..<vms {
            _ = try await api.createVM(["name": .string("vm-\(vm)"), "image": .string("tiny"), "memory": .string("80MiB")])
        }
        try await benchWait("\(vms) VMs running", within: 120) { try await allRunning(api, count: vms) }
        stderr("2 controllers, \(hosts) agents, \(vms) VMs running; killing the leader \(rounds) times")

        var each: [FailoverRound] = []
        var created = vms
        for round in 1...rounds {
            let leader = try await leaderIndex(urls)
            kill(controllers[leader].processIdentifier, SIGKILL)
            controllers[leader].waitUntilExit()
            let killed = ContinuousClock.now
            let name = "failover-\(round)"
            try await benchWait("a write after kill -9 of the leader", within: 120, every: .milliseconds(20)) {
                do {
                    _ = try await api.createVM(["name": .string(name), "image": .string("tiny"), "memory": .string("80MiB")])
                    return true
                } catch let error as VireoError where error.code == .unavailable {
                    return false
                } catch let error as VireoError where error.code == .conflict {
                    return true  // an earlier try landed, its answer lost with the connection
                }
            }
            let write = ContinuousClock.now - killed
            created += 1
            let heard = Date()
            try await benchWait("every agent back and every VM running", within: 120) {
                let hosts = try await api.hosts().items
                guard hosts.count == self.hosts, hosts.allSatisfy({ $0.state == .ready && $0.lastHeartbeatAt > heard }) else {
                    return false
                }
                return try await allRunning(api, count: created)
            }
            let agents = ContinuousClock.now - killed
            each.append(FailoverRound(round: round, writeSeconds: seconds(write), agentsSeconds: seconds(agents)))
            stderr(
                "round \(round): controller \(leader) killed; a write after \(String(format: "%.2f", seconds(write))) s, "
                    + "every agent and VM after \(String(format: "%.2f", seconds(agents))) s")
            controllers[leader] = try startController(leader)
            try await benchWait("the restarted controller stands by", within: 60) {
                do {
                    _ = try await VireoClient(server: urls[leader], timeout: .seconds(2)).health()
                    return false
                } catch let error as VireoError {
                    return error.message.contains("is a standby")
                }
            }
        }
        let vmsNow = try await api.allVMs()
        let names = vmsNow.map(\.name)
        let expected = Set((0..<vms).map { "vm-\($0)" } + (1...rounds).map { "failover-\($0)" })
        let stored = names.count { $0.hasPrefix(Self.storedPrefix) }
        let lost = expected.subtracting(names).count + (names.count - Set(names).count) + abs(storedVMs - stored)
        let writes = each.map(\.writeSeconds).sorted()
        let result = FailoverBenchResult(
            rounds: rounds, controllers: 2, hosts: hosts, vms: vms, storedVMs: storedVMs,
            leaseTTLSeconds: DurationText.seconds(leaseTTL)!,
            writeP50Seconds: percentile(writes, 0.5), writeMaxSeconds: writes.last ?? 0,
            agentsMaxSeconds: each.map(\.agentsSeconds).max() ?? 0, lost: lost, each: each)
        if output.output == .json { return try printJSON(result) }
        print(
            """
            \(rounds) failovers (lease \(leaseTTL)), 2 controllers, \(hosts) agents, \(vms) VMs (and \(storedVMs) stored):
              a write after kill -9 of the leader: p50 \(String(format: "%.2f", result.writeP50Seconds)) s, \
            max \(String(format: "%.2f", result.writeMaxSeconds)) s
              every agent and VM with the new leader: max \(String(format: "%.2f", result.agentsMaxSeconds)) s
              lost: \(lost)
            """)
    }

    /// Which controller leads: the one whose `/healthz` answers 200 (a standby's answers 503).
    func leaderIndex(_ urls: [String]) async throws -> Int {
        var found: Int?
        try await benchWait("a controller leads", within: 60) {
            for (index, url) in urls.enumerated()
            where (try? await VireoClient(server: url, timeout: .seconds(2)).health()) != nil {
                found = index
                return true
            }
            return false
        }
        return found!
    }

    /// Whether the VMs the bench created, `count` of them, all run (the stored ones, named to
    /// come last, are not read).
    func allRunning(_ api: VireoClient, count: Int) async throws -> Bool {
        var vms: [VMView] = []
        var after: String?
        repeat {
            let page = try await api.vms(after: after, limit: 1000)
            let created = page.items.prefix { !$0.name.hasPrefix(Self.storedPrefix) }
            vms += created
            after = created.count == page.items.count ? page.next : nil
        } while after != nil
        return vms.count == count && vms.allSatisfy { $0.state == .running }
    }

    /// Names of the stored VMs: after every created one.
    static let storedPrefix = "zz-stored-"

    /// Writes `storedVMs` stopped VMs, on no host, each with an explanation of 16 verdicts (as
    /// large as a placement keeps), in batches.
    func storeVMs(url: String) async throws {
        let store = try await PostgresStore.open(try PostgresLocation(url: url))
        defer { store.close() }
        let now = Date()
        let verdicts = (0..<16).map { index in
            HostVerdict(
                hostID: .generate(), hostName: String(format: "h%05d", index),
                score: HostScore(cpuFreeAfter: 0.5 + Double(index) / 100, memoryFreeAfter: 0.25, total: 0.4))
        }
        for start in stride(from: 0, to: storedVMs, by: 1000) {
            let batch = (start..<min(storedVMs, start + 1000)).map { index in
                VirtualMachine(
                    id: .generate(),
                    spec: VMSpec(name: String(format: "\(Self.storedPrefix)%07d", index), image: "tiny", cpus: 1, memoryMiB: 512),
                    state: .stopped, intent: .stopped,
                    placement: PlacementExplanation(
                        chosenHost: "h00000", decidedAt: now, verdicts: verdicts, omitted: ["scored": 984]),
                    createdAt: now, updatedAt: now, stateChangedAt: now)
            }
            try await store.commit(StoreBatch(insertedVMs: batch))
        }
        stderr("\(storedVMs) stopped VMs stored")
    }
}

/// The bench's child processes, killed together at the end (and, as children of this process's
/// group, by a Ctrl-C at the terminal).
final class Children: @unchecked Sendable {
    private var processes: [Process] = []
    private let lock = NSLock()

    func start(_ executable: String, _ arguments: [String], log: String) throws -> Process {
        // Appended to: a process started again in the same place adds to its predecessor's log.
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        lock.withLock { processes.append(process) }
        return process
    }

    func killAll() {
        for process in lock.withLock({ processes }) where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import Synchronization
import VireoAPI
import VireoAgent
import VireoClient
import VireoDriver
import VireoDriverSimulated
import VireoModel
import VireoProcess
import VireoStorePostgres
import VireoTelemetry

/// The heartbeats answered within one second of the steady run.
struct SecondOfHeartbeats: Codable {
    /// Seconds since the steady run began.
    var second: Int
    var heartbeats: Int
    var p99Ms: Double
    var maxMs: Double
}

/// Result of `vireo bench cluster`.
struct ClusterBenchResult: Codable {
    var hosts: Int
    var vms: Int
    var heartbeatSeconds: Double
    var durationSeconds: Double
    var store: String
    /// From the first agent's start to every host registered and ready.
    var registerSeconds: Double
    /// Creating the VMs before the steady run, through the API, and their rate.
    var createSeconds: Double
    var createsPerSecond: Double
    /// From the last create to every VM running.
    var settleSeconds: Double
    /// Heartbeats of the steady run (round trips as the agents see them, HTTP included).
    var heartbeats: Int
    var heartbeatsPerSecond: Double
    var heartbeatP50Ms: Double
    var heartbeatP99Ms: Double
    var heartbeatMaxMs: Double
    var heartbeatFailures: Int
    /// The same heartbeats as the controller timed them (its `vireo_http_request_duration_seconds`
    /// histogram, from the request's arrival to its answer, interpolated within buckets): the
    /// difference from the agents' figure is time in sockets and in the agents' own process.
    var heartbeatServerP50Ms: Double?
    var heartbeatServerP99Ms: Double?
    /// The seconds of the steady run with the slowest heartbeats (p99 within the second), worst
    /// first: whether the tail is spread out or comes in bursts, and when.
    var heartbeatWorstSeconds: [SecondOfHeartbeats]
    /// VMs created one by one during the steady run: from the request to the controller recording
    /// the VM running (its `vm.state` event).
    var probes: Int
    var createToRunningP50Ms: Double
    var createToRunningP99Ms: Double
    var createToRunningMaxMs: Double
    /// The controller process's CPU during the steady run, in cores.
    var controllerCores: Double
    /// This process's CPU during the steady run, in cores: the agents' side (their heartbeats,
    /// watches, HTTP clients and simulated hypervisors), on the same cores as the controller.
    var agentsCores: Double
    /// The controller's resident memory at the end of the steady run, and its peak (VmHWM).
    var controllerRSSMiB: Double
    var controllerPeakRSSMiB: Double
    /// The PostgreSQL server's CPU during the steady run (its main process and every connection's
    /// process), in cores, and its memory (proportional set size: shared buffers counted once),
    /// when the bench ran the server itself (`--store postgres`); nil otherwise.
    var databaseCores: Double?
    var databasePSSMiB: Double?
    /// From `kill -9` of the controller to every agent's heartbeat answered by its successor;
    /// nil when not all were within the bench's limit (300 s and three heartbeats).
    var reattachSeconds: Double?
    /// The agents whose heartbeat the successor answered: all of them, or as many as by the limit.
    var reattachedAgents: Int
    /// VMs the controller lacks or that no host runs (`missing`), that two hosts run
    /// (`duplicated`), or that run elsewhere than the controller records (`misplaced`).
    var missing: Int
    var duplicated: Int
    var misplaced: Int
    /// missing + duplicated + misplaced: must be 0.
    var lost: Int
}

struct BenchCluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Measure one controller with many agents: heartbeats, creates, CPU, memory, restart.",
        discussion: """
            Starts `vireo controller` as its own process (on a loopback port, with a fresh store: \
            SQLite in a temporary directory, a private PostgreSQL server there with --store postgres, \
            or an empty PostgreSQL database you name) and runs --hosts agents in this process, each its own host \
            with a simulated hypervisor, its own heartbeat loop and its own watch, talking to the \
            controller over the real HTTP API. Then it creates --vms VMs through the API and waits \
            until all run; measures --duration of steady running (heartbeat round trips, the \
            controller's CPU and memory, and VMs created one at a time from request to running); \
            kills the controller with SIGKILL, starts it again on the same store and port, and times \
            until every agent is back in sync; and finally checks every VM against every host: none \
            may be missing, duplicated or misplaced. Progress goes to standard error.
            """)

    @Option(help: "Simulated hosts, each with its own agent.") var hosts: Int = 1000
    @Option(help: "VMs to create and run, spread over the hosts.") var vms: Int = 10_000
    @Option(help: ArgumentHelp("How often agents heartbeat.", valueName: "duration")) var heartbeat: String = "10s"
    @Option(help: ArgumentHelp("How long to measure steady running.", valueName: "duration")) var duration: String =
        "120s"
    @Option(
        help: ArgumentHelp(
            "The controller's store: sqlite (a new file), postgres (a private server from Debian's postgresql, "
                + "started in the temporary directory, its CPU and memory measured too) or a postgres:// URL of an "
                + "empty database.",
            valueName: "store"))
    var store: String = "sqlite"
    @Option(help: "VMs created one at a time during the steady run to time create-to-running.") var probes: Int = 100
    @Option(help: "Create requests in flight at once before the steady run.") var concurrency: Int = 32
    @Option(help: ArgumentHelp("The vireo binary to run the controller with (default: this one).", valueName: "path"))
    var vireo: String?
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...20_000).contains(hosts) else { throw ValidationError("--hosts must be 1...20000 (got \(hosts))") }
        guard (0...1_000_000).contains(vms) else { throw ValidationError("--vms must be 0...1000000 (got \(vms))") }
        guard let h = DurationText.seconds(heartbeat), h >= 0.1, h <= 600 else {
            throw ValidationError("--heartbeat must be a duration from 100ms to 10m, e.g. 10s (got '\(heartbeat)')")
        }
        guard let d = DurationText.seconds(duration), d >= 1, d <= 86_400 else {
            throw ValidationError("--duration must be a duration from 1s to 1d, e.g. 120s (got '\(duration)')")
        }
        guard store == "sqlite" || store == "postgres" || PostgresLocation.isURL(store) else {
            throw ValidationError(
                "--store must be sqlite, postgres or a postgres:// URL (got '\(PostgresLocation.redacted(store))')")
        }
        if PostgresLocation.isURL(store) { _ = try PostgresLocation(url: store) }
        guard (1...vms).contains(probes) || (vms == 0 && probes == 0) else {
            throw ValidationError("--probes must be 1...--vms (got \(probes))")
        }
        guard (1...1024).contains(concurrency) else {
            throw ValidationError("--concurrency must be 1...1024 (got \(concurrency))")
        }
    }

    func run() async throws {
        // Each agent holds a watch open: two sockets per host across the two processes, and more.
        raiseOpenFileLimit()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-bench-cluster-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let executable = try vireo ?? currentExecutable()
        let database = try await Self.database(store, in: directory)
        // Ctrl-C or SIGTERM stop the run; the private PostgreSQL server is still stopped.
        do {
            try await cancellableBySignals { try await measure(executable: executable, directory: directory, database: database) }
        } catch {
            await uncancelled { try? await database.server?.stop() }
            throw error
        }
        try await database.server?.stop()
    }

    /// What `--store` names: nothing (SQLite), a private server started here, or a database that
    /// must hold no cluster yet.
    static func database(_ store: String, in directory: String) async throws -> (
        url: String?, server: PostgresServer?
    ) {
        switch store {
        case "sqlite":
            return (nil, nil)
        case "postgres":
            stderr("starting a private PostgreSQL server in \(directory)/postgres")
            let server = try await PostgresServer.start(in: directory + "/postgres", port: try LoopbackPort.free())
            let location = try await server.createDatabase("vireo")
            return ("postgres://\(location.user)@\(location.host):\(location.port)/\(location.database)?sslmode=disable", server)
        default:
            let location = try PostgresLocation(url: store)
            let existing = try await PostgresStore.open(location)
            defer { existing.close() }
            let cluster = try await existing.load(recent: 0)
            guard cluster.hosts.isEmpty && cluster.vms.isEmpty else {
                throw ValidationError(
                    "--store: \(location) holds \(cluster.hosts.count) hosts and \(cluster.vms.count) VMs; "
                        + "the bench needs an empty database and changes nothing in one that is not")
            }
            return (store, nil)
        }
    }

    func measure(executable: String, directory: String, database: (url: String?, server: PostgresServer?)) async throws {
        let interval = DurationText.seconds(heartbeat)!
        let steady = DurationText.seconds(duration)!
        var controller = try await BenchController.start(
            executable: executable, directory: directory, listen: "127.0.0.1:0", heartbeat: heartbeat, store: database.url)
        defer { controller.kill() }
        stderr("controller pid \(controller.pid) on \(controller.url)")

        // The agents' connections in shards, as separate hosts would each hold their own: one
        // client's pool queues the requests waiting for a connection and removes each one that
        // times out with a pass over the queue, so 10,000 agents on one pool melted down in
        // registration storms (a profile: most of this process in RequestQueue.remove).
        let shards = max(1, min(64, hosts / 100))
        let agentHTTP = (0..<shards).map { _ in Self.httpClient(connections: max(8, min(hosts, 512) / shards)) }
        let watchHTTP = (0..<shards).map { _ in Self.httpClient(connections: hosts / shards + 8) }
        let apiHTTP = Self.httpClient(connections: concurrency + 8)
        let book = HeartbeatBook(agents: hosts)
        let api = VireoClient(server: controller.url, timeout: .seconds(60), http: apiHTTP)

        // Agents: room for their share of the VMs, started spread over one heartbeat interval as
        // a fleet that came up over time would be.
        let perHost = max(1, (vms + hosts - 1) / hosts)
        let hostConfiguration = SimulatedDriver.Configuration(
            cpus: max(64, perHost * 2), memoryMiB: max(262_144, perHost * 128), bootDelay: .zero, stopDelay: .zero)
        var agentLogger = Logger(label: "vireo.agent")
        agentLogger.logLevel = .error
        let drivers = (0..<hosts).map { _ in SimulatedDriver(configuration: hostConfiguration) }
        let started = ContinuousClock.now
        let agentTasks = (0..<hosts).map { i in
            let link = BenchLink(
                index: i, book: book,
                heartbeats: VireoClient(server: controller.url, timeout: .seconds(5), http: agentHTTP[i % shards]),
                watches: VireoClient(server: controller.url, timeout: .seconds(5), http: watchHTTP[i % shards]))
            let agent = Agent(
                settings: .init(name: String(format: "host-%05d", i), heartbeatInterval: .seconds(interval)),
                driver: drivers[i], link: link, logger: agentLogger)
            let delay = Duration.seconds(interval * Double(i) / Double(hosts))
            return Task {
                try? await Task.sleep(for: delay)
                try await agent.run()
            }
        }
        defer { for task in agentTasks { task.cancel() } }

        try await benchWait("\(hosts) hosts ready", within: 120 + interval, every: .seconds(1)) {
            let ready = try await controller.gauge("vireo_hosts", state: "ready")
            stderr("hosts ready: \(ready)/\(hosts)")
            return ready == hosts
        }
        let registerSeconds = (ContinuousClock.now - started).secondsValue

        // The bulk of the VMs, as fast as the API takes them.
        let bulk = vms - probes
        let names = (0..<vms).map { String(format: "vm-%06d", $0) }
        let createStart = ContinuousClock.now
        let next = NextIndex()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    while let i = await next.take(below: bulk) {
                        _ = try await api.createVM([
                            "name": .string(names[i]), "image": .string("tiny"), "memory": .string("80MiB"),
                        ])
                        if (i + 1) % max(1, bulk / 10) == 0 { stderr("created \(i + 1)/\(bulk)") }
                    }
                }
            }
            try await group.waitForAll()
        }
        let createSeconds = (ContinuousClock.now - createStart).secondsValue
        let settleStart = ContinuousClock.now
        try await benchWait("\(bulk) VMs running", within: 600, every: .seconds(1)) {
            let running = try await controller.gauge("vireo_vms", state: "running")
            stderr("running: \(running)/\(bulk)")
            return running == bulk
        }
        let settleSeconds = (ContinuousClock.now - settleStart).secondsValue

        // Steady running: heartbeats timed, the controller's CPU read before and after, and VMs
        // created one at a time, evenly over the run, timed to running from the controller's events.
        stderr("steady run of \(duration)")
        let cpuBefore = try controller.cpuSeconds()
        let agentsCPUBefore = try ProcessStat.read(pid: getpid()).cpuSeconds
        let serverBefore = try await controller.heartbeatHistogram()
        let databaseCPUBefore = try database.server.map { try processTreeCPUSeconds(try $0.mainProcess()) }
        book.startWindow()
        let windowStart = ContinuousClock.now
        var seq = try await api.events(after: 0).last?.seq ?? 0
        var asked: [String: Date] = [:]
        var ran: [String: Date] = [:]
        /// Notes when each probe VM was recorded running, from the events since the last look.
        func readEvents() async throws {
            for event in try await api.events(after: seq) {
                seq = event.seq
                if event.kind == .vmState, event.to == VMState.running.rawValue, asked[event.name] != nil {
                    ran[event.name] = event.time
                }
            }
        }
        for p in 0..<probes {
            let due = windowStart + .seconds(steady * Double(p) / Double(probes))
            try await Self.sleep(until: due)
            let name = names[bulk + p]
            asked[name] = Date()
            _ = try await api.createVM(["name": .string(name), "image": .string("tiny"), "memory": .string("80MiB")])
            try await readEvents()
        }
        try await Self.sleep(until: windowStart + .seconds(steady))
        let window = (ContinuousClock.now - windowStart).secondsValue
        let cpuAfter = try controller.cpuSeconds()
        let agentsCPUAfter = try ProcessStat.read(pid: getpid()).cpuSeconds
        let memory = try controller.memory()
        let databaseCPUAfter = try database.server.map { try processTreeCPUSeconds(try $0.mainProcess()) }
        let databasePSS = try database.server.map { try processTreePSSMiB(try $0.mainProcess()) }
        let serverTimes = try await controller.heartbeatHistogram().flatMap { after in serverBefore.flatMap { after.since($0) } }
        let timed = book.stopWindow()
        let latencies = timed.map(\.ms)
        let worstSeconds = Dictionary(grouping: timed) { Int(($0.at - windowStart).secondsValue) }
            .map { second, beats in
                let sorted = beats.map(\.ms).sorted()
                return SecondOfHeartbeats(
                    second: second, heartbeats: sorted.count, p99Ms: percentile(sorted, 0.99), maxMs: sorted.last ?? 0)
            }
            .sorted { $0.p99Ms > $1.p99Ms }.prefix(5)
        try await benchWait("every probe VM running", within: 60, every: .milliseconds(100)) {
            try await readEvents()
            return ran.count == asked.count
        }
        let toRunning = asked.compactMap { name, at in ran[name].map { $0.timeIntervalSince(at) * 1000 } }.sorted()

        // SIGKILL, then the same store and port again: time until every agent is answered again.
        let port = controller.port
        stderr("kill -9 \(controller.pid)")
        let killedAt = ContinuousClock.now
        controller.kill()
        controller = try await BenchController.start(
            executable: executable, directory: directory, listen: "127.0.0.1:\(port)", heartbeat: heartbeat,
            store: database.url)
        stderr("controller restarted, pid \(controller.pid)")
        // A reattach that does not complete is a result, reported with the rest of the run (and
        // the command then fails), not a reason to lose the steady run's figures.
        var reattachSeconds: Double?
        do {
            try await benchWait("every agent back in sync", within: 300 + 3 * interval, every: .milliseconds(200)) {
                let synced = book.answered(since: killedAt)
                stderr("agents answered since the restart: \(synced)/\(hosts)")
                return synced == hosts
            }
            reattachSeconds = (ContinuousClock.now - killedAt).secondsValue
        } catch {
            stderr("\(error)")
        }
        let reattachedAgents = book.answered(since: killedAt)

        // Every VM once, where the controller says, and running.
        do {
            try await benchWait("every VM running", within: 120, every: .seconds(1)) {
                try await controller.gauge("vireo_vms", state: "running") == vms
            }
        } catch {
            stderr("\(error); checking the hosts as they are")
        }
        let recorded = try await api.allVMs()
        var runningOn: [VMID: [String]] = [:]
        for (i, driver) in drivers.enumerated() {
            for status in try await driver.status() where status.state == .running {
                runningOn[status.id, default: []].append(String(format: "host-%05d", i))
            }
        }
        let byName = Dictionary(recorded.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var missing = 0
        var duplicated = 0
        var misplaced = 0
        for name in names {
            guard let vm = byName[name], let hostsRunning = runningOn[vm.id], !hostsRunning.isEmpty else {
                missing += 1
                continue
            }
            if hostsRunning.count > 1 { duplicated += 1 } else if hostsRunning.first != vm.host { misplaced += 1 }
        }

        let result = ClusterBenchResult(
            hosts: hosts, vms: vms, heartbeatSeconds: interval, durationSeconds: window,
            store: PostgresLocation.isURL(store) ? PostgresLocation.redacted(store) : store,
            registerSeconds: registerSeconds, createSeconds: createSeconds,
            createsPerSecond: createSeconds > 0 ? Double(bulk) / createSeconds : 0, settleSeconds: settleSeconds,
            heartbeats: latencies.count, heartbeatsPerSecond: Double(latencies.count) / window,
            heartbeatP50Ms: percentile(latencies.sorted(), 0.5), heartbeatP99Ms: percentile(latencies.sorted(), 0.99),
            heartbeatMaxMs: latencies.max() ?? 0, heartbeatFailures: book.failures,
            heartbeatServerP50Ms: serverTimes?.quantile(0.5).map { $0 * 1000 },
            heartbeatServerP99Ms: serverTimes?.quantile(0.99).map { $0 * 1000 }, heartbeatWorstSeconds: Array(worstSeconds),
            probes: toRunning.count,
            createToRunningP50Ms: percentile(toRunning, 0.5), createToRunningP99Ms: percentile(toRunning, 0.99),
            createToRunningMaxMs: toRunning.last ?? 0, controllerCores: (cpuAfter - cpuBefore) / window,
            agentsCores: (agentsCPUAfter - agentsCPUBefore) / window,
            controllerRSSMiB: memory.rss, controllerPeakRSSMiB: memory.peak,
            databaseCores: databaseCPUBefore.flatMap { before in databaseCPUAfter.map { ($0 - before) / window } },
            databasePSSMiB: databasePSS, reattachSeconds: reattachSeconds, reattachedAgents: reattachedAgents,
            missing: missing, duplicated: duplicated, misplaced: misplaced, lost: missing + duplicated + misplaced)
        for task in agentTasks { task.cancel() }
        for task in agentTasks { _ = try? await task.value }
        for client in agentHTTP + watchHTTP + [apiHTTP] { try? await client.shutdown() }
        if output.output == .json { try printJSON(result) } else { printText(result) }
        if result.reattachSeconds == nil {
            throw VireoError(
                .unavailable, "after kill -9, \(reattachedAgents) of \(hosts) agents were back in sync within the bench's limit")
        }
    }

    func printText(_ result: ClusterBenchResult) {
        let (hosts, vms, heartbeat, store) = (result.hosts, result.vms, self.heartbeat, self.store)
        let (registerSeconds, createSeconds, settleSeconds) = (result.registerSeconds, result.createSeconds, result.settleSeconds)
        let (window, bulk) = (result.durationSeconds, result.vms - result.probes)
        let (reattachSeconds, reattachedAgents) = (result.reattachSeconds, result.reattachedAgents)
        let (missing, duplicated, misplaced) = (result.missing, result.duplicated, result.misplaced)
        print(
            """
            \(hosts) hosts heartbeating every \(heartbeat), \(vms) VMs, \(store) store:
              registered in \(String(format: "%.1f", registerSeconds)) s; \(bulk) VMs created in \
            \(String(format: "%.1f", createSeconds)) s (\(Int(result.createsPerSecond))/s), all running \
            \(String(format: "%.1f", settleSeconds)) s later
              steady \(Int(window)) s: \(result.heartbeats) heartbeats (\(Int(result.heartbeatsPerSecond))/s), \
            p50 \(String(format: "%.1f", result.heartbeatP50Ms)) ms, p99 \(String(format: "%.1f", result.heartbeatP99Ms)) ms, \
            max \(String(format: "%.1f", result.heartbeatMaxMs)) ms, \(result.heartbeatFailures) failed; \
            at the controller p50 \(result.heartbeatServerP50Ms.map { String(format: "%.1f", $0) } ?? "?") ms, \
            p99 \(result.heartbeatServerP99Ms.map { String(format: "%.1f", $0) } ?? "?") ms
              slowest seconds (p99): \(result.heartbeatWorstSeconds.map { "\($0.second) s: \(String(format: "%.0f", $0.p99Ms)) ms" }.joined(separator: ", "))
              create to running (\(result.probes) VMs): p50 \(String(format: "%.0f", result.createToRunningP50Ms)) ms, \
            p99 \(String(format: "%.0f", result.createToRunningP99Ms)) ms
              controller: \(String(format: "%.2f", result.controllerCores)) cores, \
            \(Int(result.controllerRSSMiB)) MiB resident (peak \(Int(result.controllerPeakRSSMiB)) MiB); \
            agents: \(String(format: "%.2f", result.agentsCores)) cores\
            \(result.databaseCores.map { String(format: "\n  PostgreSQL: %.2f cores, ", $0) } ?? "")\
            \(result.databasePSSMiB.map { "\(Int($0)) MiB (PSS)" } ?? "")
              after kill -9: \(reattachSeconds.map { "every agent in sync in \(String(format: "%.1f", $0)) s" } ?? "\(reattachedAgents) of \(hosts) agents in sync by the limit")
              lost: \(result.lost) (missing \(missing), duplicated \(duplicated), misplaced \(misplaced))
            """)
    }

    /// A client for `connections` at once. Kept for the life of the process: a run that fails or
    /// is interrupted ends without shutting its clients down, and a client dropped before it is
    /// shut down stops the process.
    static func httpClient(connections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(
            idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(5)
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        kept.withLock { $0.append(client) }
        return client
    }
    private static let kept = Mutex<[HTTPClient]>([])

    static func sleep(until instant: ContinuousClock.Instant) async throws {
        let left = instant - ContinuousClock.now
        if left > .zero { try await Task.sleep(for: left) }
    }

    /// Open files up to the hard limit: each host's watch holds a socket open.
    func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        let needed = rlim_t(hosts + 1024)
        if limit.rlim_max < needed {
            stderr("warning: \(limit.rlim_max) open files at most; \(hosts) hosts want about \(needed) (ulimit -n)")
        }
    }
}

/// `vireo controller` run by the bench as a process of its own, so that its CPU and memory are
/// its own and it can be killed.
struct BenchController {
    let pid: Int32
    let url: String
    let port: Int
    let client: VireoClient

    static func start(executable: String, directory: String, listen: String, heartbeat: String, store: String?)
        async throws -> BenchController
    {
        let endpoint = directory + "/endpoint"
        try? FileManager.default.removeItem(atPath: endpoint)
        let pid = try await HostTool.spawnDetached(
            [
                executable, "controller", "--data-dir", directory, "--listen", listen, "--heartbeat", heartbeat,
                "--migration-tls", "off", "--log-level", "warning",
            ] + (store.map { ["--store", $0] } ?? []), log: directory + "/controller.log", pidFile: directory + "/controller.pid")
        let deadline = ContinuousClock.now + .seconds(300)
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: endpoint, encoding: .utf8),
                let url = text.split(separator: "\n").first.map(String.init),
                let port = url.split(separator: ":").last.flatMap({ Int($0) })
            {
                return BenchController(pid: pid, url: url, port: port, client: VireoClient(server: url))
            }
            guard Foundation.kill(pid, 0) == 0 else {
                let log = (try? String(contentsOfFile: directory + "/controller.log", encoding: .utf8)) ?? ""
                throw VireoError(.internal, "the controller exited at start: \(log.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw VireoError(.unavailable, "the controller did not listen within 300 s (see \(directory)/controller.log)")
    }

    func kill() {
        _ = Foundation.kill(pid, SIGKILL)
        var status: Int32 = 0
        // Detached (not our child): wait for it to be gone.
        for _ in 0..<500 where Foundation.kill(pid, 0) == 0 {
            usleep(10_000)
            _ = waitpid(pid, &status, WNOHANG)
        }
    }

    /// A `vireo_hosts` or `vireo_vms` gauge's value for one state, from `/metrics`.
    func gauge(_ name: String, state: String) async throws -> Int {
        let families = try PrometheusText.parse(try await client.metrics())
        let sample = families.first { $0.name == name }?.samples.first { $0.label("state") == state }
        return Int(sample?.value ?? 0)
    }

    /// The controller's histogram of heartbeat requests, as it stands.
    func heartbeatHistogram() async throws -> Histogram? {
        let families = try PrometheusText.parse(try await client.metrics())
        return families.first { $0.name == "vireo_http_request_duration_seconds" }?
            .histogram(matching: ["route": "/v1/agent/heartbeat"])
    }

    /// User and system CPU time the process has used, seconds.
    func cpuSeconds() throws -> Double { try ProcessStat.read(pid: pid).cpuSeconds }

    func memory() throws -> (rss: Double, peak: Double) { try processMemory(pid: pid) }
}

/// A process's resident memory and its peak (`VmRSS`, `VmHWM`), MiB.
func processMemory(pid: Int32) throws -> (rss: Double, peak: Double) {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    func kib(_ key: String) -> Double {
        for line in status.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Double(line.dropFirst(key.count + 1).split(whereSeparator: \.isWhitespace).first ?? "") ?? 0
        }
        return 0
    }
    return (kib("VmRSS") / 1024, kib("VmHWM") / 1024)
}

/// CPU seconds of a server and its children: its own, its reaped children's, and its live
/// children's (PostgreSQL runs a process per connection).
func processTreeCPUSeconds(_ pid: Int32) throws -> Double {
    let main = try ProcessStat.read(pid: pid)
    return main.cpuSeconds + main.reapedChildrenCPUSeconds
        + ProcessStat.children(of: pid).reduce(0) { $0 + ((try? ProcessStat.read(pid: $1).cpuSeconds) ?? 0) }
}

/// Proportional set size of a server and its children, MiB: memory they share (PostgreSQL's
/// shared buffers) counted once.
func processTreePSSMiB(_ pid: Int32) throws -> Double {
    func pss(_ pid: Int32) -> Double {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
            return Double(line.dropFirst(4).split(whereSeparator: \.isWhitespace).first ?? "") ?? 0
        }
        return 0
    }
    return ([pid] + ProcessStat.children(of: pid)).reduce(0) { $0 + pss($1) } / 1024
}

/// The heartbeats the agents sent: round trips of the steady window, failures, and when each
/// agent was last answered.
final class HeartbeatBook: Sendable {
    private struct State {
        var recording = false
        var latencies: [(at: ContinuousClock.Instant, ms: Double)] = []
        var failures = 0
        var lastAnswered: [ContinuousClock.Instant?]
    }
    private let state: Mutex<State>

    init(agents: Int) { state = Mutex(State(lastAnswered: Array(repeating: nil, count: agents))) }

    func record(agent: Int, milliseconds: Double, at time: ContinuousClock.Instant) {
        state.withLock { s in
            if s.recording { s.latencies.append((time, milliseconds)) }
            s.lastAnswered[agent] = time
        }
    }

    func fail() { state.withLock { s in if s.recording { s.failures += 1 } } }

    func startWindow() {
        state.withLock { s in
            s.recording = true
            s.latencies = []
            s.failures = 0
        }
    }

    /// The round trips of the window, each with when it was answered.
    func stopWindow() -> [(at: ContinuousClock.Instant, ms: Double)] {
        state.withLock { s in
            s.recording = false
            return s.latencies
        }
    }

    var failures: Int { state.withLock { $0.failures } }

    /// Agents whose heartbeat was answered after `time`.
    func answered(since time: ContinuousClock.Instant) -> Int {
        state.withLock { s in s.lastAnswered.reduce(0) { $0 + (($1.map { $0 > time } ?? false) ? 1 : 0) } }
    }
}

/// An agent's link to the controller over HTTP that times its heartbeats; watches go over a
/// client of their own, since each holds a connection open.
struct BenchLink: ControllerLink {
    let index: Int
    let book: HeartbeatBook
    let heartbeats: VireoClient
    let watches: VireoClient

    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try await heartbeats.register(registration)
    }

    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        let start = ContinuousClock.now
        do {
            let desired = try await heartbeats.heartbeat(heartbeat)
            let end = ContinuousClock.now
            book.record(agent: index, milliseconds: (end - start).secondsValue * 1000, at: end)
            return desired
        } catch {
            book.fail()
            throw error
        }
    }

    func deliver(_ samples: AgentSamples) async throws { try await heartbeats.deliver(samples) }

    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        try await watches.watch(host: host, after: known, timeout: timeout)
    }
}

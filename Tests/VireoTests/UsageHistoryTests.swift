import Foundation
import Testing
import VireoAPI
import VireoAgent
import VireoController
import VireoDriverSimulated
import VireoModel
import VireoStore

/// A controller recording its usage history on a manual clock, its two hosts driven by hand:
/// every heartbeat's CPU seconds and memory are chosen here, so every recorded number is known.
struct HistoryScene {
    let plane: TestControlPlane
    let clock: ManualClock
    let archive: any UsageArchive
    let hosts: [String: HostID]
    /// Cumulative CPU seconds of each VM's process, and the host that process runs on.
    var cpu: [String: Double] = [:]
    var process: [String: String] = [:]
    var busy: [String: Double] = [:]
    var requests = 0
    /// The worst objective state of shop each time a step was recorded, as the controller saw it.
    var recordedStates: [SLOState] = []

    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    static func settings(retention: Duration = .seconds(3_600)) -> ControllerSettings {
        var settings = ControllerSettings.fast
        // The scene's clock is virtual: its hosts go silent after 1 s of it (the loops test counts on that).
        settings.hostTimeout = .seconds(1)
        settings.historyStep = .seconds(10)
        settings.historyRetention = retention
        return settings
    }

    /// shop-1 (application shop, 1 CPU, 128 MiB) and batch (2 CPUs, 512 MiB) on different hosts,
    /// idle (1 CPU, 64 MiB) next to batch.
    static func make(
        store: (any ClusterStore)? = nil, archive: any UsageArchive, clock: ManualClock = ManualClock(t0),
        settings: ControllerSettings = settings(), create: Bool = true
    ) async throws -> HistoryScene {
        let plane = try await TestControlPlane.make(
            hosts: ["h1", "h2"], store: store, settings: settings, now: { clock.now }, history: archive)
        let controller = plane.controller
        if create {
            _ = try await controller.apply(try ManifestParser.parse(shopManifest))
            let other = try await controller.vm("shop-1").host == "h1" ? "h2" : "h1"
            _ = try await controller.createVM(VMSpec(name: "batch", image: "tiny", cpus: 2, memoryMiB: 512, host: other))
            _ = try await controller.createVM(VMSpec(name: "idle", image: "tiny", cpus: 1, memoryMiB: 80, host: other))
        }
        var hosts: [String: HostID] = [:]
        for name in ["h1", "h2"] { hosts[name] = try await controller.host(name).id }
        return HistoryScene(plane: plane, clock: clock, archive: archive, hosts: hosts)
    }

    var controller: Controller { plane.controller }

    /// Two seconds pass: each host reports its running VMs, each using `usage` cores (none given:
    /// its host cannot tell) and holding `resident` MiB, and its own CPU; shop pushes its latency;
    /// objectives are judged; the usage history records a step when one has ended.
    mutating func advance(
        usage: [String: Double], resident: [String: Int] = [:], latency: Double = 0.02,
        migrations: [String: [MigrationReport]] = [:]
    ) async throws {
        clock.advance(2)
        for host in ["h1", "h2"] {
            // Who runs where is asked just before each host reports: a move ends in the first one.
            var instances: [InstanceReport] = []
            for vm in controller.listVMs().items where vm.host == host {
                var cpuSeconds: Double?
                if let cores = usage[vm.name] {
                    // A VM on another host than before runs in a new process there.
                    if process[vm.name] != host { cpu[vm.name] = 0 }
                    process[vm.name] = host
                    cpu[vm.name, default: 0] += cores * 2
                    busy[host, default: 0] += cores * 2
                    cpuSeconds = cpu[vm.name]
                }
                instances.append(
                    InstanceReport(
                        id: vm.id, state: .running, generation: vm.generation, cpuSeconds: cpuSeconds,
                        residentBytes: resident[vm.name].map { UInt64($0) << 20 }))
            }
            _ = try await controller.heartbeat(
                AgentHeartbeat(
                    hostID: hosts[host]!, instances: instances, migrations: migrations[host],
                    hostCPU: HostCPUUsage(busySeconds: busy[host] ?? 0, capacity: 8)))
        }
        requests += 20
        _ = try await controller.ingest(
            app: "shop", exposition: shopExposition(requests: requests, latency: latency, queue: 3, at: clock.ms),
            at: clock.now)
        await controller.evaluateSLOs()
        let states = try await controller.app("shop").objectives.map(\.state)
        let before = try await recorded()
        try await controller.recordUsageIfDue()
        if try await recorded() != before { recordedStates.append(SLOState.worst(states)) }
    }

    /// Steps recorded so far.
    func recorded() async throws -> Int {
        let window = try await archive.recording(from: Self.t0, stepSeconds: 10, count: 100)
        return (0..<100).filter { i in window.vms.contains { $0.host[i] != nil } }.count
    }

    /// `steps` recording steps (of 10 s) pass.
    mutating func run(
        steps: Int, usage: [String: Double], resident: [String: Int] = [:], latency: Double = 0.02
    ) async throws {
        for _ in 0..<(steps * 5) { try await advance(usage: usage, resident: resident, latency: latency) }
    }
}

func near(_ values: [Double?], _ expected: [Double?], within tolerance: Double = 1e-9) -> Bool {
    values.count == expected.count
        && zip(values, expected).allSatisfy { a, b in
            switch (a, b) {
            case (nil, nil): true
            case (let a?, let b?): abs(a - b) <= tolerance
            default: false
            }
        }
}

@Suite("Usage history recording")
struct UsageHistoryRecordingTests {
    @Test("each step records every VM's host, mean CPU in cores and resident memory, each host's load, shop's worst objective")
    func rates() async throws {
        var scene = try await HistoryScene.make(archive: try SQLiteUsageArchive())
        let shopHost = try #require(try await scene.controller.vm("shop-1").host)
        let other = shopHost == "h1" ? "h2" : "h1"
        // Thirteen steps: shop's capacity objective has 60 s windows, the first whole one judged
        // in the thirteenth.
        try await scene.run(steps: 13, usage: ["shop-1": 0.5, "batch": 1.5], resident: ["shop-1": 100, "batch": 300])
        func steps<T>(_ value: T) -> [T?] { Array(repeating: value, count: 13) + [nil] }

        let window = try await scene.archive.recording(from: HistoryScene.t0, stepSeconds: 10, count: 14)
        let vms = Dictionary(uniqueKeysWithValues: window.vms.map { ($0.name, $0) })
        #expect(vms.keys.sorted() == ["batch", "idle", "shop-1"])
        let shop = try #require(vms["shop-1"])
        #expect(near(shop.cpuCores, steps(0.5)), "\(shop.cpuCores)")
        #expect(shop.residentMiB == steps(100))
        #expect(shop.host == steps(try #require(scene.hosts[shopHost])))
        #expect(shop.app == "shop" && shop.cpus == 1 && shop.memoryMiB == 128)
        #expect(near(vms["batch"]?.cpuCores ?? [], steps(1.5)))
        #expect(vms["batch"]?.residentMiB == steps(300))
        // Its host reports no CPU time or memory for idle: it ran there, and nothing is made up.
        #expect(vms["idle"]?.host == steps(try #require(scene.hosts[other])))
        #expect(vms["idle"]?.cpuCores == Array(repeating: nil, count: 14))
        #expect(vms["idle"]?.residentMiB == Array(repeating: nil, count: 14))

        let hosts = Dictionary(uniqueKeysWithValues: window.hosts.map { ($0.name, $0) })
        #expect(near(hosts[shopHost]?.cpuLoad ?? [], steps(0.0625)), "0.5 of 8 cores")
        #expect(near(hosts[other]?.cpuLoad ?? [], steps(0.1875)), "1.5 of 8 cores")
        #expect(hosts["h1"]?.fingerprint.driver == "simulated" && hosts["h1"]?.fingerprint.cpus == 8)

        let shopApp = try #require(window.applications.first)
        #expect(shopApp.name == "shop" && shopApp.objectives.map(\.name) == ["latency", "throughput", "capacity"])
        #expect(scene.recordedStates.count == 13)
        #expect(shopApp.state == scene.recordedStates.map { Optional($0) } + [nil])
        // Unknown until every objective has a judged window; then good latency, enough requests
        // and a short queue.
        #expect(scene.recordedStates.first == .unknown && scene.recordedStates.last == .ok, "\(scene.recordedStates)")
    }

    @Test("a VM that moves shows its new host from the step it moved in, its CPU measured on both sides")
    func move() async throws {
        var scene = try await HistoryScene.make(archive: try SQLiteUsageArchive())
        let usage = ["shop-1": 0.5, "batch": 1.5]
        let from = try #require(try await scene.controller.vm("shop-1").host)
        let to = from == "h1" ? "h2" : "h1"
        try await scene.run(steps: 2, usage: usage, latency: 0.2)
        // Step 2 (20 s to 30 s): the move is asked for at 22 s, the destination is ready at 24 s,
        // and the source hands over at 26 s.
        try await scene.advance(usage: usage, latency: 0.2)
        let migration = try await scene.controller.migrateVM("shop-1", to: to)
        try await scene.advance(
            usage: usage, latency: 0.2,
            migrations: [to: [MigrationReport(id: migration.id, state: .ready, incomingURI: "sim://\(to)/shop-1")]])
        try await scene.advance(
            usage: usage, latency: 0.2,
            migrations: [
                from: [
                    MigrationReport(
                        id: migration.id, state: .completed,
                        stats: MigrationStats(totalTimeMs: 150, downtimeMs: 20, transferredBytes: 128 << 20))
                ]
            ])
        #expect(try await scene.controller.vm("shop-1").host == to)
        try await scene.advance(usage: usage, latency: 0.2)
        try await scene.advance(usage: usage, latency: 0.2)
        try await scene.run(steps: 2, usage: usage, latency: 0.2)

        let window = try await scene.archive.recording(from: HistoryScene.t0, stepSeconds: 10, count: 5)
        let shop = try #require(window.vms.first { $0.name == "shop-1" })
        let (a, b) = (scene.hosts[from], scene.hosts[to])
        #expect(shop.host == [a, a, b, b, b])
        #expect(near(shop.cpuCores, [0.5, 0.5, 0.5, 0.5, 0.5]), "\(shop.cpuCores)")
        // Objectives judged all along: the slow application ends up breaching, as recorded.
        #expect(window.applications.first?.state == scene.recordedStates.map { Optional($0) })
        #expect(scene.recordedStates.last == .breaching)
    }

    @Test("agents on the simulated driver: what their VMs use reaches the history, and no host load is made up")
    func agents() async throws {
        let clock = ManualClock(HistoryScene.t0)
        let time = ManualTime()
        let archive = try SQLiteUsageArchive()
        let controller = try await Controller.open(
            store: try SQLiteStore(), settings: HistoryScene.settings(), now: { clock.now }, history: archive)
        let drivers = ["h1", "h2"].map { _ in
            SimulatedDriver(configuration: .init(cpus: 8, memoryMiB: 16_384, bootDelay: .seconds(1)), time: time)
        }
        let agents = zip(["h1", "h2"], drivers).map { Agent(settings: .init(name: $0), driver: $1, link: controller) }
        defer { Task { for agent in agents { await agent.shutDown() } } }
        func round(seconds: Double) async throws {
            clock.advance(seconds)
            time.advance(by: .milliseconds(Int64(seconds * 1000)))
            for agent in agents { await agent.cycle() }
            try await controller.recordUsageIfDue()
        }
        for agent in agents { await agent.cycle() }
        _ = try await controller.createVM(VMSpec(name: "web", image: "tiny", cpus: 2, memoryMiB: 512, host: "h1"))
        _ = try await controller.createVM(VMSpec(name: "db", image: "tiny", cpus: 1, memoryMiB: 1_024, host: "h2"))
        for agent in agents { await agent.cycle() }
        try await eventually("both agents started their VM") {
            let first = try await drivers[0].status().first?.state
            let second = try await drivers[1].status().first?.state
            return first == .starting && second == .starting
        }
        // Booted after a second; from 2 s on web keeps half a core busy and db one and a quarter.
        clock.advance(2)
        time.advance(by: .seconds(2))
        try drivers[0].setLoad(vmNamed: "web", cores: 0.5, residentMiB: 300)
        try drivers[1].setLoad(vmNamed: "db", cores: 1.25, residentMiB: 900)
        for agent in agents { await agent.cycle() }
        for _ in 0..<14 { try await round(seconds: 2) }  // to 30 s: three steps
        #expect(try await controller.vm("web").state == .running)

        let window = try await archive.recording(from: HistoryScene.t0, stepSeconds: 10, count: 4)
        let vms = Dictionary(uniqueKeysWithValues: window.vms.map { ($0.name, $0) })
        let (h1, h2) = (try await controller.host("h1").id, try await controller.host("h2").id)
        #expect(vms["web"]?.host == [h1, h1, h1, nil])
        #expect(near(vms["web"]?.cpuCores ?? [], [0.5, 0.5, 0.5, nil]), "\(String(describing: vms["web"]?.cpuCores))")
        #expect(vms["web"]?.residentMiB == [300, 300, 300, nil])
        #expect(vms["db"]?.host == [h2, h2, h2, nil])
        #expect(near(vms["db"]?.cpuCores ?? [], [1.25, 1.25, 1.25, nil]))
        #expect(vms["db"]?.residentMiB == [900, 900, 900, nil])
        // The simulated driver does not measure its host's CPU: none is recorded.
        #expect(window.hosts.map(\.name) == ["h1", "h2"])
        #expect(window.hosts.allSatisfy { $0.cpuLoad == [nil, nil, nil, nil] })
        #expect(window.hosts.allSatisfy { $0.fingerprint.driver == "simulated" && $0.fingerprint.cpus == 8 })
    }

    @Test("the controller's loops record a step once the controller's clock has passed its end")
    func loops() async throws {
        var scene = try await HistoryScene.make(archive: try SQLiteUsageArchive())
        for _ in 0..<4 { try await scene.advance(usage: ["shop-1": 0.5]) }
        let controller = scene.controller
        let loops = Task { try await ControllerLoops(controller: controller).run() }
        defer { loops.cancel() }
        // The loops tick on real time and decide on the controller's clock. At 9.5 s the hosts
        // have been silent longer than their timeout: once the loops have noticed, they have
        // ticked, and the step (to 10 s) is not over.
        scene.clock.advance(1.5)
        try await eventually("the loops ticked") {
            await controller.listHosts().items.allSatisfy { $0.state == .unreachable }
        }
        #expect(try await scene.recorded() == 0)
        scene.clock.advance(0.5)
        try await eventually("the loops recorded the first step") { try await scene.recorded() == 1 }
    }

    @Test("retention deletes the steps older than it, as steps are recorded")
    func retention() async throws {
        var scene = try await HistoryScene.make(
            archive: try SQLiteUsageArchive(), settings: HistoryScene.settings(retention: .seconds(30)))
        try await scene.run(steps: 6, usage: ["shop-1": 0.5])
        let window = try await scene.archive.recording(from: HistoryScene.t0, stepSeconds: 10, count: 6)
        let shop = try #require(window.vms.first { $0.name == "shop-1" })
        // Recording step 5 at 60 s deleted what began before 30 s.
        #expect(near(shop.cpuCores, [nil, nil, nil, 0.5, 0.5, 0.5]), "\(shop.cpuCores)")
    }

    @Test("a restarted controller keeps the history and goes on recording")
    func restart() async throws {
        let directory = temporaryDirectory()
        let clock = ManualClock(HistoryScene.t0)
        var first = try await HistoryScene.make(
            store: try SQLiteStore(path: directory + "/vireo.db"),
            archive: try SQLiteUsageArchive(path: directory + "/history.db"), clock: clock)
        try await first.run(steps: 2, usage: ["shop-1": 0.5])

        // A new controller over the same files: the hosts register again and report as before.
        var second = try await HistoryScene.make(
            store: try SQLiteStore(path: directory + "/vireo.db"),
            archive: try SQLiteUsageArchive(path: directory + "/history.db"), clock: clock, create: false)
        #expect(second.hosts == first.hosts)
        second.cpu = first.cpu
        second.process = first.process
        try await second.run(steps: 2, usage: ["shop-1": 0.5])

        let window = try await second.archive.recording(from: HistoryScene.t0, stepSeconds: 10, count: 4)
        let shop = try #require(window.vms.first { $0.name == "shop-1" })
        #expect(near(shop.cpuCores, [0.5, 0.5, 0.5, 0.5]), "\(shop.cpuCores)")
        #expect(shop.host.allSatisfy { $0 != nil })
    }

    @Test("a recording step that is not whole seconds from 1 s to a day, or a retention shorter than it, is refused")
    func badSettings() async throws {
        for (step, retention, field) in [
            (Duration.milliseconds(500), Duration.seconds(60), "historyStep"),
            (.seconds(90_000), .seconds(100_000), "historyStep"),
            (.milliseconds(1_500), .seconds(60), "historyStep"), (.seconds(60), .seconds(30), "historyRetention"),
        ] {
            var settings = ControllerSettings()
            settings.historyStep = step
            settings.historyRetention = retention
            let error = await #expect(throws: VireoError.self) {
                _ = try await Controller.open(store: try SQLiteStore(), settings: settings)
            }
            #expect(error?.code == .invalidArgument && error?.message.hasPrefix(field) == true, "\(String(describing: error))")
        }
    }
}

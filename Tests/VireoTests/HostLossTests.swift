import Foundation
import Testing
import VireoAPI
import VireoAgent
import VireoController
import VireoDriver
import VireoModel

/// Host loss without split brain, with simulated drivers: a host cut off from the controller
/// fences itself (powers off its VMs that restart elsewhere) before the controller declares it
/// lost and starts those VMs on another host; when it returns it releases its copies first.
@Suite("Host loss: fencing and restartPolicy")
struct HostLossTests {
    /// Heartbeats every 50 ms; unreachable after 3 s, lost after 9 s, so fenced after 6 s: long
    /// enough that a test machine starved for seconds (the suite's first moments) does not lose a
    /// host by chance.
    static var settings: ControllerSettings {
        var settings = ControllerSettings(
            heartbeatInterval: .milliseconds(50), hostTimeout: .seconds(3), tickInterval: .milliseconds(50),
            migrationStartTimeout: .seconds(5))
        settings.hostLostAfter = .seconds(9)
        return settings
    }

    /// Creates `ha` (restartPolicy: always) and waits for it to run.
    func runningHA(_ cluster: LocalCluster) async throws -> VMView {
        _ = try await cluster.controller.createVM(
            VMSpec(name: "ha", image: "tiny", cpus: 1, memoryMiB: 128, restartPolicy: .always))
        return try await cluster.waitFor("ha", .running)
    }

    /// The hosts whose driver has the VM running or starting.
    func runningOn(_ cluster: LocalCluster, _ id: VMID) async throws -> [String] {
        var hosts: [String] = []
        for agent in cluster.agents {
            let status = try await agent.driver.status().first { $0.id == id }
            if let status, status.state == .running || status.state == .starting { hosts.append(agent.agent.settings.name) }
        }
        return hosts
    }

    @Test(
        "a lost host's VM with restartPolicy always starts on the other host only after its host fenced itself; on return the copy is released"
    )
    func restartElsewhere() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: Self.settings)
        defer { cluster.stop() }
        let c = cluster.controller
        let ha = try await c.createVM(VMSpec(name: "ha", image: "tiny", cpus: 1, memoryMiB: 128, restartPolicy: .always))
        let lostName = try #require(ha.host)
        let otherName = lostName == "h1" ? "h2" : "h1"
        // Pinned to the same host, without a restart policy: it stays with its host.
        _ = try await c.createVM(VMSpec(name: "stays", image: "tiny", cpus: 1, memoryMiB: 128, host: lostName))
        _ = try await cluster.waitFor("ha", .running)
        _ = try await cluster.waitFor("stays", .running)
        let lost = cluster.driver(lostName)
        let stays = try await c.vm("stays").id

        cluster.link(lostName).cut.withLock { $0 = true }
        let cutAt = ContinuousClock.now
        // Fenced: the cut-off agent powered ha off; stays runs on (offline, as promised).
        try await eventually("the cut-off host fenced ha", within: 20) {
            try await lost.status().first { $0.id == ha.id }?.state == .stopped
        }
        let fencedAfter = cutAt.duration(to: .now)
        #expect(try await lost.status().first { $0.id == stays }?.state == .running)
        #expect(try await c.host(lostName).state != .lost, "fenced before the controller gave up on the host")
        try await eventually("\(lostName) lost", within: 20) { try await c.host(lostName).state == .lost }
        let restarted = try await cluster.waitFor("ha", .running, within: 20)
        let restartedAfter = cutAt.duration(to: .now)
        #expect(restarted.host == otherName)
        #expect(try await runningOn(cluster, ha.id) == [otherName], "ha runs on one host only")
        #expect(try await c.vm("stays").host == lostName)
        let why = c.events.events(after: 0).first { $0.kind == .hostState && $0.to == "lost" }?.message ?? ""
        #expect(why.contains("no heartbeat"), "\(why)")
        print("host loss: fenced after \(fencedAfter), restarted elsewhere after \(restartedAfter) (lost after 9 s)")

        // The host returns: its copy of ha is released (gone from its driver), stays keeps running.
        cluster.link(lostName).cut.withLock { $0 = false }
        try await eventually("\(lostName) ready again") { try await c.host(lostName).state == .ready }
        try await eventually("the returning host released ha") {
            try await lost.status().contains { $0.id == ha.id } == false
        }
        #expect(try await runningOn(cluster, ha.id) == [otherName])
        #expect(try await c.vm("ha").state == .running)
        #expect(try await lost.status().first { $0.id == stays }?.state == .running)
        #expect(try await c.vm("stays").state == .running)
    }

    @Test("a cut shorter than the loss: the fenced VM starts again on its own host when the link returns")
    func fencedThenBack() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1"], settings: Self.settings)
        defer { cluster.stop() }
        let c = cluster.controller
        let ha = try await runningHA(cluster)
        cluster.link("h1").cut.withLock { $0 = true }
        try await eventually("h1 fenced ha", within: 20) {
            try await cluster.driver("h1").status().first { $0.id == ha.id }?.state == .stopped
        }
        cluster.link("h1").cut.withLock { $0 = false }
        try await eventually("ha runs again on h1") {
            let hosts = try await runningOn(cluster, ha.id)
            let state = try await c.vm("ha").state
            return hosts == ["h1"] && state == .running
        }
        #expect(try await c.host("h1").state == .ready)
        #expect(!c.events.events(after: 0).contains { $0.kind == .hostState && $0.to == "lost" })
    }

    @Test("a heartbeat stuck on a dead connection does not hold fencing back: the host fences before it is declared lost")
    func fencedWhileHeartbeatHangs() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1"], settings: Self.settings)
        defer { cluster.stop() }
        let c = cluster.controller
        let ha = try await runningHA(cluster)
        // Every heartbeat from now on waits for ever: the agent's round is stuck, and only its
        // fencing loop, asleep until the silence passes fenceAfter (6 s here), can act.
        cluster.link("h1").hang.withLock { $0 = true }
        let hungAt = ContinuousClock.now
        try await eventually("h1 fenced ha", within: 20) {
            try await cluster.driver("h1").status().first { $0.id == ha.id }?.state == .stopped
        }
        let fencedAfter = hungAt.duration(to: .now)
        #expect(try await c.host("h1").state != .lost, "fenced after \(fencedAfter), yet the controller gave up on h1 first")
        print("stuck heartbeat: fenced \(fencedAfter) after the hang (fenceAfter 6 s from the last answer)")
        cluster.link("h1").hang.withLock { $0 = false }
        try await eventually("ha runs again on h1") {
            let hosts = try await runningOn(cluster, ha.id)
            let state = try await c.vm("ha").state
            return hosts == ["h1"] && state == .running
        }
    }

    @Test("the only host lost and back: its VM with restartPolicy always runs there again, and stays running")
    func onlyHostBack() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1"], settings: Self.settings)
        defer { cluster.stop() }
        let c = cluster.controller
        let ha = try await runningHA(cluster)
        cluster.link("h1").cut.withLock { $0 = true }
        try await eventually("h1 lost", within: 20) { try await c.host("h1").state == .lost }
        // Nowhere else to go: it waits, placed nowhere.
        try await eventually("ha pending") { try await c.vm("ha").state == .pending }
        cluster.link("h1").cut.withLock { $0 = false }
        try await eventually("ha runs on h1 again") {
            let vm = try await c.vm("ha")
            let hosts = try await runningOn(cluster, ha.id)
            return vm.state == .running && vm.host == "h1" && hosts == ["h1"]
        }
        // Placed back here, its copy is not released again and again.
        let settled = c.events.events(after: 0).last?.seq ?? 0
        try await Task.sleep(for: .seconds(1))
        let again = c.events.events(after: settled).filter { $0.name == "ha" }.map { "\($0.kind.rawValue) \($0.to ?? "")" }
        #expect(again.isEmpty, "\(again)")
        #expect(try await runningOn(cluster, ha.id) == ["h1"])
    }

    @Test("a VM pinned to the lost host, or without a restart policy, waits for it")
    func pinnedWaits() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: Self.settings)
        defer { cluster.stop() }
        let c = cluster.controller
        _ = try await c.createVM(
            VMSpec(name: "pinned", image: "tiny", cpus: 1, memoryMiB: 128, host: "h1", restartPolicy: .always))
        _ = try await c.createVM(VMSpec(name: "plain", image: "tiny", cpus: 1, memoryMiB: 128, host: "h1"))
        _ = try await cluster.waitFor("pinned", .running)
        _ = try await cluster.waitFor("plain", .running)
        cluster.link("h1").cut.withLock { $0 = true }
        try await eventually("h1 lost", within: 20) { try await c.host("h1").state == .lost }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await c.vm("pinned").host == "h1")
        #expect(try await c.vm("plain").host == "h1")
        #expect(try await cluster.driver("h2").status().isEmpty)
        cluster.link("h1").cut.withLock { $0 = false }
        try await eventually("both run on h1 again") {
            let pinned = try await c.vm("pinned").state, plain = try await c.vm("plain").state
            let statuses = try await cluster.driver("h1").status()
            return pinned == .running && plain == .running && statuses.allSatisfy { $0.state == .running }
        }
    }

    @Test("a VM with restartPolicy always whose start failed is started again after a delay; one without stays failed")
    func restartAfterFailure() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1"], settings: Self.settings)
        defer { cluster.stop() }
        let c = cluster.controller
        cluster.driver("h1").injectStartFailure(vmNamed: "flaky")
        cluster.driver("h1").injectStartFailure(vmNamed: "plain")
        _ = try await c.createVM(VMSpec(name: "flaky", image: "tiny", cpus: 1, memoryMiB: 128, restartPolicy: .always))
        _ = try await c.createVM(VMSpec(name: "plain", image: "tiny", cpus: 1, memoryMiB: 128))
        _ = try await cluster.waitFor("flaky", .failed)
        _ = try await cluster.waitFor("plain", .failed)
        let running = try await cluster.waitFor("flaky", .running, within: 20)
        #expect(running.host == "h1")
        // By the controller's own clock (its events), not this test's polling.
        let events = c.events.events(after: 0).filter { $0.name == "flaky" }
        let failed = try #require(events.first { $0.to == "failed" })
        let restarting = try #require(
            events.first { $0.to == "starting" && ($0.message ?? "").contains("restartPolicy: always") })
        #expect(restarting.time.timeIntervalSince(failed.time) >= 5, "not before the delay")
        #expect(try await c.vm("plain").state == .failed)
    }

    @Test("an agent restarted while cut off still fences in time: it takes in the silence its last run left off at")
    func restartedAgentFences() async throws {
        let directory = temporaryDirectory()
        let cluster = try await LocalCluster.start(hosts: ["h1"], settings: Self.settings, fenceDirectory: directory)
        defer { cluster.stop() }
        let c = cluster.controller
        let ha = try await runningHA(cluster)
        try await eventually("the fencing record names ha") {
            let data = FileManager.default.contents(atPath: directory + "/h1.json") ?? Data()
            return String(decoding: data, as: UTF8.self).contains(ha.id.rawValue)
        }
        // Cut off, and the agent process "dies" (its task ends; the simulated guest runs on, as a
        // QEMU outlives its agent); a new agent over the same driver and record starts, still cut off.
        let link = cluster.link("h1")
        link.cut.withLock { $0 = true }
        let cutAt = ContinuousClock.now
        cluster.agents[0].task.cancel()
        _ = await cluster.agents[0].task.result
        #expect(try await cluster.driver("h1").status().first { $0.id == ha.id }?.state == .running)
        let again = Agent(
            settings: .init(name: "h1", heartbeatInterval: .milliseconds(50), fenceFile: directory + "/h1.json"),
            driver: cluster.driver("h1"), link: link)
        let task = Task { try await again.run() }
        defer { task.cancel() }
        try await eventually("the new agent fenced ha while still cut off", within: 20) {
            try await cluster.driver("h1").status().first { $0.id == ha.id }?.state == .stopped
        }
        // Without the record the new agent would never fence: it has no answered heartbeat to count from.
        print("restarted agent fenced \(cutAt.duration(to: .now)) after the cut (fence after 6 s)")
        link.cut.withLock { $0 = false }
        _ = try await cluster.waitFor("ha", .running)
    }

    @Test(
        "apply changes a VM's restartPolicy in place: the VM runs on, and its host fences it from then on; another change is still refused"
    )
    func applyChangesPolicy() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1"], settings: Self.settings)
        defer { cluster.stop() }
        let c = cluster.controller
        func manifest(_ policy: String, cpus: Int = 1) -> String {
            """
            apiVersion: vireo/v1
            kind: VirtualMachine
            metadata: {name: x}
            spec: {image: tiny, cpus: \(cpus), memory: 128MiB, restartPolicy: \(policy)}
            """
        }
        _ = try await c.apply(try ManifestParser.parse(manifest("never")))
        let before = try await cluster.waitFor("x", .running)
        let changed = try await c.apply(try ManifestParser.parse(manifest("always")))
        #expect(changed.items.map(\.action) == [.updated])
        #expect(changed.items.first?.changes == ["restartPolicy never → always"])
        let after = try await c.vm("x")
        #expect(after.id == before.id && after.state == .running && after.restartPolicy == .always)
        #expect(try await c.apply(try ManifestParser.parse(manifest("always"))).items.map(\.action) == [.unchanged])
        let refused = await #expect(throws: VireoError.self) {
            _ = try await c.apply(try ManifestParser.parse(manifest("always", cpus: 2)))
        }
        #expect(refused?.code == .conflict && refused?.message.contains("cpus 1 → 2") == true)
        // The agent heard: cut off, it powers the VM off (fences it) as for any VM that restarts elsewhere.
        cluster.link("h1").cut.withLock { $0 = true }
        try await eventually("h1 fenced x", within: 20) {
            try await cluster.driver("h1").status().first { $0.id == before.id }?.state == .stopped
        }
    }

    @Test("restartPolicy is checked: an unknown value names the field")
    func validation() throws {
        let body: JSONValue = .object([
            "name": .string("a"), "image": .string("tiny"), "restartPolicy": .string("sometimes"),
        ])
        #expect {
            _ = try VMSpecValidation.fromAPIBody(body)
        } throws: { error in
            "\(error)".contains("restartPolicy") && "\(error)".contains("sometimes")
        }
        let spec = try VMSpecValidation.fromAPIBody(
            .object(["name": .string("a"), "image": .string("tiny"), "restartPolicy": .string("always")]))
        #expect(spec.restartPolicy == .always)
    }
}

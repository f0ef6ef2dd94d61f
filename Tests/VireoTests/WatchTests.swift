import Foundation
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing
import VireoAPI
import VireoAgent
import VireoClient
import VireoDriverSimulated
import VireoModel
import VireoStore

@testable import VireoController

@Suite("Watching the desired state between heartbeats")
struct WatchTests {
    @Test("a wait answers at once for another generation, at a bump of its host, and after its timeout otherwise")
    func generations() async throws {
        let controller = try await Controller.open(store: try SQLiteStore(), settings: .fast)
        let watch = controller.desiredWatch
        let (a, b) = (HostID("a"), HostID("b"))
        let start = watch.generation(of: a)
        #expect(await watch.wait(host: a, after: start - 1, timeout: .seconds(60)) == start)

        let waiting = Task { await watch.wait(host: a, after: start, timeout: .seconds(60)) }
        try await eventually("the wait is registered") { watch.waiting == 1 }
        // Another host's change wakes no one here.
        let other = watch.generation(of: b)
        controller.desiredWatch.bump([b])
        #expect(watch.generation(of: b) != other)
        try await Task.sleep(for: .milliseconds(50))
        #expect(watch.waiting == 1)
        controller.desiredWatch.bump([a])
        let answered = await waiting.value
        #expect(answered != start)
        #expect(answered == watch.generation(of: a))
        #expect(watch.waiting == 0)

        let quiet = watch.generation(of: a)
        #expect(await watch.wait(host: a, after: quiet, timeout: .milliseconds(20)) == quiet)

        let cancelled = Task { await watch.wait(host: a, after: quiet, timeout: .seconds(60)) }
        try await eventually("the wait is registered") { watch.waiting == 1 }
        cancelled.cancel()
        #expect(await cancelled.value == quiet)
        #expect(watch.waiting == 0)

        // Closed at shutdown: waiting agents are told at once, and so is whoever asks later.
        let held = Task { await watch.wait(host: a, after: quiet, timeout: .seconds(60)) }
        try await eventually("the wait is registered") { watch.waiting == 1 }
        watch.close()
        #expect(await held.value == nil)
        #expect(await watch.wait(host: b, after: -1, timeout: .seconds(60)) == nil)
        await #expect(throws: VireoError.self) { try await controller.watch(host: b, after: -1, timeout: .seconds(60)) }
    }

    @Test("waits end in the order of their deadlines, not of their start, and one answered early is not ended again")
    func deadlines() async throws {
        let watch = DesiredStateWatch()
        let (a, b, c) = (HostID("a"), HostID("b"), HostID("c"))
        let long = Task { await watch.wait(host: a, after: watch.generation(of: a), timeout: .seconds(60)) }
        // Long enough to be registered beside the other on a busy machine, short enough to pass
        // within the test once answered.
        let bumpedTimeout = Duration.seconds(2)
        let bumpedAt = ContinuousClock.now
        let bumped = Task { await watch.wait(host: b, after: watch.generation(of: b), timeout: bumpedTimeout) }
        try await eventually("both waits are registered") { watch.waiting == 2 }
        watch.bump([b])
        #expect(await bumped.value == watch.generation(of: b))
        // Started after the long wait, ends first.
        let quiet = watch.generation(of: c)
        #expect(await watch.wait(host: c, after: quiet, timeout: .milliseconds(200)) == quiet)
        // The bumped wait's deadline passes: it was answered already and is not ended again.
        try await Task.sleep(until: bumpedAt + bumpedTimeout + DesiredStateWatch.reapInterval * 2)
        #expect(watch.waiting == 1, "the 60 s wait still waits")
        watch.bump([a])
        #expect(await long.value == watch.generation(of: a))
        #expect(watch.waiting == 0)
    }

    @Test("what moves a host's generation: its VMs' requests and moves, not what the agent reports")
    func whatMoves() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        let c = plane.controller
        let hosts = await c.listHosts().items
        let h1 = try #require(hosts.first { $0.name == "h1" }?.id)
        let h2 = try #require(hosts.first { $0.name == "h2" }?.id)
        func marks() -> (Int, Int) { (c.desiredWatch.generation(of: h1), c.desiredWatch.generation(of: h2)) }

        var before = marks()
        let vm = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128, host: "h1"))
        #expect(marks().0 != before.0, "placed on h1")
        #expect(marks().1 == before.1, "h2 has nothing to do with it")

        // The agent reporting it running changes nothing it is asked to do.
        before = marks()
        _ = try await c.heartbeat(
            AgentHeartbeat(hostID: h1, instances: [.init(id: vm.id, state: .running, generation: vm.generation)]))
        #expect(try await c.vm("a").state == .running)
        #expect(marks() == before)

        before = marks()
        _ = try await c.stopVM("a")
        #expect(marks().0 != before.0, "stopped")
        #expect(marks().1 == before.1)
    }

    @Test("a heartbeat from an agent holding the current desired state is answered 'unchanged', without its VMs")
    func unchangedAnswers() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1"])
        let c = plane.controller
        let h1 = try #require(await c.listHosts().items.first?.id)
        let vm = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        let report = [InstanceReport(id: vm.id, state: .running, generation: vm.generation)]
        let first = try await c.heartbeat(AgentHeartbeat(hostID: h1, instances: report))
        #expect(first.vms.map(\.name) == ["a"])
        #expect(first.unchanged == nil)
        let revision = try #require(first.revision)

        let again = try await c.heartbeat(AgentHeartbeat(hostID: h1, instances: report, known: revision))
        #expect(again.unchanged == true)
        #expect(again.vms.isEmpty)
        #expect(again.revision == revision)
        // An agent that does not say what it holds gets it all.
        #expect(try await c.heartbeat(AgentHeartbeat(hostID: h1, instances: report)).vms.count == 1)

        _ = try await c.stopVM("a")
        let changed = try await c.heartbeat(AgentHeartbeat(hostID: h1, instances: report, known: revision))
        #expect(changed.unchanged == nil)
        #expect(changed.revision != revision)
        #expect(changed.vms.first?.intent == .stopped)
    }

    @Test("an agent that heartbeats every 30 s starts, stops and deletes VMs at once over HTTP, waiting on the watch")
    func agentOverHTTP() async throws {
        var settings = ControllerSettings.fast
        settings.heartbeatInterval = .seconds(30)
        settings.hostTimeout = .seconds(90)
        let plane = try await TestControlPlane.make(hosts: [], settings: settings)
        let c = plane.controller
        let app = Application(
            router: plane.server.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let link = CountingLink(VireoClient(server: "http://127.0.0.1:\(port)", timeout: .seconds(5)))
            let driver = SimulatedDriver(configuration: .init(bootDelay: .milliseconds(20), stopDelay: .milliseconds(20)))
            // The controller's 30 s replaces this at registration.
            let agent = Agent(settings: .init(name: "remote"), driver: driver, link: link)
            let task = Task { try await agent.run() }
            defer { task.cancel() }
            try await eventually("the agent waits on its watch") { c.desiredWatch.waiting == 1 }
            let started = ContinuousClock.now

            _ = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
            try await eventually("running", within: 10) { try await c.vm("a").state == .running }
            _ = try await c.stopVM("a")
            try await eventually("stopped", within: 10) { try await c.vm("a").state == .stopped }
            _ = try await c.deleteVM("a")
            try await eventually("deleted", within: 10) { (try? await c.vm("a")) == nil }
            #expect(try await driver.status().isEmpty)
            // All of it well inside one heartbeat interval: only the watch could have told the agent.
            #expect(ContinuousClock.now - started < .seconds(30))
            #expect(link.watches.withLock { $0 } >= 3)
            // As ControllerLoops does at shutdown: the server then need not wait for the held watch.
            c.desiredWatch.close()
        }
    }

    @Test("the watch route names a missing host, a bad generation and a wait out of range")
    func routeErrors() async throws {
        let plane = try await TestControlPlane.make()
        try await plane.test { client in
            for (query, field) in [
                ("", "host"), ("?host=h", "after"), ("?host=h&after=x", "after"),
                ("?host=h&after=1&waitMs=600000", "waitMs"),
            ] {
                let response = try await client.request(.get, "/v1/agent/watch\(query)")
                #expect(response.status == 400, "\(query)")
                #expect(expectEnvelope(response.body, code: .invalidArgument).contains(field), "\(query)")
            }
            let response = try await client.request(.get, "/v1/agent/watch?host=h&after=1&waitMs=0")
            #expect(response.status == 200)
            _ = try decodeJSON(AgentWatch.self, response.body)
        }
    }
}

/// A link that counts the watches it carried.
final class CountingLink: ControllerLink {
    let target: any ControllerLink
    let watches = Mutex(0)
    init(_ target: any ControllerLink) { self.target = target }

    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try await target.register(registration)
    }
    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState { try await target.heartbeat(heartbeat) }
    func deliver(_ samples: AgentSamples) async throws { try await target.deliver(samples) }
    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        watches.withLock { $0 += 1 }
        return try await target.watch(host: host, after: known, timeout: timeout)
    }
}

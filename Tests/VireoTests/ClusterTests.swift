import Foundation
import Synchronization
import Testing
import VireoAPI
import VireoAgent
import VireoController
import VireoDriver
import VireoDriverSimulated
import VireoModel
import VireoStore

/// A link that can be cut, as a network partition between an agent and its controller would
/// (each call fails at once), or left hanging, as a dead connection would (each heartbeat and
/// watch waits until `hang` is lifted).
final class CuttableLink: ControllerLink {
    let target: any ControllerLink
    let cut = Mutex(false)
    let hang = Mutex(false)
    init(_ target: any ControllerLink) { self.target = target }

    private func waitWhileHanging() async throws {
        while hang.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
    }

    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        if cut.withLock({ $0 }) { throw VireoError(.unavailable, "link cut") }
        return try await target.register(registration)
    }
    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        try await waitWhileHanging()
        if cut.withLock({ $0 }) { throw VireoError(.unavailable, "link cut") }
        return try await target.heartbeat(heartbeat)
    }
    func deliver(_ samples: AgentSamples) async throws {
        if cut.withLock({ $0 }) { throw VireoError(.unavailable, "link cut") }
        try await target.deliver(samples)
    }
    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        try await waitWhileHanging()
        if cut.withLock({ $0 }) { throw VireoError(.unavailable, "link cut") }
        return try await target.watch(host: host, after: known, timeout: timeout)
    }
}

/// A controller and agents with simulated drivers, all in this process, on real (short) time.
struct LocalCluster {
    let controller: Controller
    let loops: Task<Void, Never>
    let agents: [(agent: Agent, driver: SimulatedDriver, link: CuttableLink, task: Task<Void, Error>)]

    static func start(
        hosts: [String] = ["h1"], store: (any ClusterStore)? = nil,
        driver: SimulatedDriver.Configuration = .init(bootDelay: .milliseconds(100), stopDelay: .milliseconds(50)),
        settings: ControllerSettings = .fast, contexts: Bool = false, contextPool: [String: Int] = [:],
        fenceDirectory: String? = nil
    ) async throws -> LocalCluster {
        let controller = try await Controller.open(store: try store ?? SQLiteStore(), settings: settings)
        let loops = controllerLoops(controller)
        var agents: [(Agent, SimulatedDriver, CuttableLink, Task<Void, Error>)] = []
        for name in hosts {
            let simulated = SimulatedDriver(configuration: driver)
            let link = CuttableLink(controller)
            let manager =
                contexts
                ? try ContextManager(
                    settings: .init(directory: temporaryDirectory() + "/contexts", hostName: name, pool: contextPool),
                    driver: simulated) : nil
            let agent = Agent(
                settings: .init(
                    name: name, heartbeatInterval: .milliseconds(50), fenceFile: fenceDirectory.map { "\($0)/\(name).json" }),
                driver: simulated, link: link, contexts: manager)
            agents.append((agent, simulated, link, Task { try await agent.run() }))
        }
        let cluster = LocalCluster(controller: controller, loops: loops, agents: agents)
        try await eventually("every agent registered") {
            await controller.listHosts().items.filter { $0.state == .ready }.count == hosts.count
        }
        return cluster
    }

    func stop() {
        loops.cancel()
        for a in agents { a.task.cancel() }
    }

    func waitFor(_ vm: String, _ state: VMState, within seconds: Double = 10) async throws -> VMView {
        try await eventually("\(vm) \(state)", within: seconds) { try await controller.vm(vm).state == state }
        return try await controller.vm(vm)
    }
}

@Suite("Controller and agents")
struct ClusterTests {
    @Test("a VM is created, runs, stops, starts again and is deleted through the agent")
    func lifecycle() async throws {
        let cluster = try await LocalCluster.start()
        defer { cluster.stop() }
        let c = cluster.controller
        _ = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        let running = try await cluster.waitFor("a", .running)
        #expect(running.host == "h1")
        _ = try await c.stopVM("a")
        _ = try await cluster.waitFor("a", .stopped)
        #expect(try await cluster.agents[0].driver.status().first?.state == .stopped)
        _ = try await c.startVM("a")
        _ = try await cluster.waitFor("a", .running)
        _ = try await c.deleteVM("a")
        try await eventually("a removed") { await c.listVMs().items.isEmpty }
        #expect(try await cluster.agents[0].driver.status().isEmpty)
        let kinds = c.events.events(after: 0).filter { $0.name == "a" }.map(\.kind)
        #expect(kinds.first == .vmCreated && kinds.last == .vmDeleted)
    }

    @Test("a failed boot is reported with its reason; starting again recovers")
    func failedBoot() async throws {
        let cluster = try await LocalCluster.start()
        defer { cluster.stop() }
        cluster.agents[0].driver.injectStartFailure(vmNamed: "crashy")
        _ = try await cluster.controller.createVM(VMSpec(name: "crashy", image: "tiny", cpus: 1, memoryMiB: 128))
        let failed = try await cluster.waitFor("crashy", .failed)
        #expect(failed.message == "simulated boot failure")
        // The agent does not restart a failed VM on its own...
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await cluster.controller.vm("crashy").state == .failed)
        // ...but does when the user asks.
        _ = try await cluster.controller.startVM("crashy")
        _ = try await cluster.waitFor("crashy", .running)
    }

    @Test("a VM the host cannot make is reported failed with the reason, not tried again in a loop; starting again makes it")
    func failedCreate() async throws {
        let cluster = try await LocalCluster.start()
        defer { cluster.stop() }
        let driver = cluster.agents[0].driver
        driver.injectCreateFailure(vmNamed: "unmade")
        _ = try await cluster.controller.createVM(VMSpec(name: "unmade", image: "tiny", cpus: 1, memoryMiB: 128))
        let failed = try await cluster.waitFor("unmade", .failed)
        #expect(failed.message == "cannot create the VM: simulated create failure")
        #expect(try await driver.status().isEmpty)
        // Heartbeats every 50 ms: a retry each round would have made many attempts by now.
        try await Task.sleep(for: .milliseconds(500))
        #expect(driver.createAttempts(vmNamed: "unmade") == 1)
        #expect(try await cluster.controller.vm("unmade").state == .failed)
        _ = try await cluster.controller.startVM("unmade")
        _ = try await cluster.waitFor("unmade", .running)
        #expect(driver.createAttempts(vmNamed: "unmade") == 2)
    }

    @Test("VMs spread over hosts; a VM that fits nowhere waits, and is placed when a host can take it")
    func pendingUntilCapacity() async throws {
        let cluster = try await LocalCluster.start(
            hosts: ["h1", "h2"], driver: .init(cpus: 2, memoryMiB: 1024, bootDelay: .milliseconds(50)), settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        _ = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 768))
        _ = try await c.createVM(VMSpec(name: "b", image: "tiny", cpus: 1, memoryMiB: 768))
        #expect(Set([try await c.vm("a").host, try await c.vm("b").host]) == ["h1", "h2"])
        let waiting = try await c.createVM(VMSpec(name: "c", image: "tiny", cpus: 1, memoryMiB: 768))
        #expect(waiting.state == .pending)
        #expect(waiting.message?.contains("insufficient memory") == true)
        _ = try await c.stopVM("a")
        let placed = try await cluster.waitFor("c", .running)
        #expect(placed.host == (try await c.vm("a").host))
    }

    @Test("a host that misses heartbeats becomes unreachable, keeps its VMs running, and comes back")
    func offlineHost() async throws {
        let cluster = try await LocalCluster.start()
        defer { cluster.stop() }
        let c = cluster.controller
        _ = try await c.createVM(VMSpec(name: "a", image: "tiny", cpus: 1, memoryMiB: 128))
        _ = try await cluster.waitFor("a", .running)
        let cutAt = c.events.events(after: 0).last?.seq ?? 0
        cluster.agents[0].link.cut.withLock { $0 = true }
        try await eventually("h1 unreachable") { try await c.host("h1").state == .unreachable }
        // While cut off, the agent leaves its VM running, and the controller does not move or stop it.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await cluster.agents[0].driver.status().first?.state == .running)
        #expect(try await c.vm("a").state == .running)
        cluster.agents[0].link.cut.withLock { $0 = false }
        try await eventually("h1 ready again") { try await c.host("h1").state == .ready }
        #expect(try await c.vm("a").state == .running)
        // One outage, then the return (a starved test machine may show a flap before the cut or
        // after the return, which is not what this test is about).
        let hostEvents = c.events.events(after: cutAt).filter { $0.kind == .hostState }.map(\.to)
        #expect(Array(hostEvents.prefix(2)) == ["unreachable", "ready"])
    }

    @Test("a restarted controller keeps every VM and host, and agents carry on")
    func controllerRestart() async throws {
        let path = temporaryDirectory() + "/vireo.db"
        let first = try await LocalCluster.start(store: try SQLiteStore(path: path))
        for i in 0..<20 {
            _ = try await first.controller.createVM(VMSpec(name: "vm-\(i)", image: "tiny", cpus: 1, memoryMiB: 128))
        }
        _ = try await first.waitFor("vm-19", .running)
        first.loops.cancel()
        let before = first.controller.listVMs().items.map(\.id)
        // A new controller over the same file, with the old agent now talking to it.
        let second = try await Controller.open(store: try SQLiteStore(path: path), settings: .fast)
        #expect(await second.listVMs().items.map(\.id) == before)
        #expect(await second.listHosts().items.map(\.name) == ["h1"])
        let agent = Agent(
            settings: .init(name: "h1", heartbeatInterval: .milliseconds(50)), driver: first.agents[0].driver, link: second)
        first.agents[0].task.cancel()
        let task = Task { try await agent.run() }
        defer { task.cancel() }
        try await eventually("agent reports to the new controller") {
            await second.listVMs().items.allSatisfy { $0.state == .running }
        }
        #expect(try await first.agents[0].driver.status().count == 20, "no VM started twice or lost")
    }
}

/// A link that keeps the last heartbeat it carried.
final class CapturingLink: ControllerLink {
    let target: any ControllerLink
    private let last = Mutex<AgentHeartbeat?>(nil)
    init(_ target: any ControllerLink) { self.target = target }

    var lastHeartbeat: AgentHeartbeat? { last.withLock { $0 } }
    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try await target.register(registration)
    }
    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        last.withLock { $0 = heartbeat }
        return try await target.heartbeat(heartbeat)
    }
    func deliver(_ samples: AgentSamples) async throws { try await target.deliver(samples) }
    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        try await target.watch(host: host, after: known, timeout: timeout)
    }
}

@Suite("Agent heartbeat schedule")
struct AgentHeartbeatScheduleTests {
    @Test("heartbeats keep their place in the interval: a round woken early, or one that ran long, does not move the next")
    func grid() {
        let start = ContinuousClock.now
        let ten = Duration.seconds(10)
        // A round that took 2 s: the next heartbeat is 10 s after the start, not after its end.
        #expect(Agent.nextHeartbeat(after: start, interval: ten, now: start + .seconds(2)) == start + ten)
        // A round woken at 4 s (a watch): the heartbeat due at 10 s stays where it is.
        #expect(Agent.nextHeartbeat(after: start + ten, interval: ten, now: start + .seconds(4)) == start + ten)
        // A round that ran past several slots (a controller away): the next slot of the same grid.
        #expect(Agent.nextHeartbeat(after: start + ten, interval: ten, now: start + .seconds(35)) == start + .seconds(40))
        #expect(Agent.nextHeartbeat(after: start + ten, interval: ten, now: start + .seconds(40)) == start + .seconds(50))
    }

    @Test("agents started at one moment spread their heartbeats over the interval: the first at once, the next at a random point")
    func spread() {
        let start = ContinuousClock.now
        let ten = Duration.seconds(10)
        // 1,000 agents started at the same instant: when each sends its second heartbeat.
        let second = (0..<1_000).map { _ in
            let origin = Agent.heartbeatGridOrigin(now: start, interval: ten)
            #expect(origin <= start && origin > start - ten)
            return start.duration(to: Agent.nextHeartbeat(after: origin, interval: ten, now: start)).secondsValue
        }
        #expect(second.allSatisfy { $0 > 0 && $0 <= 10 })
        // Each second of the interval gets its share: 100 expected; 50 or 150 is over 5 sigma away.
        let perSecond = Dictionary(grouping: second) { Int($0.rounded(.up)) - 1 }.mapValues(\.count)
        #expect((0..<10).allSatisfy { (50...150).contains(perSecond[$0] ?? 0) })
        // A given phase puts the grid where it says.
        #expect(Agent.heartbeatGridOrigin(now: start, interval: ten, phase: 0.25) == start - .milliseconds(2_500))
    }
}

@Suite("Agent usage reports")
struct AgentUsageTests {
    @Test("an agent's heartbeat carries each running VM's CPU time and resident memory, as its driver measures them")
    func heartbeatCarriesUsage() async throws {
        let controller = try await Controller.open(store: try SQLiteStore(), settings: .fast)
        let time = ManualTime()
        let driver = SimulatedDriver(configuration: .init(bootDelay: .seconds(1)), time: time)
        let link = CapturingLink(controller)
        let agent = Agent(settings: .init(name: "h1"), driver: driver, link: link)
        defer { Task { await agent.shutDown() } }
        await agent.cycle()
        _ = try await controller.createVM(VMSpec(name: "busy", image: "tiny", cpus: 2, memoryMiB: 512))
        await agent.cycle()
        try await eventually("the agent started the VM") { try await driver.status().first?.state == .starting }
        time.advance(by: .seconds(1))
        try driver.setLoad(vmNamed: "busy", cores: 0.5, residentMiB: 300)
        time.advance(by: .seconds(4))
        await agent.cycle()
        let report = try #require(link.lastHeartbeat?.instances.first)
        #expect(report.state == .running)
        #expect(report.cpuSeconds == 2)
        #expect(report.residentBytes == 300 << 20)
        #expect(try await controller.vm("busy").state == .running)
    }
}

/// A controller that answers from a script: one answer per heartbeat, the last one repeated.
final class ScriptedLink: ControllerLink {
    private let answers: Mutex<[DesiredHostState]>
    let hostID = HostID.generate()
    init(_ answers: [DesiredHostState]) { self.answers = Mutex(answers) }

    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        AgentRegistrationResponse(hostID: hostID, heartbeatIntervalMs: 1000)
    }
    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        answers.withLock { $0.count > 1 ? $0.removeFirst() : $0[0] }
    }
    func deliver(_ samples: AgentSamples) async throws {}
    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        try await Task.sleep(for: timeout)
        return known
    }
}

@Suite("Agent releases")
struct AgentReleaseTests {
    @Test("a release is carried out once: the unchanged answers after it do not repeat it")
    func releaseOnce() async throws {
        let driver = GatedDriver(SimulatedDriver())
        let vm = InstanceSpec(id: .generate(), name: "moved", image: "tiny", cpus: 1, memoryMiB: 128)
        try await driver.create(vm)
        try await driver.start(vm.id)
        let link = ScriptedLink([
            DesiredHostState(vms: [], generation: 1, revision: 7, release: [vm.id]),
            DesiredHostState(vms: [], generation: 1, revision: 7, unchanged: true),
        ])
        let agent = Agent(settings: .init(name: "h1"), driver: driver, link: link)
        defer { Task { await agent.shutDown() } }
        for _ in 0..<4 { await agent.cycle() }
        #expect(try await driver.status().isEmpty, "released")
        #expect(driver.powerOffs.withLock { $0 } == 1)
    }
}

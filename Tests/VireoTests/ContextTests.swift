import Foundation
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing
import VireoAPI
import VireoAgent
import VireoController
import VireoDriver
import VireoDriverSimulated
import VireoHTTP
import VireoModel
import VireoStore

/// Contexts on the simulated driver: the agent's verbs, its book and journal, the pool, repair
/// after a crash, the controller's view, and working while the controller is away. Real guests
/// (what a reset brings back, isolation, reset times) are in `ContextQEMUTests`.
@Suite("Contexts")
struct ContextTests {
    static func manager(
        directory: String = temporaryDirectory(),
        driver: SimulatedDriver = .init(configuration: .init(bootDelay: .milliseconds(20))),
        pool: [String: Int] = [:]
    ) throws -> (ContextManager, SimulatedDriver) {
        let manager = try ContextManager(
            settings: .init(directory: directory, hostName: "desk", pool: pool), driver: driver)
        return (manager, driver)
    }

    static func request(
        _ name: String, _ kind: ContextKind = .disposable, network: ContextNetwork = .isolated, wait: Bool = true
    ) -> ContextOpenRequest {
        ContextOpenRequest(
            spec: ContextSpec(name: name, kind: kind, image: "web", cpus: 1, memoryMiB: 256, network: network), wait: wait)
    }

    @Test("a disposable opens, resets (counted, timed), keeps a new clean state and closes with its VM")
    func lifecycle() async throws {
        let (contexts, driver) = try Self.manager()
        await contexts.start(onChange: {})
        let opened = try await contexts.openContext(Self.request("browser"))
        #expect(opened.state == .running)
        #expect(opened.host == "desk")
        #expect(opened.kind == .disposable)
        #expect(opened.cleanSince != nil)
        #expect(!opened.fromPool)
        #expect(try await driver.snapshots(opened.vm) == ["clean-1"])

        let reset = try await contexts.resetContext("browser", host: nil, force: false)
        #expect(reset.resets == 1)
        #expect(reset.state == .running)
        #expect(reset.resetMs != nil && reset.loadMs != nil)
        #expect(reset.resetMs! >= reset.loadMs!)

        let kept = try await contexts.keepContext("browser", host: "desk")
        #expect(kept.cleanSince! >= opened.cleanSince!)
        // The new clean state replaced the old one.
        #expect(try await driver.snapshots(opened.vm) == ["clean-2"])

        let closed = try await contexts.closeContext("browser", host: nil)
        #expect(closed.state == .closed)
        #expect(try await driver.status().isEmpty)
        #expect(try await contexts.listContexts().items.isEmpty)
        #expect(!contexts.owns(opened.vm))
    }

    @Test("bad verbs fail with the right code and change nothing")
    func refusals() async throws {
        let (contexts, _) = try Self.manager()
        await contexts.start(onChange: {})
        let work = try await contexts.openContext(Self.request("work", .persistent))
        await #expect(throws: VireoError(.conflict, "context 'work' is already open on host desk")) {
            try await contexts.openContext(Self.request("work"))
        }
        for verb in ["reset", "keep", "close", "show"] {
            await #expect(throws: VireoError.notFound("context", "nope"), "\(verb) of an unknown context") {
                switch verb {
                case "reset": _ = try await contexts.resetContext("nope", host: nil, force: true)
                case "keep": _ = try await contexts.keepContext("nope", host: nil)
                case "close": _ = try await contexts.closeContext("nope", host: nil)
                default: _ = try await contexts.context("nope", host: nil)
                }
            }
        }
        let persistent = await #expect(throws: VireoError.self) {
            try await contexts.resetContext("work", host: nil, force: false)
        }
        #expect(persistent?.code == .conflict)
        #expect(persistent?.message.contains("--force") == true)
        let otherHost = await #expect(throws: VireoError.self) { try await contexts.context("work", host: "elsewhere") }
        #expect(otherHost?.code == .notFound)
        // Nothing changed: the persistent context was not reset.
        #expect(try await contexts.context("work", host: nil).resets == 0)
        let forced = try await contexts.resetContext("work", host: nil, force: true)
        #expect(forced.resets == 1)
        #expect(try await contexts.context("work", host: nil).vm == work.vm)
    }

    @Test("a reset refuses a reset, keep or close that comes while it runs")
    func busy() async throws {
        let driver = GatedDriver(SimulatedDriver(configuration: .init(bootDelay: .milliseconds(20))))
        let contexts = try ContextManager(
            settings: .init(directory: temporaryDirectory(), hostName: "desk"), driver: driver)
        await contexts.start(onChange: {})
        _ = try await contexts.openContext(Self.request("browser"))
        driver.hold()
        let reset = Task { try await contexts.resetContext("browser", host: nil, force: false) }
        try await eventually("the reset runs") { try await contexts.context("browser", host: nil).state == .resetting }
        for verb in ["reset", "keep", "close"] {
            let error = await #expect(throws: VireoError.self, "\(verb) during a reset") {
                switch verb {
                case "reset": _ = try await contexts.resetContext("browser", host: nil, force: false)
                case "keep": _ = try await contexts.keepContext("browser", host: nil)
                default: _ = try await contexts.closeContext("browser", host: nil)
                }
            }
            #expect(error?.code == .conflict)
            #expect(error?.message.contains("being reset") == true)
        }
        driver.release()
        #expect(try await reset.value.resets == 1)
        #expect(try await contexts.context("browser", host: nil).state == .running)
    }

    @Test("the pool hands out a booted disposable at once and fills itself again")
    func pool() async throws {
        let (contexts, driver) = try Self.manager(pool: ["web": 1])
        await contexts.start(onChange: {})
        // A 20 ms boot; 30 s for a machine the parallel suite (or a build beside it) saturates.
        try await eventually("the pool is ready", within: 30) { try await contexts.listContexts().pools.first?.ready == 1 }
        let pooled = try await driver.status().map(\.id)
        let opened = try await contexts.openContext(Self.request("browser", wait: false))
        #expect(opened.fromPool)
        #expect(opened.state == .running)
        #expect(opened.cleanSince != nil)
        #expect(pooled == [opened.vm])
        // A context that differs from the pool's is booted anew.
        var bigger = Self.request("big")
        bigger.spec.memoryMiB = 512
        #expect(try await contexts.openContext(bigger).fromPool == false)
        try await eventually("the pool refilled", within: 30) { try await contexts.listContexts().pools.first?.ready == 1 }
        let list = try await contexts.listContexts()
        #expect(list.items.map(\.name) == ["big", "browser"])
        #expect(try await driver.status().count == 3)
        await contexts.stop()
    }

    @Test("a restart finishes a keep that was saved, undoes one that was not, and repeats a cut reset")
    func repair() async throws {
        let directory = temporaryDirectory()
        let driver = SimulatedDriver(configuration: .init(bootDelay: .milliseconds(20)))
        let (first, _) = try Self.manager(directory: directory, driver: driver)
        await first.start(onChange: {})
        let a = try await first.openContext(Self.request("a"))
        let b = try await first.openContext(Self.request("b"))
        let c = try await first.openContext(Self.request("c"))
        // What a `kill -9` in the middle leaves: the book says what was under way.
        var book = try JSONDecoder.iso.decode(
            BookFile.self, from: Data(contentsOf: URL(fileURLWithPath: directory + "/contexts.json")))
        _ = try await driver.saveSnapshot(a.vm, tag: "clean-2")  // a: the keep's save completed
        book.set(a.vm, pending: ["keep": ["tag": "clean-2"]], nextTag: 3)
        book.set(b.vm, pending: ["keep": ["tag": "clean-2"]], nextTag: 3)  // b: the save never completed
        book.set(c.vm, pending: ["reset": [:]], nextTag: 2)
        try JSONEncoder.iso.encode(book).write(to: URL(fileURLWithPath: directory + "/contexts.json"))
        // What a reader outside the agent (vireo chaos) sees of that book.
        let view = try ContextBookView.read(from: directory + "/contexts.json").sorted { $0.name < $1.name }
        #expect(view.map(\.name) == ["a", "b", "c"])
        #expect(view.map(\.vm) == [a.vm, b.vm, c.vm])
        #expect(view.map(\.pending) == ["keep", "keep", "reset"])
        #expect(view.map(\.cleanTag) == ["clean-1", "clean-1", "clean-1"])
        #expect(view.allSatisfy { !$0.pooled })
        #expect(try ContextBookView.read(from: directory + "/none.json").isEmpty)
        try Data("{".utf8).write(to: URL(fileURLWithPath: directory + "/torn.json"))
        #expect(throws: VireoError.self) { try ContextBookView.read(from: directory + "/torn.json") }

        let (second, _) = try Self.manager(directory: directory, driver: driver)
        await second.start(onChange: {})
        #expect(try await driver.snapshots(a.vm) == ["clean-2"])
        #expect(try await driver.snapshots(b.vm) == ["clean-1"])
        let list = try await second.listContexts().items
        #expect(list.allSatisfy { $0.state == .running })
        #expect(list.first { $0.name == "c" }?.resets == 1)
        let afterKeep = try await second.keepContext("b", host: nil)
        #expect(try await driver.snapshots(afterKeep.vm) == ["clean-3"])
    }

    @Test("after a host reboot a disposable comes back clean and a persistent one from its disk")
    func reboot() async throws {
        let directory = temporaryDirectory()
        let driver = SimulatedDriver(configuration: .init(bootDelay: .milliseconds(20), stopDelay: .milliseconds(10)))
        let (first, _) = try Self.manager(directory: directory, driver: driver)
        await first.start(onChange: {})
        let browser = try await first.openContext(Self.request("browser"))
        let work = try await first.openContext(Self.request("work", .persistent))
        // The reboot: every VM stops, disks and snapshots stay; the agent starts again.
        for vm in [browser.vm, work.vm] { try await driver.stop(vm) }
        try await eventually("both stopped") { try await driver.status().allSatisfy { $0.state == .stopped } }
        let (second, _) = try Self.manager(directory: directory, driver: driver)
        await second.start(onChange: {})
        try await eventually("both run again") {
            try await second.listContexts().items.allSatisfy { $0.state == .running }
        }
        let browserLog = try await driver.consoleOutput(browser.vm, from: 0, limit: 1 << 16).text
        let workLog = try await driver.consoleOutput(work.vm, from: 0, limit: 1 << 16).text
        #expect(browserLog.contains("running from snapshot 'clean-1'"), "\(browserLog)")
        #expect(!workLog.contains("running from snapshot"), "\(workLog)")
        let journal = await second.report(statuses: try await driver.status()).journal ?? []
        #expect(journal.filter { $0.action == .restarted }.map(\.context).sorted() == ["browser", "work"])
    }

    @Test("the journal survives restarts, numbers on, and forgets what was acknowledged")
    func journal() async throws {
        let directory = temporaryDirectory()
        let (first, driver) = try Self.manager(directory: directory)
        await first.start(onChange: {})
        _ = try await first.openContext(Self.request("a"))
        _ = try await first.resetContext("a", host: nil, force: false)
        var report = await first.report(statuses: try await driver.status())
        #expect(report.journal?.map(\.action) == [.opened, .ready, .reset])
        #expect(report.journal?.map(\.seq) == [1, 2, 3])
        await first.take([], journalAck: 2)
        let (second, _) = try Self.manager(directory: directory, driver: driver)
        await second.start(onChange: {})
        report = await second.report(statuses: try await driver.status())
        #expect(report.journal?.map(\.seq) == [3])
        await second.take([], journalAck: 3)
        _ = try await second.closeContext("a", host: nil)
        report = await second.report(statuses: try await driver.status())
        #expect(report.journal?.map(\.seq) == [4])
        #expect(report.journal?.first?.action == .closed)
    }

    @Test("through the controller: open on a host, list, reset, keep, close; journal entries become events once")
    func controller() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], contexts: true)
        defer { cluster.stop() }
        let controller = cluster.controller
        var request = Self.request("browser")
        request.host = "h2"
        let opened = try await controller.openContext(request)
        #expect(opened.host == "h2")
        #expect(opened.state == .running)
        await #expect(throws: VireoError.self) { try await controller.openContext(Self.request("browser")) }
        let reset = try await controller.resetContext("browser", host: nil, force: false)
        #expect(reset.resets == 1)
        _ = try await controller.keepContext("browser", host: "h2")
        try await eventually("the controller lists it as h2 reports it") {
            try await controller.listContexts().items.map(\.resets) == [1]
        }
        #expect(try await controller.contextLogs("browser", host: nil, tail: nil).contains("saved as snapshot 'clean-2'"))
        let missing = await #expect(throws: VireoError.self) {
            try await controller.resetContext("browser", host: "h1", force: false)
        }
        #expect(missing?.code == .notFound)
        let closed = try await controller.closeContext("browser", host: nil)
        #expect(closed.state == .closed)
        try await eventually("gone from the list") { try await controller.listContexts().items.isEmpty }
        try await eventually("every journal entry recorded") {
            cluster.controller.events.events(after: 0).filter { $0.kind == .context }.count == 5
        }
        let recorded = cluster.controller.events.events(after: 0).filter { $0.kind == .context }
        #expect(recorded.map { $0.to ?? "" } == ["opened", "ready", "reset", "kept", "closed"])
        #expect(recorded.allSatisfy { $0.message?.hasPrefix("host h2") == true })
        try await eventually("the host forgot what the controller recorded") {
            await cluster.agents[1].agent.contexts?.report(statuses: try await cluster.agents[1].driver.status()).journal == nil
        }
    }

    @Test("while the controller is away the host's own API works; back, the controller's view and events catch up")
    func offline() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1"], contexts: true)
        defer { cluster.stop() }
        let controller = cluster.controller
        let host = cluster.agents[0]
        let local = try #require(host.agent.contexts)
        _ = try await controller.openContext(Self.request("browser"))
        _ = try await controller.openContext(Self.request("work", .persistent))
        try await eventually("both listed") { try await controller.listContexts().items.count == 2 }

        host.link.cut.withLock { $0 = true }
        try await eventually("the host is unreachable") { try await controller.host("h1").state == .unreachable }
        let refused = await #expect(throws: VireoError.self) {
            try await controller.resetContext("browser", host: nil, force: false)
        }
        #expect(refused?.code == .unavailable)
        #expect(try await controller.listContexts().items.allSatisfy { $0.message?.contains("unreachable") == true })
        // On the plane: the person uses the host's local API.
        _ = try await local.resetContext("browser", host: nil, force: false)
        _ = try await local.resetContext("browser", host: nil, force: false)
        _ = try await local.closeContext("work", host: nil)
        _ = try await local.openContext(Self.request("notes", .persistent))

        host.link.cut.withLock { $0 = false }
        try await eventually("the controller sees what the host did") {
            let items = try await controller.listContexts().items
            return items.map(\.name) == ["browser", "notes"] && items.first?.resets == 2
        }
        let mine = try await local.listContexts().items
        let theirs = try await controller.listContexts().items
        #expect(mine.map(\.vm) == theirs.map(\.vm))
        try await eventually("the offline work is in the events, once") {
            controller.events.events(after: 0).filter { $0.kind == .context && $0.to == "reset" }.count == 2
        }
        try await Task.sleep(for: .milliseconds(300))
        let events = controller.events.events(after: 0).filter { $0.kind == .context }
        #expect(events.filter { $0.to == "reset" }.count == 2)
        #expect(events.filter { $0.to == "closed" && $0.name == "work" }.count == 1)
        #expect(events.filter { $0.to == "opened" && $0.name == "notes" }.count == 1)
    }

    @Test(
        "the controller stopped, the host works on; a new controller on the same store learns every context, and the unacknowledged journal"
    )
    func controllerRestart() async throws {
        let store = try SQLiteStore(path: temporaryDirectory() + "/vireo.db")
        let first = try await Controller.open(store: store, settings: .fast)
        let link = SwitchableLink(first)
        let driver = SimulatedDriver(configuration: .init(bootDelay: .milliseconds(20)))
        let contexts = try ContextManager(
            settings: .init(directory: temporaryDirectory(), hostName: "desk"), driver: driver)
        let agent = Agent(
            settings: .init(name: "desk", heartbeatInterval: .milliseconds(50)), driver: driver, link: link, contexts: contexts)
        let running = Task { try await agent.run() }
        defer { running.cancel() }
        try await eventually("registered") { (try? await first.host("desk"))?.state == .ready }
        var request = Self.request("browser")
        request.host = "desk"
        _ = try await first.openContext(request)
        // Once the first controller recorded everything so far, it stops; the host works on.
        try await eventually("the host's journal is acknowledged") {
            await contexts.report(statuses: try await driver.status()).journal == nil
        }
        link.target.withLock { $0 = nil }
        _ = try await contexts.resetContext("browser", host: nil, force: false)
        _ = try await contexts.openContext(Self.request("notes", .persistent))
        let second = try await Controller.open(store: store, settings: .fast)
        link.target.withLock { $0 = second }
        try await eventually("the new controller lists both, as the host has them") {
            try await second.listContexts().items.map(\.name) == ["browser", "notes"]
        }
        #expect(try await second.listContexts().items.map(\.vm) == (try await contexts.listContexts().items.map(\.vm)))
        try await eventually("the work done meanwhile arrived as events") {
            second.events.events(after: 0).filter { $0.kind == .context }.map { "\($0.name) \($0.to ?? "")" }
                == ["browser reset", "notes opened", "notes ready"]
        }
        // And verbs through it reach the host.
        #expect(try await second.resetContext("browser", host: nil, force: false).resets == 2)
    }

    @Test("the local API answers with the envelope and the controller's codes")
    func localAPI() async throws {
        let (contexts, _) = try Self.manager()
        await contexts.start(onChange: {})
        let app = Application(router: LocalAPI.router(contexts: contexts))
        try await app.test(.router) { client in
            var response = try await client.request(
                .post, "/v1/contexts", body: #"{"name":"browser","kind":"disposable","memory":"256MiB","wait":true}"#)
            #expect(response.status == 201, "\(response.body)")
            #expect(try decodeJSON(Context.self, response.body).state == .running)
            response = try await client.request(.post, "/v1/contexts/browser/reset")
            #expect(response.status == 200)
            #expect(try decodeJSON(Context.self, response.body).resetMs != nil)
            response = try await client.request(.post, "/v1/contexts", body: #"{"name":"browser","kind":"disposable"}"#)
            #expect(response.status == 409)
            expectEnvelope(response.body, code: .conflict)
            response = try await client.request(.post, "/v1/contexts", body: #"{"name":"x","kind":"temporary"}"#)
            #expect(response.status == 400)
            #expect(expectEnvelope(response.body, code: .invalidArgument).contains("kind"))
            response = try await client.request(
                .post, "/v1/contexts", body: #"{"name":"x","kind":"disposable","network":"Bad Name"}"#)
            #expect(expectEnvelope(response.body, code: .invalidArgument).contains("network"))
            response = try await client.request(.post, "/v1/contexts/browser/reset", body: #"{"forse":true}"#)
            #expect(response.status == 400)
            response = try await client.request(.get, "/v1/contexts/nope")
            #expect(response.status == 404)
            response = try await client.request(.get, "/v1/contexts")
            #expect(try decodeJSON(ContextList.self, response.body).items.map(\.name) == ["browser"])
            response = try await client.request(.delete, "/v1/contexts/browser")
            #expect(try decodeJSON(Context.self, response.body).state == .closed)
        }
    }

    @Test("apply opens a Context document once, and refuses one that differs from the open context")
    func apply() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1"], contexts: true)
        defer { cluster.stop() }
        let manifest = """
            apiVersion: vireo/v1
            kind: Context
            metadata: {name: browser}
            spec: {kind: disposable, image: web, memory: 256MiB}
            """
        let first = try await cluster.controller.apply(try ManifestParser.parse(manifest))
        #expect(first.items.map(\.action) == [.created])
        try await eventually("listed") { try await cluster.controller.listContexts().items.count == 1 }
        let again = try await cluster.controller.apply(try ManifestParser.parse(manifest))
        #expect(again.items.map(\.action) == [.unchanged])
        let different = manifest.replacingOccurrences(of: "disposable", with: "persistent")
        let error = await #expect(throws: VireoError.self) {
            try await cluster.controller.apply(try ManifestParser.parse(different))
        }
        #expect(error?.code == .conflict)
        let bad = manifest.replacingOccurrences(of: "memory: 256MiB", with: "memory: lots")
        #expect(throws: VireoError.self) { try ManifestParser.parse(bad) }
    }
}

/// A link to a controller that can be taken away (the controller stopped) and given another.
final class SwitchableLink: ControllerLink {
    let target: Mutex<(any ControllerLink)?>
    init(_ target: any ControllerLink) { self.target = Mutex(target) }
    func current() throws -> any ControllerLink {
        guard let target = target.withLock({ $0 }) else { throw VireoError(.unavailable, "no controller") }
        return target
    }
    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try await current().register(registration)
    }
    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState { try await current().heartbeat(heartbeat) }
    func deliver(_ samples: AgentSamples) async throws { try await current().deliver(samples) }
    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        try await current().watch(host: host, after: known, timeout: timeout)
    }
}

/// A driver that can hold snapshot loads until released, to catch a context in the middle of a
/// reset, and counts power-offs; everything else is the simulated driver's.
final class GatedDriver: HypervisorDriver {
    let inner: SimulatedDriver
    private let gate = Mutex<(held: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))
    let powerOffs = Mutex(0)
    init(_ inner: SimulatedDriver) { self.inner = inner }

    func hold() { gate.withLock { $0.held = true } }
    func release() {
        let waiting = gate.withLock { g in
            g.held = false
            defer { g.waiting = [] }
            return g.waiting
        }
        for continuation in waiting { continuation.resume() }
    }

    var name: String { inner.name }
    var capabilities: Set<Capability> { inner.capabilities }
    func fingerprint() async throws -> HostFingerprint { try await inner.fingerprint() }
    func recover() async throws -> [InstanceStatus] { try await inner.recover() }
    func create(_ spec: InstanceSpec) async throws { try await inner.create(spec) }
    func start(_ id: VMID) async throws { try await inner.start(id) }
    func stop(_ id: VMID) async throws { try await inner.stop(id) }
    func delete(_ id: VMID) async throws { try await inner.delete(id) }
    func status() async throws -> [InstanceStatus] { try await inner.status() }
    func powerOff(_ id: VMID) async throws {
        powerOffs.withLock { $0 += 1 }
        try await inner.powerOff(id)
    }
    func release(_ id: VMID) async throws { try await inner.release(id) }
    func saveSnapshot(_ id: VMID, tag: String) async throws -> Duration { try await inner.saveSnapshot(id, tag: tag) }
    func loadSnapshot(_ id: VMID, tag: String) async throws -> Duration {
        await withCheckedContinuation { continuation in
            let held = gate.withLock { g in
                if g.held { g.waiting.append(continuation) }
                return g.held
            }
            if !held { continuation.resume() }
        }
        return try await inner.loadSnapshot(id, tag: tag)
    }
    func start(_ id: VMID, fromSnapshot tag: String) async throws { try await inner.start(id, fromSnapshot: tag) }
    func deleteSnapshot(_ id: VMID, tag: String) async throws { try await inner.deleteSnapshot(id, tag: tag) }
    func snapshots(_ id: VMID) async throws -> [String] { try await inner.snapshots(id) }
}

/// The agent's book as JSON, for tests that write what a crash leaves behind.
struct BookFile: Codable {
    var contexts: [[String: JSONValue]]
    var results: [JSONValue]

    mutating func set(_ vm: VMID, pending: [String: [String: String]], nextTag: Int) {
        for index in contexts.indices where contexts[index]["vm"] == .string(vm.rawValue) {
            contexts[index]["pending"] = .object(
                pending.mapValues { .object($0.mapValues { JSONValue.string($0) }) })
            contexts[index]["nextTag"] = .number(Double(nextTag))
        }
    }
}

extension JSONDecoder {
    static var iso: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

extension JSONEncoder {
    static var iso: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

import Foundation
import Synchronization
import Testing
import VireoAPI
import VireoController
import VireoModel
import VireoStore

/// A SQLite store that counts its commits and fails them when told to.
final class CountingStore: ClusterStore {
    let inner: SQLiteStore
    private let state = Mutex((commits: 0, failing: false))

    init() throws { inner = try SQLiteStore() }

    var commits: Int { state.withLock { $0.commits } }
    func failCommits(_ failing: Bool) { state.withLock { $0.failing = failing } }

    func load(recent: Int) async throws -> StoredCluster { try await inner.load(recent: recent) }
    func migrations(of vm: VMID?, limit: Int) async throws -> [Migration] { try await inner.migrations(of: vm, limit: limit) }
    func migration(_ id: MigrationID) async throws -> Migration? { try await inner.migration(id) }
    func plans(limit: Int) async throws -> [Plan] { try await inner.plans(limit: limit) }
    func plan(_ id: String) async throws -> Plan? { try await inner.plan(id) }
    func insertVM(_ vm: VirtualMachine) async throws { try await inner.insertVM(vm) }
    func commit(_ batch: StoreBatch) async throws {
        let failing = state.withLock { s in
            s.commits += 1
            return s.failing
        }
        if failing { throw VireoError(.internal, "disk full (injected)") }
        try await inner.commit(batch)
    }
    func appendConsole(_ chunks: [VMID: ConsoleChunk], retaining: Int) async throws -> [VMID: UInt64] {
        try await inner.appendConsole(chunks, retaining: retaining)
    }
    func consoleTail(of vm: VMID) async throws -> ConsoleTail? { try await inner.consoleTail(of: vm) }
    func consoleOffsets() async throws -> [VMID: UInt64] { try await inner.consoleOffsets() }
}

/// The controller's single writer: decisions are made one at a time over the committed model,
/// written together, and seen only once durable.
@Suite("Controller writer")
struct ControllerWriterTests {
    static func spec(_ name: String) -> VMSpec { VMSpec(name: name, image: "tiny", cpus: 1, memoryMiB: 64) }

    @Test("concurrent creates of one name: exactly one wins, the others are refused as conflicts")
    func oneNameOneVM() async throws {
        let controller = try await Controller.open(store: try SQLiteStore())
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<20 {
                group.addTask { (try? await controller.createVM(Self.spec("same"))) != nil }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 }.count == 1)
        #expect(await controller.listVMs().items.map(\.name) == ["same"])
    }

    @Test("decisions queued together are written in fewer transactions than there are decisions")
    func groupCommit() async throws {
        let store = try CountingStore()
        let controller = try await Controller.open(store: store)
        let before = store.commits
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 { group.addTask { _ = try await controller.createVM(Self.spec("vm-\(i)")) } }
            try await group.waitForAll()
        }
        #expect(await controller.listVMs(limit: 1000).items.count == 200)
        let commits = store.commits - before
        #expect(commits >= 1 && commits < 200, "\(commits) commits for 200 creates")
        // Everything written is what a restart loads.
        let reloaded = try await store.load()
        #expect(reloaded.vms.count == 200)
    }

    @Test("a failed store write changes nothing in memory, publishes nothing, and the next write works")
    func failedWriteChangesNothing() async throws {
        let store = try CountingStore()
        let controller = try await Controller.open(store: store)
        _ = try await controller.createVM(Self.spec("kept"))
        let version = controller.version
        let seq = controller.events.events(after: 0).last?.seq ?? 0
        store.failCommits(true)
        await #expect(throws: VireoError.self) { _ = try await controller.createVM(Self.spec("lost")) }
        await #expect(throws: VireoError.self) { _ = try await controller.stopVM("kept") }
        #expect(await controller.listVMs().items.map(\.name) == ["kept"])
        #expect(try await controller.vm("kept").intent == .running)
        #expect(controller.version == version)
        #expect(controller.events.events(after: seq).isEmpty)
        store.failCommits(false)
        _ = try await controller.createVM(Self.spec("later"))
        #expect(await controller.listVMs().items.map(\.name) == ["kept", "later"])
    }

    @Test("a refused decision does not take the decisions committed with it down")
    func refusedAlone() async throws {
        let controller = try await Controller.open(store: try SQLiteStore())
        _ = try await controller.createVM(Self.spec("taken"))
        let results = await withTaskGroup(of: (String, Bool).self) { group in
            for name in ["taken", "a", "b", "taken", "c"] {
                group.addTask { (name, (try? await controller.createVM(Self.spec(name))) != nil) }
            }
            return await group.reduce(into: [(String, Bool)]()) { $0.append($1) }
        }
        #expect(results.filter { $0.0 == "taken" }.allSatisfy { !$0.1 })
        #expect(results.filter { $0.0 != "taken" }.allSatisfy { $0.1 })
        #expect(await controller.listVMs().items.map(\.name) == ["a", "b", "c", "taken"])
    }
}

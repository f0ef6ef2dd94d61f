import Foundation
import Synchronization
import Testing
import VireoAPI
import VireoModel
import VireoStore

@testable import VireoController

/// A SQLite store that counts its commits, fails them when told to, and holds them until released.
final class CountingStore: ClusterStore {
    let inner: SQLiteStore
    private let state = Mutex(
        (commits: 0, failing: false, held: [CheckedContinuation<Void, Never>]?.none, heldVMs: 0))

    init() throws { inner = try SQLiteStore() }

    var commits: Int { state.withLock { $0.commits } }
    func failCommits(_ failing: Bool) { state.withLock { $0.failing = failing } }
    /// Commits waiting for `release`.
    var held: Int { state.withLock { $0.held?.count ?? 0 } }
    /// VMs inserted by the commits waiting for `release`.
    var heldVMs: Int { state.withLock { $0.heldVMs } }
    /// Commits wait from now on until `release`.
    func hold() { state.withLock { $0.held = [] } }
    func release() {
        let waiting = state.withLock { s in
            defer { s.held = nil }
            return s.held ?? []
        }
        for continuation in waiting { continuation.resume() }
    }

    func load(recent: Int, placements: Bool) async throws -> StoredCluster {
        try await inner.load(recent: recent, placements: placements)
    }
    func rotateSecret(_ name: String, from expected: String, to value: String, supersededDigest: String) async throws {
        try await inner.rotateSecret(name, from: expected, to: value, supersededDigest: supersededDigest)
    }
    func secret(_ name: String) async throws -> String? { try await inner.secret(name) }
    func placement(of vm: VMID) async throws -> PlacementExplanation? { try await inner.placement(of: vm) }
    func migrations(of vm: VMID?, limit: Int) async throws -> [Migration] { try await inner.migrations(of: vm, limit: limit) }
    func migration(_ id: MigrationID) async throws -> Migration? { try await inner.migration(id) }
    func plans(limit: Int) async throws -> [Plan] { try await inner.plans(limit: limit) }
    func plan(_ id: String) async throws -> Plan? { try await inner.plan(id) }
    func migrations(requestedFrom from: Date, to: Date) async throws -> [Migration] {
        try await inner.migrations(requestedFrom: from, to: to)
    }
    func plans(createdFrom from: Date, to: Date) async throws -> [Plan] { try await inner.plans(createdFrom: from, to: to) }
    func insertVM(_ vm: VirtualMachine) async throws { try await inner.insertVM(vm) }
    func tokens() async throws -> [AccessToken] { try await inner.tokens() }
    func insertToken(_ token: AccessToken) async throws { try await inner.insertToken(token) }
    func updateToken(_ token: AccessToken) async throws { try await inner.updateToken(token) }
    func appendAudit(_ entry: AuditEntry) async throws -> AuditEntry { try await inner.appendAudit(entry) }
    func audit(since: Date?, limit: Int) async throws -> [AuditEntry] { try await inner.audit(since: since, limit: limit) }
    func pruneAudit(before: Date) async throws -> Int { try await inner.pruneAudit(before: before) }
    func secret(_ name: String, proposing proposed: String) async throws -> String {
        try await inner.secret(name, proposing: proposed)
    }
    func certificateCutoffs() async throws -> [String: Date] { try await inner.certificateCutoffs() }
    func revokeCertificates(host: String, before cutoff: Date) async throws -> Date {
        try await inner.revokeCertificates(host: host, before: cutoff)
    }
    func commit(_ batch: StoreBatch) async throws {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let wait = state.withLock { s in
                guard s.held != nil else { return false }
                s.held!.append(continuation)
                s.heldVMs += batch.insertedVMs.count
                return true
            }
            if !wait { continuation.resume() }
        }
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
    static func spec(_ name: String) -> VMSpec { VMSpec(name: name, image: "tiny", cpus: 1, memoryMiB: 80) }

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
        #expect(controller.listVMs().items.map(\.name) == ["same"])
    }

    @Test("decisions queued while a write is under way are written together, in one transaction")
    func groupCommit() async throws {
        let store = try CountingStore()
        let controller = try await Controller.open(store: store)
        let before = store.commits
        store.hold()
        let creates = (0..<200).map { i in Task { try await controller.createVM(Self.spec("vm-\(i)")) } }
        // The first commit takes what had arrived when it began (one create, or a few on a busy
        // machine); everything after it waits in the queue.
        try await eventually("one commit in the store, the rest queued") {
            let queued = await controller.queuedWrites
            return store.held == 1 && queued > 0 && store.heldVMs + queued == 200
        }
        store.release()
        for create in creates { _ = try await create.value }
        #expect(controller.listVMs(limit: 1000).items.count == 200)
        #expect(store.commits - before == 2)
        // Everything written is what a restart loads.
        #expect(try await store.load().vms.count == 200)
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
        #expect(controller.listVMs().items.map(\.name) == ["kept"])
        #expect(try await controller.vm("kept").intent == .running)
        #expect(controller.version == version)
        #expect(controller.events.events(after: seq).isEmpty)
        store.failCommits(false)
        _ = try await controller.createVM(Self.spec("later"))
        #expect(controller.listVMs().items.map(\.name) == ["kept", "later"])
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
        #expect(controller.listVMs().items.map(\.name) == ["a", "b", "c", "taken"])
    }

    @Test("a decision that throws after changing the draft takes its whole group down, and none of it is kept")
    func brokenDecision() async throws {
        let store = try CountingStore()
        let controller = try await Controller.open(store: store)
        store.hold()
        // The first create's commit waits in the store, so the next three are queued as one group.
        let first = Task { try await controller.createVM(Self.spec("first")) }
        try await eventually("the first commit waits in the store") { store.held == 1 }
        let a = Task { try await controller.createVM(Self.spec("a")) }
        let broken = Task {
            try await controller.write { model -> VMView in
                _ = try model.createVM(Self.spec("b"))
                throw VireoError(.internal, "changed, then failed")
            }
        }
        let c = Task { try await controller.createVM(Self.spec("c")) }
        try await eventually("three decisions queued") { await controller.queuedWrites == 3 }
        store.release()
        #expect(try await first.value.name == "first")
        for (name, task) in [("a", a), ("b", broken), ("c", c)] {
            await #expect(throws: VireoError.self, "\(name)") { _ = try await task.value }
        }
        #expect(controller.listVMs().items.map(\.name) == ["first"])
        #expect(try await store.load().vms.map(\.name) == ["first"])
        // The writer goes on.
        _ = try await controller.createVM(Self.spec("after"))
        #expect(controller.listVMs().items.map(\.name) == ["after", "first"])
    }
}

import Foundation
import GRDB
import Synchronization
import Testing
import VireoModel
import VireoStore

/// An SQLite store under test (the PostgreSQL store's suite makes its own, one database a test).
struct StoreFixture: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable () throws -> any ClusterStore
    var testDescription: String { name }

    static let sqlite: [StoreFixture] = [
        StoreFixture(name: "sqlite-memory") { try SQLiteStore() },
        StoreFixture(name: "sqlite-file") { try SQLiteStore(path: temporaryDirectory() + "/vireo.db") },
    ]
}

/// A new directory under the system's temporary directory, removed when the test process exits
/// (most tests made theirs and left them: 5,015 of them, several GB of VM disks and logs, after a
/// day's runs). Kept until then, for the processes a test leaves to finish and for a failing
/// test's files while it is looked at.
func temporaryDirectory() -> String {
    _ = removedAtExit
    let path = NSTemporaryDirectory() + "vireo-test-" + UUID().uuidString.prefix(8).lowercased()
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    madeDirectories.withLock { $0.append(path) }
    return path
}

private let madeDirectories = Mutex<[String]>([])
private let removedAtExit: Void = {
    atexit {
        for path in madeDirectories.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }
}()

func sampleVM(_ name: String, host: HostID? = nil, state: VMState = .pending) -> VirtualMachine {
    let t = Date(timeIntervalSince1970: 1_700_000_000)
    return VirtualMachine(
        id: .generate(), spec: VMSpec(name: name, image: "tiny", cpus: 1, memoryMiB: 128), state: state, intent: .running,
        hostID: host, createdAt: t, updatedAt: t, stateChangedAt: t)
}

func sampleHost(_ name: String) -> HostRecord {
    let t = Date(timeIntervalSince1970: 1_700_000_000)
    return HostRecord(
        id: .generate(), name: name, state: .ready,
        fingerprint: HostFingerprint(cpus: 4, memoryMiB: 4096, driver: "simulated", capabilities: [.pause]),
        address: nil, registeredAt: t, lastHeartbeatAt: t, stateChangedAt: t)
}

/// What every store must do, each check run against every store: the SQLite ones here, the
/// PostgreSQL one in `PostgresStoreTests`.
struct StoreCheck: Sendable, CustomTestStringConvertible {
    let name: String
    let run: @Sendable (any ClusterStore) async throws -> Void
    var testDescription: String { name }

    init(_ name: String, _ run: @escaping @Sendable (any ClusterStore) async throws -> Void) {
        self.name = name
        self.run = run
    }

    static let all: [StoreCheck] = [
        StoreCheck("records round-trip exactly") { store in
            let host = sampleHost("h1")
            var vm = sampleVM("a", host: host.id, state: .scheduled)
            vm.placement = PlacementExplanation(
                chosenHost: "h1", decidedAt: vm.createdAt,
                verdicts: [
                    HostVerdict(
                        hostID: host.id, hostName: "h1", score: HostScore(cpuFreeAfter: 0.5, memoryFreeAfter: 0.25, total: 0.3))
                ])
            vm.address = "127.0.0.1:40419"
            try await store.upsertHost(host)
            try await store.insertVM(vm)
            let loaded = try await store.load()
            #expect(loaded.hosts == [host])
            #expect(loaded.vms == [vm])
        },
        StoreCheck("a duplicate name is a conflict and leaves the stored VM untouched") { store in
            let original = sampleVM("a")
            try await store.insertVM(original)
            var duplicate = sampleVM("a")
            duplicate.spec.cpus = 8
            let error = await #expect(throws: VireoError.self) { try await store.insertVM(duplicate) }
            #expect(error?.code == .conflict)
            #expect(try await store.load().vms == [original])
        },
        StoreCheck("a batch is all or nothing") { store in
            var a = sampleVM("a")
            try await store.insertVM(a)
            a.state = .failed
            let missing = sampleVM("ghost")
            let error = await #expect(throws: VireoError.self) {
                try await store.commit(StoreBatch(updatedVMs: [a, missing], hosts: [sampleHost("h")]))
            }
            #expect(error?.code == .notFound)
            let loaded = try await store.load()
            #expect(loaded.vms.first?.state == .pending)
            #expect(loaded.hosts.isEmpty)
        },
        StoreCheck("updates and deletes of unknown VMs are not found") { store in
            await #expect(throws: VireoError.self) { try await store.updateVM(sampleVM("x")) }
            await #expect(throws: VireoError.self) { try await store.deleteVM(VMID("x")) }
        },
        StoreCheck("a host re-registered under the same ID is replaced, not duplicated") { store in
            var host = sampleHost("h")
            try await store.upsertHost(host)
            host.state = .unreachable
            try await store.upsertHost(host)
            #expect(try await store.load().hosts == [host])
        },
        StoreCheck("console output is kept trimmed per VM and goes with its VM") { store in
            let a = sampleVM("a")
            let b = sampleVM("b")
            try await store.insertVM(a)
            try await store.insertVM(b)
            #expect(try await store.consoleTail(of: a.id) == nil)
            let ghost = VMID.generate()
            let offsets = try await store.appendConsole(
                [a.id: ConsoleChunk(offset: 0, next: 6, text: "hello\n"), ghost: ConsoleChunk(offset: 0, next: 1, text: "x")],
                retaining: 8)
            #expect(offsets == [a.id: 6], "output of a VM that does not exist is dropped")
            _ = try await store.appendConsole([a.id: ConsoleChunk(offset: 6, next: 12, text: "world\n")], retaining: 8)
            #expect(try await store.consoleTail(of: a.id) == ConsoleTail(text: "o\nworld\n", next: 12, written: 12))
            _ = try await store.appendConsole([b.id: ConsoleChunk(offset: 0, next: 3, text: "b!\n")], retaining: 8)
            #expect(try await store.consoleOffsets() == [a.id: 12, b.id: 3])
            try await store.deleteVM(a.id)
            #expect(try await store.consoleTail(of: a.id) == nil)
            #expect(try await store.consoleOffsets() == [b.id: 3])
        },
        StoreCheck("history is read newest first, and a recent load keeps what is open plus the newest") { store in
            let a = sampleVM("a")
            let b = sampleVM("b")
            let (h1, h2) = (sampleHost("h1"), sampleHost("h2"))
            try await store.commit(StoreBatch(insertedVMs: [a, b], hosts: [h1, h2]))
            let t0 = Date(timeIntervalSince1970: 1_700_000_000)
            var migrations: [Migration] = []
            for i in 0..<30 {
                var m = Migration(
                    vmID: i % 2 == 0 ? a.id : b.id, vmName: i % 2 == 0 ? "a" : "b", source: h1.id, destination: h2.id,
                    reason: "test \(i)", requestedAt: t0.addingTimeInterval(Double(i)))
                // The oldest one is still running: a recent load keeps it whatever its age.
                m.state = i == 0 ? .running : .completed
                migrations.append(m)
            }
            let plans = (0..<12).map { i in
                Plan(
                    id: "p\(i)", policy: "slo", trigger: .manual, state: .completed, createdAt: t0.addingTimeInterval(Double(i)),
                    actions: [], considered: [], notes: [])
            }
            try await store.commit(StoreBatch(migrations: migrations, plans: plans))

            let recent = try await store.load(recent: 5)
            #expect(recent.migrations.map(\.reason) == ["test 0", "test 25", "test 26", "test 27", "test 28", "test 29"])
            #expect(recent.plans.map(\.id) == ["p7", "p8", "p9", "p10", "p11"])
            #expect(try await store.load().migrations.count == 30)

            #expect(try await store.migrations(of: nil, limit: 3).map(\.reason) == ["test 29", "test 28", "test 27"])
            #expect(try await store.migrations(of: b.id, limit: 2).map(\.reason) == ["test 29", "test 27"])
            #expect(try await store.migration(migrations[3].id) == migrations[3])
            #expect(try await store.migration(MigrationID("nope")) == nil)
            #expect(try await store.plans(limit: 2).map(\.id) == ["p11", "p10"])
            #expect(try await store.plan("p3") == plans[3])
            #expect(try await store.plan("nope") == nil)
        },
        StoreCheck("migrations and plans of a time window are read oldest first, the window's end excluded") { store in
            let a = sampleVM("a")
            let (h1, h2) = (sampleHost("h1"), sampleHost("h2"))
            try await store.commit(StoreBatch(insertedVMs: [a], hosts: [h1, h2]))
            let t0 = Date(timeIntervalSince1970: 1_700_000_000)
            // Stored newest first, so the order read back is the query's, not the insertion's.
            let migrations = (0..<10).reversed().map { i in
                Migration(
                    vmID: a.id, vmName: "a", source: h1.id, destination: h2.id, reason: "move \(i)",
                    requestedAt: t0.addingTimeInterval(Double(i) * 60))
            }
            let plans = (0..<10).reversed().map { i in
                Plan(
                    id: "p\(i)", policy: "slo", trigger: .automatic, state: .completed,
                    createdAt: t0.addingTimeInterval(Double(i) * 60), actions: [], considered: [], notes: [])
            }
            try await store.commit(StoreBatch(migrations: migrations, plans: plans))
            let from = t0.addingTimeInterval(120)
            let to = t0.addingTimeInterval(300)
            #expect(try await store.migrations(requestedFrom: from, to: to).map(\.reason) == ["move 2", "move 3", "move 4"])
            #expect(try await store.plans(createdFrom: from, to: to).map(\.id) == ["p2", "p3", "p4"])
            #expect(try await store.migrations(requestedFrom: to, to: to).isEmpty)
            #expect(try await store.plans(createdFrom: t0.addingTimeInterval(-600), to: t0).isEmpty)
            let found = try await store.migrations(requestedFrom: from, to: to)
            #expect(found.first == migrations.first { $0.reason == "move 2" }, "the whole record")
        },
        StoreCheck("10,000 VMs are stored and loaded without loss") { store in
            for i in 0..<10_000 { try await store.insertVM(sampleVM("vm-\(i)")) }
            let loaded = try await store.load()
            #expect(loaded.vms.count == 10_000)
            #expect(Set(loaded.vms.map(\.name)).count == 10_000)
        },
        StoreCheck("applications and settings are replaced by name; an unknown one is not found") { store in
            let t = Date(timeIntervalSince1970: 1_700_000_000)
            var shop = AppRecord(spec: ApplicationSpec(name: "shop"), createdAt: t, updatedAt: t)
            let blog = AppRecord(spec: ApplicationSpec(name: "blog"), createdAt: t, updatedAt: t)
            try await store.commit(StoreBatch(apps: [shop, blog], rebalance: RebalanceSettings(policy: "slo")))
            shop.generation = 2
            try await store.commit(StoreBatch(apps: [shop], rebalance: RebalanceSettings(policy: nil, intervalSeconds: 5)))
            var loaded = try await store.load()
            #expect(loaded.apps == [blog, shop], "ordered by name, the newest of each")
            #expect(loaded.rebalance == RebalanceSettings(policy: nil, intervalSeconds: 5))
            let error = await #expect(throws: VireoError.self) {
                try await store.commit(StoreBatch(deletedApps: ["blog", "nope"]))
            }
            #expect(error?.code == .notFound)
            #expect(try await store.load().apps == [blog, shop], "the batch is undone: blog is still there")
            try await store.commit(StoreBatch(deletedApps: ["blog"]))
            loaded = try await store.load()
            #expect(loaded.apps == [shop])
        },
        StoreCheck("a second host with a taken name is a conflict, and nothing of its batch is written") { store in
            let first = sampleHost("h")
            try await store.upsertHost(first)
            let vm = sampleVM("a")
            let error = await #expect(throws: VireoError.self) {
                try await store.commit(StoreBatch(insertedVMs: [vm], hosts: [sampleHost("h")]))
            }
            #expect(error?.code == .conflict)
            let loaded = try await store.load()
            #expect(loaded.hosts == [first])
            #expect(loaded.vms.isEmpty)
        },
        StoreCheck("tokens round-trip, a taken name or secret is a conflict, and revoking replaces the record") { store in
            let t = Date(timeIntervalSince1970: 1_700_000_000)
            let ci = AccessToken(name: "ci", role: .operator, createdAt: t, secretHash: String(repeating: "a", count: 64))
            let shop = AccessToken(
                name: "shop-team", role: .owner, apps: ["shop", "shop-db"], createdAt: t, expiresAt: t.addingTimeInterval(3_600),
                secretHash: String(repeating: "b", count: 64))
            try await store.insertToken(shop)
            try await store.insertToken(ci)
            #expect(try await store.tokens() == [ci, shop], "by name")
            var sameName = ci
            sameName.secretHash = String(repeating: "c", count: 64)
            #expect(await #expect(throws: VireoError.self) { try await store.insertToken(sameName) }?.code == .conflict)
            var sameSecret = ci
            sameSecret.name = "other"
            #expect(await #expect(throws: VireoError.self) { try await store.insertToken(sameSecret) }?.code == .conflict)
            var revoked = ci
            revoked.revokedAt = t.addingTimeInterval(60)
            try await store.updateToken(revoked)
            #expect(try await store.tokens() == [revoked, shop])
            var missing = ci
            missing.name = "nope"
            #expect(await #expect(throws: VireoError.self) { try await store.updateToken(missing) }?.code == .notFound)
            #expect(try await store.tokens() == [revoked, shop], "a failed update changes nothing")
        },
        StoreCheck("a secret is the first one proposed: later proposals get it back and change nothing") { store in
            #expect(try await store.secret("admin-token", proposing: "first") == "first")
            #expect(try await store.secret("admin-token", proposing: "second") == "first")
            #expect(try await store.secret("join-token", proposing: "other") == "other", "each name its own")
            #expect(try await store.secret("admin-token", proposing: "") == "first")
            // Concurrent first proposals: all get the same one, one of theirs.
            let answers = try await withThrowingTaskGroup(of: String.self) { group in
                for i in 0..<8 { group.addTask { try await store.secret("authority", proposing: "p\(i)") } }
                return try await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(Set(answers).count == 1 && answers[0].hasPrefix("p"), "\(answers)")
        },
        StoreCheck("a load without placements gives the VMs as stored but for their placement explanations") { store in
            let host = sampleHost("h1")
            var placed = sampleVM("placed", host: host.id, state: .scheduled)
            placed.placement = PlacementExplanation(
                chosenHost: "h1", decidedAt: Date(timeIntervalSince1970: 1_700_000_000),
                verdicts: [HostVerdict(hostID: host.id, hostName: "h1")], omitted: ["scored": 3])
            let plain = sampleVM("plain")
            try await store.commit(StoreBatch(insertedVMs: [placed, plain], hosts: [host]))
            let full = try await store.load(recent: 10)
            #expect(full.vms == [placed, plain])
            let light = try await store.load(recent: 10, placements: false)
            #expect(light.vms == [placed.withoutPlacement, plain])
            #expect(light.hosts == full.hosts)
            #expect(try await store.placement(of: placed.id) == placed.placement)
            #expect(try await store.placement(of: plain.id) == nil)
            #expect(try await store.placement(of: VMID("no-such-vm")) == nil)
        },
        StoreCheck("a VM written without its placement explanation keeps the stored one; a new one replaces it") { store in
            let host = sampleHost("h1")
            var vm = sampleVM("a", host: host.id, state: .scheduled)
            let first = PlacementExplanation(
                chosenHost: "h1", decidedAt: Date(timeIntervalSince1970: 1_700_000_000),
                verdicts: [HostVerdict(hostID: host.id, hostName: "h1")])
            vm.placement = first
            try await store.commit(StoreBatch(insertedVMs: [vm], hosts: [host]))
            // What a controller writes after: the VM as it holds it, without the explanation.
            var running = vm.withoutPlacement
            running.state = .running
            try await store.updateVM(running)
            var expected = running
            expected.placement = first
            #expect(try await store.load().vms == [expected])
            #expect(try await store.placement(of: vm.id) == first)
            var second = first
            second.decidedAt = first.decidedAt.addingTimeInterval(60)
            second.chosenHost = nil
            running.placement = second
            try await store.updateVM(running)
            #expect(try await store.load().vms == [running])
            // Deleted with its VM.
            try await store.deleteVM(vm.id)
            #expect(try await store.placement(of: vm.id) == nil)
        },
        StoreCheck("a secret rotates only from the value it has, and keeps the digests of the ones it had") { store in
            #expect(try await store.supersededSecrets("join-token").isEmpty)
            #expect(try await store.secret("join-token") == nil, "a read stores nothing")
            #expect(try await store.secret("join-token", proposing: "first") == "first")
            #expect(try await store.secret("join-token") == "first")
            let stale = await #expect(throws: VireoError.self) {
                try await store.rotateSecret("join-token", from: "not-it", to: "second", supersededDigest: "d0")
            }
            #expect(stale?.code == .conflict)
            #expect(try await store.secret("join-token", proposing: "x") == "first", "nothing changed")
            #expect(try await store.supersededSecrets("join-token").isEmpty)
            try await store.rotateSecret("join-token", from: "first", to: "second", supersededDigest: "d1")
            try await store.rotateSecret("join-token", from: "second", to: "third", supersededDigest: "d2")
            #expect(try await store.secret("join-token", proposing: "x") == "third")
            #expect(try await store.supersededSecrets("join-token") == ["d1", "d2"])
            #expect(try await store.supersededSecrets("admin-token").isEmpty, "each secret its own")
        },
        StoreCheck("a host's certificate cutoff is stored, and only moves later") { store in
            let t = Date(timeIntervalSince1970: 1_700_000_000)
            let none = try await store.certificateCutoffs()
            #expect(none.isEmpty)
            #expect(try await store.revokeCertificates(host: "h1", before: t) == t)
            #expect(try await store.revokeCertificates(host: "h2", before: t.addingTimeInterval(5)) == t.addingTimeInterval(5))
            #expect(
                try await store.revokeCertificates(host: "h1", before: t.addingTimeInterval(-60)) == t,
                "an earlier one is no change")
            #expect(try await store.revokeCertificates(host: "h1", before: t.addingTimeInterval(60)) == t.addingTimeInterval(60))
            #expect(try await store.certificateCutoffs() == ["h1": t.addingTimeInterval(60), "h2": t.addingTimeInterval(5)])
        },
        StoreCheck("the audit trail numbers its entries in order and returns the newest, oldest first") { store in
            let t = Date(timeIntervalSince1970: 1_700_000_000)
            var stored: [AuditEntry] = []
            for i in 0..<5 {
                let entry = AuditEntry(
                    at: t.addingTimeInterval(Double(i) * 10), who: i.isMultiple(of: 2) ? "ci" : "loopback",
                    role: i.isMultiple(of: 2) ? .operator : .admin, method: "POST", path: "/v1/vms/a\(i)/stop",
                    status: i == 3 ? 403 : 202, requestId: "r\(i)", error: i == 3 ? "no" : nil)
                stored.append(try await store.appendAudit(entry))
            }
            #expect(stored.map(\.seq) == stored.map(\.seq).sorted() && Set(stored.map(\.seq)).count == 5, "increasing")
            #expect(stored.allSatisfy { $0.seq > 0 })
            #expect(try await store.audit(since: nil, limit: 100) == stored)
            #expect(try await store.audit(since: nil, limit: 2) == Array(stored[3...]), "the newest two, oldest first")
            #expect(
                try await store.audit(since: t.addingTimeInterval(20), limit: 100) == Array(stored[2...]), "at or after since")
            #expect(try await store.audit(since: t.addingTimeInterval(41), limit: 100) == [])
            // Pruning deletes what is older than its bound, and nothing numbered is numbered again.
            #expect(try await store.pruneAudit(before: t.addingTimeInterval(20)) == 2)
            #expect(try await store.audit(since: nil, limit: 100) == Array(stored[2...]))
            #expect(try await store.pruneAudit(before: t) == 0)
            let next = try await store.appendAudit(stored[0])
            #expect(next.seq > stored[4].seq)
        },
    ]
}

@Suite("Store conformance")
struct StoreConformanceTests {
    @Test("every store check on SQLite", arguments: StoreFixture.sqlite, StoreCheck.all)
    func sqlite(fixture: StoreFixture, check: StoreCheck) async throws {
        try await check.run(try fixture.make())
    }
}

@Suite("SQLite store")
struct SQLiteStoreTests {
    @Test("data survives closing and reopening, and the schema is migrated on open")
    func reopen() async throws {
        let path = temporaryDirectory() + "/vireo.db"
        let vm = sampleVM("durable")
        do {
            let store = try SQLiteStore(path: path)
            try await store.insertVM(vm)
        }
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.load().vms == [vm])
        #expect(
            try reopened.appliedMigrations() == [
                "v1: hosts and vms", "v2: console output", "v3: migrations", "v4: applications",
                "v5: rebalancing plans and settings", "v6: migrations by request time", "v7: access tokens and audit",
                "v8: leader lease", "v9: cluster secrets", "v10: agent certificate cutoffs",
                "v11: placement explanations apart",
            ])
    }

    @Test("a database an earlier Vireo wrote, with the placement explanations inside the records, has them moved apart on open")
    func placementsMovedApart() async throws {
        let path = temporaryDirectory() + "/vireo.db"
        let placed = samplePlacedVM("placed")
        let plain = sampleVM("plain")
        do {
            let store = try SQLiteStore(path: path)
            try await store.commit(StoreBatch(insertedVMs: [placed, plain]))
        }
        // Back to before the step: the explanation inside the record, no column, the step not applied.
        do {
            let database = try DatabaseQueue(path: path)
            try await database.write { db in
                try db.execute(
                    sql: "UPDATE vms SET body = ? WHERE id = ?",
                    arguments: [try JSONEncoder().encode(placed), placed.id.rawValue])
                try db.execute(sql: "ALTER TABLE vms DROP COLUMN placement")
                try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v11: placement explanations apart'")
            }
            try database.close()
        }
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.load().vms == [placed, plain])
        #expect(try await reopened.load(recent: 10, placements: false).vms == [placed.withoutPlacement, plain])
        #expect(try await reopened.placement(of: placed.id) == placed.placement)
        #expect(try reopened.appliedMigrations().last == "v11: placement explanations apart")
    }
}

/// A VM on a host, with the explanation of its placement.
func samplePlacedVM(_ name: String) -> VirtualMachine {
    let host = sampleHost("h1")
    var vm = sampleVM(name, host: host.id, state: .scheduled)
    vm.placement = PlacementExplanation(
        chosenHost: "h1", decidedAt: Date(timeIntervalSince1970: 1_700_000_000),
        verdicts: [HostVerdict(hostID: host.id, hostName: "h1")], omitted: ["scored": 3])
    return vm
}

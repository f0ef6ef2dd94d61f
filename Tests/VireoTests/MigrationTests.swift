import Foundation
import Testing
import VireoAPI
import VireoController
import VireoDriver
import VireoDriverSimulated
import VireoModel
import VireoStore

/// The controller's side of live migration, with simulated hosts: orders, reports, the move, and
/// every way it can be refused or fail. Real QEMU migrations are in QEMUMigrationTests.
@Suite("Migration orchestration")
struct MigrationTests {
    func runningVM(_ cluster: LocalCluster, _ name: String = "m") async throws -> VMView {
        _ = try await cluster.controller.createVM(VMSpec(name: name, image: "tiny", cpus: 1, memoryMiB: 256))
        return try await cluster.waitFor(name, .running)
    }

    @Test("a running VM moves to the other host; the migration is recorded with its figures")
    func moves() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        let vm = try await runningVM(cluster)
        let source = try #require(vm.host)
        let destination = source == "h1" ? "h2" : "h1"
        let started = try await c.migrateVM("m", to: destination)
        #expect(started.state == .pending)
        #expect(started.source == source && started.destination == destination)

        try await eventually("migration completed") { try await c.migration(started.id.rawValue).state == .completed }
        let done = try await c.migration(started.id.rawValue)
        #expect(done.stats?.transferredBytes == 256 << 20)
        #expect(done.stats?.downtimeMs == 20)
        #expect(done.endedAt != nil)
        #expect(try await c.vm("m").host == destination)
        try await eventually("the guest runs on the destination, and only there") {
            let there = try await cluster.driver(destination).status().first { $0.id == vm.id }
            let here = try await cluster.driver(source).status().first { $0.id == vm.id }
            return there?.state == .running && here == nil
        }
        _ = try await cluster.waitFor("m", .running)
        #expect(try await c.listMigrations(vm: "m").items.map(\.id) == [started.id])
        let kinds = c.events.events(after: 0).filter { $0.kind == .migration }.map(\.to)
        #expect(kinds.first == "pending" && kinds.last == "completed")

        // And back again: a VM can move as often as it needs to.
        let back = try await c.migrateVM("m", to: source)
        try await eventually("migrated back") { try await c.migration(back.id.rawValue).state == .completed }
        #expect(try await c.vm("m").host == source)
        #expect(try await c.listMigrations(vm: "m").items.map(\.id) == [back.id, started.id])
    }

    @Test("requests that cannot be carried out are refused with the reason, and nothing changes")
    func refused() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        let vm = try await runningVM(cluster)
        let source = try #require(vm.host)
        let other = source == "h1" ? "h2" : "h1"

        func refusal(_ vm: String, _ host: String) async -> VireoError? {
            await #expect(throws: VireoError.self) { try await c.migrateVM(vm, to: host) }
        }
        #expect(await refusal("nope", other)?.code == .notFound)
        #expect(await refusal("m", "h9")?.code == .notFound)
        let same = await refusal("m", source)
        #expect(same?.code == .failedPrecondition)
        #expect(same?.message.contains("already runs on host '\(source)'") == true)
        _ = try await c.createVM(VMSpec(name: "big", image: "tiny", cpus: 1, memoryMiB: 120_000, host: source))
        _ = try await c.createVM(VMSpec(name: "filler", image: "tiny", cpus: 1, memoryMiB: 120_000, host: other))
        _ = try await cluster.waitFor("big", .running)
        let full = await refusal("big", other)
        #expect(full?.code == .failedPrecondition)
        #expect(full?.message.contains("cannot take VM 'big'") == true)
        _ = try await c.stopVM("big")
        _ = try await cluster.waitFor("big", .stopped)
        #expect(await refusal("big", other)?.message.contains("only a running VM") == true)
        #expect(try await c.listMigrations().items.isEmpty)
        // A VM that exists but never moved has an empty history; one that never existed is not found.
        #expect(try await c.listMigrations(vm: "big").items.isEmpty)
        await #expect(throws: VireoError.self) { _ = try await c.listMigrations(vm: "no-such-vm") }
        #expect(try await c.vm("m").host == source)
    }

    @Test("while a migration is under way the VM cannot be migrated again, stopped or deleted")
    func oneAtATime() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        let vm = try await runningVM(cluster)
        let destination = vm.host == "h1" ? "h2" : "h1"
        cluster.link(destination).cut.withLock { $0 = true }  // the destination never hears of it
        let migration = try await c.migrateVM("m", to: destination)
        for attempt in [
            { _ = try await c.migrateVM("m", to: destination) }, { _ = try await c.stopVM("m") },
            { _ = try await c.deleteVM("m") },
        ] as [@Sendable () async throws -> Void] {
            let error = await #expect(throws: VireoError.self) { try await attempt() }
            #expect(error?.code == .conflict)
            #expect(error?.message.contains("\(migration.id)") == true)
        }
    }

    @Test("an unreachable destination fails the migration; the VM keeps running where it was")
    func destinationUnreachable() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        let vm = try await runningVM(cluster)
        let source = try #require(vm.host)
        let destination = source == "h1" ? "h2" : "h1"
        cluster.link(destination).cut.withLock { $0 = true }
        let migration = try await c.migrateVM("m", to: destination)
        try await eventually("migration failed", within: 20) { try await c.migration(migration.id.rawValue).state == .failed }
        let failed = try await c.migration(migration.id.rawValue)
        let reason = try #require(failed.message)
        #expect(reason.contains("unreachable") || reason.contains("did not get ready"))
        #expect(try await c.vm("m").host == source)
        #expect(try await c.vm("m").state == .running)
        #expect(try await cluster.driver(source).status().first { $0.id == vm.id }?.state == .running)
        // Once the migration has ended, the VM can be stopped again.
        _ = try await c.stopVM("m")
    }

    @Test("a migration that fails while its source's agent is away leaves no guest paused: the agent resumes it on return")
    func pausedSourceResumed() async throws {
        let settings = ControllerSettings(
            heartbeatInterval: .milliseconds(50), hostTimeout: .seconds(30), tickInterval: .milliseconds(50),
            migrationStartTimeout: .seconds(6))
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: settings)
        defer { cluster.stop() }
        let c = cluster.controller
        let vm = try await runningVM(cluster)
        let source = try #require(vm.host)
        let destination = source == "h1" ? "h2" : "h1"
        // The destination never gets ready, so the move fails; meanwhile the source has paused the
        // guest (as a paused migration's source does) and its agent is cut off. The source must be
        // cut off before the move fails, or it hears of the failure and rightly resumes the guest:
        // the start timeout leaves room for a test task that a loaded machine delays by seconds.
        cluster.link(destination).cut.withLock { $0 = true }
        let migration = try await c.migrateVM("m", to: destination)
        try await cluster.driver(source).pause(vm.id)
        func paused() async throws -> Bool? { try await cluster.driver(source).status().first { $0.id == vm.id }?.paused }
        // While the move is under way the paused guest is the move's: left alone. (Read before
        // the move's state: a move seen under way after was under way when the guest was seen.)
        try await Task.sleep(for: .milliseconds(300))
        let pausedDuringMove = try await paused()
        cluster.link(source).cut.withLock { $0 = true }
        try #require(
            try await c.migration(migration.id.rawValue).state.isActive,
            "the move was still under way when the source was cut off")
        #expect(pausedDuringMove == true, "not resumed while its move is under way")
        try await eventually("migration failed", within: 20) { try await c.migration(migration.id.rawValue).state == .failed }
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await paused() == true, "the agent, cut off, has not heard")
        // The agent is back: the VM is meant to run here and no move explains the pause.
        cluster.link(source).cut.withLock { $0 = false }
        try await eventually("the guest resumed") { try await paused() == nil }
        #expect(try await c.vm("m").host == source)
        #expect(try await c.vm("m").state == .running)
    }

    @Test("migrations survive a controller restart")
    func persisted() async throws {
        let directory = temporaryDirectory()
        let store = try SQLiteStore(path: directory + "/vireo.db")
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], store: store, settings: .steady)
        let vm = try await runningVM(cluster)
        let migration = try await cluster.controller.migrateVM("m", to: vm.host == "h1" ? "h2" : "h1")
        try await eventually("completed") {
            try await cluster.controller.migration(migration.id.rawValue).state == .completed
        }
        let before = try await cluster.controller.migration(migration.id.rawValue)
        cluster.stop()
        let reopened = try await Controller.open(store: try SQLiteStore(path: directory + "/vireo.db"), settings: .fast)
        let after = try await reopened.migration(migration.id.rawValue)
        #expect(after.state == .completed)
        #expect(after.stats == before.stats)
        #expect(after.destination == before.destination)
    }
}

extension ControllerSettings {
    /// Fast, but a host is not declared unreachable for a heartbeat that a loaded machine delays
    /// (the QEMU suites run at the same time): for tests whose expectations a flapping host would
    /// upset (a migration failing for another reason, the state version changing).
    static let steady = ControllerSettings(
        heartbeatInterval: .milliseconds(50), hostTimeout: .seconds(5), tickInterval: .milliseconds(50),
        migrationStartTimeout: .seconds(10))
}

extension LocalCluster {
    func driver(_ host: String) -> SimulatedDriver { agents.first { $0.agent.settings.name == host }!.driver }
    func link(_ host: String) -> CuttableLink { agents.first { $0.agent.settings.name == host }!.link }
}

@Suite("Migration storage and cold moves: the controller's decisions")
struct MigrationStorageTests {
    func host(_ driver: String, _ capabilities: [Capability], shared: String? = nil) -> HostFingerprint {
        HostFingerprint(
            cpus: 4, memoryMiB: 4096, driver: driver, capabilities: capabilities,
            attributes: shared.map { [HostFingerprint.sharedStorageAttribute: $0] } ?? [:])
    }

    @Test("hosts that name the same shared storage share the disk; others copy it if both can, else neither")
    func storageDecision() {
        let copying: [Capability] = [.liveMigration, .storageMigration]
        #expect(host("qemu", copying, shared: "/d").migrationStorage(to: host("qemu", copying, shared: "/d")) == .shared)
        #expect(host("qemu", copying, shared: "/d").migrationStorage(to: host("qemu", copying, shared: "/e")) == .copy)
        #expect(host("qemu", copying).migrationStorage(to: host("qemu", copying)) == .copy)
        #expect(host("libvirt", [.liveMigration]).migrationStorage(to: host("qemu", copying)) == nil)
        #expect(
            host("libvirt", [.liveMigration], shared: "/d").migrationStorage(to: host("libvirt", [.liveMigration], shared: "/d"))
                == .shared)
    }

    @Test("copy and cold requests a host cannot carry out are refused naming why, and nothing starts")
    func refusals() async throws {
        let cluster = try await LocalCluster.start(hosts: ["h1", "h2"], settings: .steady)
        defer { cluster.stop() }
        let c = cluster.controller
        _ = try await c.createVM(VMSpec(name: "m", image: "tiny", cpus: 1, memoryMiB: 128, host: "h1"))
        _ = try await cluster.waitFor("m", .running)
        // Simulated hosts share their (simulated) storage: a move shares it, and copying is not theirs to do.
        let copy = await #expect(throws: VireoError.self) { try await c.migrateVM("m", to: "h2", storage: .copy) }
        #expect(copy?.code == .failedPrecondition)
        #expect(copy?.message.contains("cannot copy a disk during a live move") == true, "\(String(describing: copy))")
        let cold = await #expect(throws: VireoError.self) { try await c.migrateVMCold("m", to: "h2") }
        #expect(cold?.code == .failedPrecondition)
        #expect(cold?.message.contains("cannot move VMs cold: it lacks cold-migration") == true, "\(String(describing: cold))")
        #expect(try await c.listMigrations().items.isEmpty)
        // A shared move between them goes on as before, recorded as such.
        let moved = try await c.migrateVM("m", to: "h2")
        #expect(moved.storage == .shared && moved.kind == .live)
    }

    @Test("the migrate body: cold with copyStorage false, and unknown fields, are 400 naming the field")
    func badBodies() async throws {
        let plane = try await TestControlPlane.make(hosts: ["h1", "h2"])
        try await plane.test { client in
            _ = try await client.request(.post, "/v1/vms", body: #"{"name":"a","image":"tiny"}"#)
            let both = try await client.request(
                .post, "/v1/vms/a/migrate", body: #"{"to":"h2","cold":true,"copyStorage":false}"#)
            #expect(both.status == 400)
            #expect(expectEnvelope(both.body, code: .invalidArgument).contains("copyStorage"))
            let unknown = try await client.request(.post, "/v1/vms/a/migrate", body: #"{"to":"h2","speed":1}"#)
            #expect(unknown.status == 400)
            #expect(expectEnvelope(unknown.body, code: .invalidArgument).contains("speed"))
            let notBool = try await client.request(.post, "/v1/vms/a/migrate", body: #"{"to":"h2","cold":"yes"}"#)
            #expect(notBool.status == 400)
            #expect(expectEnvelope(notBool.body, code: .invalidArgument).contains("cold"))
            // A VM that is not running or stopped on a host (scheduled, no agent here) cannot move cold.
            let scheduled = try await client.request(.post, "/v1/vms/a/migrate", body: #"{"to":"h2","cold":true}"#)
            #expect(scheduled.status == 412)
        }
    }
}

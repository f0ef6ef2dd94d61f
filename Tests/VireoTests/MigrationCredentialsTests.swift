import Foundation
import Synchronization
import Testing
import VireoAPI
import VireoAgent
import VireoController
import VireoDriver
import VireoDriverSimulated
import VireoModel
import VireoSecurity
import VireoStore
import X509

/// A link that keeps every migration order the controller sent its agent.
final class OrderRecordingLink: ControllerLink {
    let target: any ControllerLink
    let orders = Mutex<[MigrationOrder]>([])
    init(_ target: any ControllerLink) { self.target = target }

    func register(_ registration: AgentRegistration) async throws -> AgentRegistrationResponse {
        try await target.register(registration)
    }
    func heartbeat(_ heartbeat: AgentHeartbeat) async throws -> DesiredHostState {
        let desired = try await target.heartbeat(heartbeat)
        orders.withLock { $0 += desired.migrations ?? [] }
        return desired
    }
    func deliver(_ samples: AgentSamples) async throws { try await target.deliver(samples) }
    func watch(host: HostID, after known: Int, timeout: Duration) async throws -> Int {
        try await target.watch(host: host, after: known, timeout: timeout)
    }
}

/// The simulated driver, made to move VMs cold: it records the credentials a cold move hands it
/// (exporting and copying nothing — the real copy is in DiskTransferTests and RealMoveTests).
final class ColdRecordingDriver: HypervisorDriver {
    let inner: SimulatedDriver
    let exported = Mutex<[MigrationCredentials?]>([])
    let copied = Mutex<[MigrationCredentials?]>([])
    init(_ inner: SimulatedDriver) { self.inner = inner }

    var name: String { inner.name }
    var capabilities: Set<Capability> { inner.capabilities.union([.coldMigration]) }
    func fingerprint() async throws -> HostFingerprint {
        var fingerprint = try await inner.fingerprint()
        fingerprint.capabilities.append(.coldMigration)
        // Hosts of their own storage: a cold move copies the disk.
        fingerprint.attributes[HostFingerprint.sharedStorageAttribute] = nil
        return fingerprint
    }
    func recover() async throws -> [InstanceStatus] { try await inner.recover() }
    func create(_ spec: InstanceSpec) async throws { try await inner.create(spec) }
    func create(_ spec: InstanceSpec, diskCredentials: MigrationCredentials?) async throws {
        if spec.diskSource != nil { copied.withLock { $0.append(diskCredentials) } }
        var spec = spec
        spec.diskSource = nil
        try await inner.create(spec)
    }
    func exportDisk(_ id: VMID, listenAddress: String, credentials: MigrationCredentials?) async throws -> String {
        exported.withLock { $0.append(credentials) }
        return "nbd://\(listenAddress):10809"
    }
    func start(_ id: VMID) async throws { try await inner.start(id) }
    func stop(_ id: VMID) async throws { try await inner.stop(id) }
    func delete(_ id: VMID) async throws { try await inner.delete(id) }
    func status() async throws -> [InstanceStatus] { try await inner.status() }
}

/// The controller's side of securing live migrations: who gets which credentials, and what
/// happens to a move whose credentials a restart has lost. QEMU's use of them is in
/// QEMUMigrationTLSTests.
@Suite("Migration credentials")
struct MigrationCredentialsTests {
    static func settings(_ authority: MigrationAuthority) -> ControllerSettings {
        var settings = ControllerSettings.steady
        settings.migrationAuthority = authority
        return settings
    }

    /// A controller with `authority` (store in `directory`), its loops, and agents h1 and h2 with
    /// the given drivers and links, running VM `vm` on one of them: which is the source of a move.
    static func twoHosts(
        _ authority: MigrationAuthority, in directory: String, vm: String,
        driver: (String) -> any HypervisorDriver, link: (Controller) -> any ControllerLink
    ) async throws -> (controller: Controller, source: String, destination: String, stop: () -> Void) {
        let controller = try await Controller.open(
            store: try SQLiteStore(path: directory + "/vireo.db"), settings: Self.settings(authority))
        let loops = controllerLoops(controller)
        let agents = ["h1", "h2"].map { name in
            let agent = Agent(
                settings: .init(name: name, heartbeatInterval: .milliseconds(50)), driver: driver(name),
                link: link(controller))
            return Task { try await agent.run() }
        }
        let stop = {
            loops.cancel()
            for agent in agents { agent.cancel() }
        }
        do {
            try await eventually("both agents registered") {
                await controller.listHosts().items.filter { $0.state == .ready }.count == 2
            }
            _ = try await controller.createVM(VMSpec(name: vm, image: "tiny", cpus: 1, memoryMiB: 256))
            try await eventually("\(vm) runs") { try await controller.vm(vm).state == .running }
            let source = try #require(try await controller.vm(vm).host)
            return (controller, source, source == "h1" ? "h2" : "h1", stop)
        } catch {
            stop()
            throw error
        }
    }

    @Test("each end of a live move gets its own credentials naming the other; they stay out of the store")
    func ordersCarryCredentials() async throws {
        let authority = MigrationAuthority()
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let links = Mutex<[OrderRecordingLink]>([])
        let (controller, source, destination, stop) = try await Self.twoHosts(
            authority, in: directory, vm: "m",
            driver: { _ in SimulatedDriver(configuration: .init(bootDelay: .milliseconds(100))) },
            link: { controller in
                let link = OrderRecordingLink(controller)
                links.withLock { $0.append(link) }
                return link
            })
        defer { stop() }
        let migration = try await controller.migrateVM("m", to: destination)
        try await eventually("moved") { try await controller.migration(migration.id.rawValue).state == .completed }

        // The links in the order of the hosts, h1 then h2.
        func orders(_ host: String) -> [MigrationOrder] {
            links.withLock { $0 }[host == "h1" ? 0 : 1].orders.withLock { $0 }.filter { $0.id == migration.id }
        }
        let prepare = try #require(orders(destination).first { $0.state == .pending })
        let send = try #require(orders(source).first { $0.state == .ready })
        let (incoming, outgoing) = (try #require(prepare.credentials), try #require(send.credentials))
        #expect(incoming.peer == MigrationAuthority.peerName(migration: migration.id, role: .source))
        #expect(outgoing.peer == MigrationAuthority.peerName(migration: migration.id, role: .destination))
        // Both ends trust one authority, made for this move alone.
        #expect(incoming.caCertificate == outgoing.caCertificate)
        #expect(try Certificate(pemEncoded: incoming.caCertificate).subject.description.contains(migration.id.rawValue))
        #expect(incoming.privateKey != outgoing.privateKey)
        #expect(try Certificate(pemEncoded: incoming.certificate).subject.description.contains("-destination"))
        // Every order for this migration carries the same credentials while it runs, and none once it ended.
        #expect(orders(destination).filter(\.state.isActive).allSatisfy { $0.credentials == incoming })
        #expect(orders(source).filter { $0.state == .ready }.allSatisfy { $0.credentials == outgoing })
        #expect(orders(destination).filter { !$0.state.isActive }.allSatisfy { $0.credentials == nil })

        stop()
        let stored = try Data(contentsOf: URL(fileURLWithPath: directory + "/vireo.db"))
        let wal = (try? Data(contentsOf: URL(fileURLWithPath: directory + "/vireo.db-wal"))) ?? Data()
        for bytes in [stored, wal] {
            #expect(bytes.range(of: Data("PRIVATE KEY".utf8)) == nil, "a key in the store")
            #expect(bytes.range(of: Data("BEGIN CERTIFICATE".utf8)) == nil, "a certificate in the store")
        }
    }

    @Test("after a controller restart a live move that had not begun fails saying why; it never goes plain")
    func restartLosesCredentials() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let authority = MigrationAuthority()
        let cluster = try await LocalCluster.start(
            hosts: ["h1", "h2"], store: try SQLiteStore(path: directory + "/vireo.db"), settings: Self.settings(authority))
        _ = try await cluster.controller.createVM(VMSpec(name: "m", image: "tiny", cpus: 1, memoryMiB: 256))
        let vm = try await cluster.waitFor("m", .running)
        let source = try #require(vm.host)
        let destination = source == "h1" ? "h2" : "h1"
        // The destination does not hear of it before the restart.
        cluster.link(destination).cut.withLock { $0 = true }
        let migration = try await cluster.controller.migrateVM("m", to: destination)
        #expect(try await cluster.controller.migration(migration.id.rawValue).state == .pending)
        cluster.stop()

        let reopened = try await Controller.open(
            store: try SQLiteStore(path: directory + "/vireo.db"),
            settings: Self.settings(MigrationAuthority()))
        try await reopened.expireMigrations()
        let failed = try await reopened.migration(migration.id.rawValue)
        #expect(failed.state == .failed)
        #expect(failed.message?.contains("no longer holds its TLS credentials") == true, "\(failed.message ?? "")")
        #expect(try await reopened.vm("m").host == source)
        #expect(try await cluster.driver(destination).status().isEmpty, "the destination prepared nothing")
    }

    @Test(
        "a cold move that copies the disk gets credentials too: the source, which serves, with a certificate naming its address")
    func coldMoveCredentials() async throws {
        let authority = MigrationAuthority()
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let drivers = ["h1", "h2"].map { _ in
            ColdRecordingDriver(SimulatedDriver(configuration: .init(bootDelay: .milliseconds(100))))
        }
        let (controller, source, destination, stop) = try await Self.twoHosts(
            authority, in: directory, vm: "c", driver: { drivers[$0 == "h1" ? 0 : 1] }, link: { $0 })
        defer { stop() }
        let migration = try await controller.migrateVMCold("c", to: destination)
        try await eventually("moved cold") { try await controller.migration(migration.id.rawValue).state == .completed }

        func driver(_ name: String) -> ColdRecordingDriver { drivers[name == "h1" ? 0 : 1] }
        let exported = driver(source).exported.withLock { $0 }
        let copied = driver(destination).copied.withLock { $0 }
        #expect(exported.count == 1 && copied.count == 1)
        let served = try #require(exported.first ?? nil, "the source offered its disk without credentials")
        let reader = try #require(copied.first ?? nil, "the destination copied without credentials")
        #expect(served.peer == MigrationAuthority.peerName(migration: migration.id, role: .destination))
        #expect(reader.peer == MigrationAuthority.peerName(migration: migration.id, role: .source))
        // The source's certificate names the address it serves on (loopback here), so that the
        // destination's check of the host it connects to passes; the destination's names none.
        let servedNames = try Certificate(pemEncoded: served.certificate).extensions.subjectAlternativeNames
        let readerNames = try Certificate(pemEncoded: reader.certificate).extensions.subjectAlternativeNames
        #expect(
            "\(servedNames.map { "\($0)" } ?? "none")".contains("IPAddress([127, 0, 0, 1])"), "\(String(describing: servedNames))"
        )
        #expect(readerNames == nil)
    }
}

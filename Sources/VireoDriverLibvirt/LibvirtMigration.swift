import CLibvirt
import Foundation
import Synchronization
import VireoDriver
import VireoModel
import VireoProcess

/// Live migration between libvirt hosts, peer to peer: the source's libvirtd connects to the
/// destination's and the two run the whole handshake (`virDomainMigrateToURI3` with
/// `VIR_MIGRATE_PEER2PEER`); the agents only exchange what the source needs to know.
///
/// The destination prepares nothing in libvirt: it checks that it sees the VM's disk on shared
/// storage — or, for a copy, makes an empty disk of its own that libvirt fills — and says how its
/// libvirtd is reached and what the VM is called there (its own state directory, console log,
/// disk, image and forwarded port, in the Vireo metadata the domain carries). The source sends the
/// domain with that definition; the destination adopts it once it runs there.
extension LibvirtDriver {
    /// `guestAddress` is not needed: under QEMU user networking every guest is 10.0.2.15 behind
    /// its own forwarded port, and the VM gets this host's port. With `.copy` the VM's disk is this
    /// host's own `<state>/<id>/disk.qcow2`, made empty here at the guest's disk size; the source's
    /// libvirtd copies into it (`VIR_MIGRATE_NON_SHARED_DISK`).
    ///
    /// With `credentials` the move goes over QEMU's TLS: they go into this host's
    /// `migration-tls-dir` (libvirtd's `migrate_tls_x509_cert_dir`) as the server's files, for the
    /// QEMU libvirtd starts to receive the guest; the source verifies that certificate (it names
    /// this host's address) and this end, libvirt's `migrate_tls_x509_verify` being on by default,
    /// admits only a client certificate from the same authority — one made for this move alone
    /// (`MigrationAuthority`), so only this move's source, though libvirt sets no `tls-authz` on
    /// its migrations. One such move arrives at a time (`tlsFilesInUse`); another is refused as
    /// `unavailable` until it ends.
    public func prepareIncoming(
        _ spec: InstanceSpec, guestAddress: String?, listenAddress: String, storage: MigrationStorage,
        credentials: MigrationCredentials?
    ) async throws -> String {
        // The order is repeated on every heartbeat until the source starts sending; a repetition
        // that comes while the first is still being prepared waits for it.
        if let offer = incoming[spec.id] { return try offer.encoded() }
        if let pending = preparing[spec.id] { return try await pending.value }
        let preparation = Task {
            try await prepare(spec, listenAddress: listenAddress, storage: storage, credentials: credentials)
        }
        preparing[spec.id] = preparation
        defer { preparing[spec.id] = nil }
        do {
            return try await preparation.value
        } catch {
            if incoming[spec.id] == nil { releaseTLSFiles(.server, of: spec.id) }
            throw error
        }
    }

    private func prepare(
        _ spec: InstanceSpec, listenAddress: String, storage: MigrationStorage, credentials: MigrationCredentials?
    ) async throws -> String {
        if let existing = instances[spec.id] {
            throw VireoError(.conflict, "VM \(existing.record.spec.name) is already on this host")
        }
        if let credentials { try installMigrationCredentials(credentials, endpoint: .server, of: spec) }
        if let network = spec.privateNetwork {
            throw VireoError(.unsupported, "privateNetwork '\(network)': driver 'libvirt' has no private networks")
        }
        let directory = directory(of: spec.id)
        let disk = try DiskRoom.incomingDisk(
            for: spec, storage: storage, sharedDisks: configuration.sharedDisks, vmDirectory: directory,
            stateDirectory: configuration.stateDirectory)
        let connection = try open()
        let domainName = "vireo-\(spec.name)"
        if let other = connection.uuid(ofDomainNamed: domainName) {
            throw VireoError(
                .conflict, "libvirt at \(configuration.uri) already has a domain named \(domainName) (uuid \(other))")
        }
        let image = try await images(spec.image)
        var record = LibvirtRecord(
            spec: spec, image: image, owner: configuration.stateDirectory, disk: disk,
            serialLog: directory + "/serial.log")
        if configuration.userNetwork, try connection.hostFacts().hypervisor != "Test" {
            let taken = instances.values.compactMap(\.record.hostPort) + incoming.values.compactMap(\.record.hostPort)
            record.hostPort = try LoopbackPort.free(excluding: Set(taken))
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if storage == .copy {
            do {
                try await makeEmptyDisk(disk, diskMiB: spec.diskMiB ?? ImageCatalogue.virtualDiskMiB)
            } catch {
                try? FileManager.default.removeItem(atPath: directory)
                throw error
            }
        }
        // QEMU on the destination listens on the agent's address; its libvirtd picks the port (and,
        // for a copy, its NBD server's on the same address).
        let offer = LibvirtIncoming(
            peerURI: configuration.peerURI ?? Configuration.defaultPeerURI(uri: configuration.uri, address: listenAddress),
            migrationURI: "tcp://\(listenAddress)", record: record, storage: storage, tls: credentials != nil)
        incoming[spec.id] = offer
        logger.info(
            "waiting for incoming migration",
            metadata: [
                "vm": "\(spec.name)", "peer": "\(offer.peerURI)", "storage": "\(storage.rawValue)",
                "tls":
                    "\(credentials.map { "on, admitting only this move's source (\($0.peer)), by its authority" } ?? "off")",
            ])
        return try offer.encoded()
    }

    /// With `credentials` (the destination then prepared with its own) the source's QEMU sends
    /// over TLS: they go into `migration-tls-dir` as the client's files and libvirt is asked for
    /// `VIR_MIGRATE_TLS`; QEMU checks that the destination's certificate names the address in the
    /// migration URI.
    public func migrate(
        _ id: VMID, to uri: String, credentials: MigrationCredentials?,
        progress: @escaping @Sendable (MigrationProgress) -> Void
    ) async throws -> MigrationStats {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let offer = try LibvirtIncoming(decoding: uri)
        guard offer.tls == (credentials != nil) else {
            throw VireoError(
                .failedPrecondition,
                offer.tls
                    ? "the destination waits for this move over TLS and this host was given no credentials for it"
                    : "this host was given TLS credentials for the move, but the destination prepared it without TLS")
        }
        let connection = try open()
        let uuid = instance.uuid
        guard try Self.isActive(uuid, on: connection) else {
            throw VireoError(.failedPrecondition, "VM \(instance.record.spec.name) is not running")
        }
        if instance.record.hostPort != nil && offer.record.hostPort == nil {
            throw VireoError(
                .failedPrecondition, "the destination gives its guests no network (network=none); this VM has one")
        }
        if let credentials { try installMigrationCredentials(credentials, endpoint: .client, of: instance.record.spec) }
        defer { releaseTLSFiles(.client, of: id) }
        let copy = offer.storage == .copy
        let destinationXML = try offer.record.destinationXML(
            from: connection.migratableXML(of: uuid), source: instance.record, copyingDisk: copy)
        let test = try connection.hostFacts().hypervisor == "Test"
        let mode = configuration.migrationMode.resolved(for: test ? .qemu : configuration.domainType)
        let flags = Self.migrationFlags(mode: mode, storage: offer.storage, tls: offer.tls)
        let parameters = offer.copyParameters
        let outcome = MigrationOutcome()
        // virDomainMigrateToURI3 blocks until the end: on a thread of its own, not the driver's.
        let thread = Thread {
            outcome.set(
                Result {
                    try connection.migrate(
                        uuid, peerURI: offer.peerURI, migrationURI: offer.migrationURI,
                        destinationXML: destinationXML, parameters: parameters, flags: flags)
                }.mapError { ($0 as? VireoError) ?? VireoError(.internal, "\($0)") })
        }
        thread.name = "libvirt-migrate"
        thread.start()
        let deadline = ContinuousClock.now + configuration.migrationTimeout
        var cancelled: String?
        while outcome.result == nil {
            if let stats = try? connection.jobStats(of: uuid, completed: false),
                let current = LibvirtJobStatistics.progress(from: stats)
            {
                progress(current)
            }
            if ContinuousClock.now > deadline || Task.isCancelled {
                // libvirt ends the job at once; the VM keeps running here.
                cancelled = Task.isCancelled ? "cancelled" : "did not finish within \(configuration.migrationTimeout); cancelled"
                try? connection.abortJob(of: uuid)
                break
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        if case .failure(let error) = await outcome.finished() {
            try? connection.resumeIfPaused(uuid)
            throw VireoError(
                .unavailable,
                "migration of \(instance.record.spec.name) to \(offer.peerURI) failed: \(cancelled ?? error.message); "
                    + "the VM keeps running here")
        }
        if copy { instances[id]?.outgoingDiskCopy = true }
        let completed = try connection.jobStats(of: uuid, completed: true)
        logger.info(
            "migration completed",
            metadata: [
                "vm": "\(instance.record.spec.name)", "mode": "\(mode)",
                "libvirt-time-ms": "\(completed[VIR_DOMAIN_JOB_TIME_ELAPSED].map(String.init) ?? "none")",
                "libvirt-downtime-ms": "\(completed[VIR_DOMAIN_JOB_DOWNTIME].map(String.init) ?? "none")",
                "libvirt-disk-bytes": "\(completed[VIR_DOMAIN_JOB_DISK_PROCESSED].map(String.init) ?? "none")",
            ])
        let stats = LibvirtJobStatistics.stats(from: completed, mode: mode)
        // libvirt reports the disk's bytes but not when its copy ended, and its reports come too
        // seldom to time it from outside: `storageTimeMs` stays unknown (nil) rather than guessed.
        return stats
    }

    /// This end's files in `migration-tls-dir`, or a refusal that says what to set up: a move the
    /// controller secures never goes in the clear. Refused while another move's files of that end
    /// are in use: a QEMU that read them would not be admitted by its own move's other end.
    private func installMigrationCredentials(
        _ credentials: MigrationCredentials, endpoint: QEMUTLSFiles.Endpoint, of spec: InstanceSpec
    ) throws {
        if let other = tlsFilesInUse[endpoint], other != spec.id {
            let name = (instances[other]?.record ?? incoming[other]?.record).map { " (\($0.spec.name))" } ?? ""
            throw VireoError(
                .unavailable,
                "another move over TLS \(endpoint == .server ? "into" : "out of") this libvirt host is under way\(name): "
                    + "libvirt's QEMU reads one set of certificates from migration-tls-dir and each move has its own; "
                    + "move \(spec.name) once it has ended")
        }
        guard let directory = configuration.migrationTLSDirectory else {
            throw VireoError(
                .failedPrecondition,
                "the controller secures migrations with TLS and this libvirt host has no migration-tls-dir: set "
                    + "migrate_tls_x509_cert_dir in libvirtd's qemu.conf to a directory for Vireo alone and give the "
                    + "agent --driver-opt migration-tls-dir=DIR (docs/libvirt-driver.md), or run the controller "
                    + "with --migration-tls off")
        }
        try QEMUTLSFiles.install(credentials, endpoint: endpoint, in: directory)
        tlsFilesInUse[endpoint] = spec.id
    }

    /// Frees `migration-tls-dir` for the next move at `endpoint`, if `id`'s holds it.
    private func releaseTLSFiles(_ endpoint: QEMUTLSFiles.Endpoint, of id: VMID) {
        if tlsFilesInUse[endpoint] == id { tlsFilesInUse[endpoint] = nil }
    }

    public func release(_ id: VMID) async throws {
        guard let instance = instances[id] else { return }
        let connection = try open()
        let name = instance.record.spec.name
        do {
            try connection.withDomain(instance.uuid) { domain throws in
                // After a completed migration it is shut off ("migrated"); the destination runs the VM.
                if virDomainIsActive(domain) == 1, virDomainDestroy(domain) != 0 {
                    throw LibvirtConnection.lastError("destroying the migrated VM \(name)")
                }
                guard virDomainUndefine(domain) == 0 else {
                    throw LibvirtConnection.lastError("undefining the migrated VM \(name)")
                }
            }
        } catch let error as VireoError where error.code == .notFound {
            // libvirt undefined it already.
        }
        instances[id] = nil
        // A disk the destination copied is its own now: this one goes (it may be on shared storage).
        // A shared disk belongs to the destination now. The console history goes with the directory.
        if instance.outgoingDiskCopy { try? FileManager.default.removeItem(atPath: instance.record.disk) }
        try? FileManager.default.removeItem(atPath: directory(of: id))
    }

    public func finishIncoming(_ id: VMID) async throws {
        if incoming[id] == nil, instances[id] != nil { return }
        adoptArrivals(on: try open())
        guard instances[id] != nil else {
            throw VireoError(.notFound, "VM \(id) has not arrived on this host (its domain does not run here)")
        }
        incoming[id] = nil
        releaseTLSFiles(.server, of: id)
    }

    public func abortIncoming(_ id: VMID) async throws {
        guard let offer = incoming[id] else {
            if instances[id] != nil {
                throw VireoError(.conflict, "VM \(id) is no incoming migration here; not discarding it")
            }
            return
        }
        let connection = try open()
        if let uuid = connection.uuid(ofDomainNamed: offer.record.domainName) {
            do {
                try connection.withDomain(uuid) { domain throws in
                    guard
                        LibvirtConnection.metadata(of: domain, namespace: LibvirtRecord.namespace)
                            .flatMap(LibvirtRecord.parse(metadata:))?.owner == configuration.stateDirectory
                    else { return }
                    if virDomainIsActive(domain) == 1, virDomainDestroy(domain) != 0 {
                        throw LibvirtConnection.lastError("destroying the half-arrived VM \(offer.record.spec.name)")
                    }
                    if virDomainIsPersistent(domain) == 1, virDomainUndefine(domain) != 0 {
                        throw LibvirtConnection.lastError("undefining the half-arrived VM \(offer.record.spec.name)")
                    }
                }
            } catch let error as VireoError where error.code == .notFound {
                // Gone meanwhile: a transient incoming domain goes with its failed migration.
            }
        }
        incoming[id] = nil
        instances[id] = nil
        releaseTLSFiles(.server, of: id)
        // A shared disk stays: the source still runs the VM on it. A half-made copy goes.
        if offer.storage == .copy { try? FileManager.default.removeItem(atPath: offer.record.disk) }
        try? FileManager.default.removeItem(atPath: directory(of: id))
    }

    /// Takes over the expected VMs whose domains now run here. Only once they run: during the
    /// transfer the incoming domain exists paused, and the source may still fail.
    func adoptArrivals(on connection: LibvirtConnection) {
        for (id, offer) in incoming where instances[id] == nil {
            guard let uuid = connection.uuid(ofDomainNamed: offer.record.domainName),
                let arrived = try? connection.withDomain(
                    uuid,
                    { domain throws in
                        try LibvirtConnection.state(of: domain).state == VIR_DOMAIN_RUNNING
                            && LibvirtConnection.metadata(of: domain, namespace: LibvirtRecord.namespace)
                                .flatMap(LibvirtRecord.parse(metadata:)) == offer.record
                    }), arrived
            else { continue }
            // The guest booted at the source: no ready marker will come, and the console log here
            // starts with this host's part of it.
            instances[id] = Instance(
                record: offer.record, uuid: uuid, runOffset: Self.size(of: offer.record.serialLog), ready: true)
            logger.info("incoming VM arrived", metadata: ["vm": "\(offer.record.spec.name)", "uuid": "\(uuid)"])
        }
    }

    /// The expected VMs that have not arrived yet: starting, as the agent expects of a VM that is
    /// being prepared.
    func incomingStatuses() -> [InstanceStatus] {
        incoming.filter { instances[$0.key] == nil }.sorted { $0.key < $1.key }.map { id, offer in
            InstanceStatus(
                id: id, name: offer.record.spec.name, state: .starting, message: "waiting for incoming migration",
                address: offer.record.hostPort.map { "127.0.0.1:\($0)" })
        }
    }
}

/// What the destination tells the source, as the opaque `uri` the controller passes between them.
struct LibvirtIncoming: Codable, Equatable, Sendable {
    /// The URI the source's libvirtd connects to, to reach the destination's.
    var peerURI: String
    /// Where QEMU sends the guest's state: `tcp://ADDRESS`, the destination's libvirtd picking the port.
    var migrationURI: String
    /// The VM's record on the destination: its state directory, console log, disk, image and
    /// forwarded port.
    var record: LibvirtRecord
    /// `.copy`: the record's disk is the destination's own, empty, for the source to copy into.
    var storage: MigrationStorage
    /// Whether the destination holds TLS credentials for the move: the source then sends over
    /// QEMU's TLS, and must have its own.
    var tls: Bool

    static let prefix = "libvirt-p2p:"

    func encoded() throws -> String {
        // Sorted keys: a repeated order gets the very same string.
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return Self.prefix + String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    init(
        peerURI: String, migrationURI: String, record: LibvirtRecord, storage: MigrationStorage = .shared, tls: Bool = false
    ) {
        self.peerURI = peerURI
        self.migrationURI = migrationURI
        self.record = record
        self.storage = storage
        self.tls = tls
    }

    init(decoding uri: String) throws {
        guard uri.hasPrefix(Self.prefix),
            let decoded = try? JSONDecoder().decode(Self.self, from: Data(uri.dropFirst(Self.prefix.count).utf8))
        else {
            throw VireoError.invalid(
                field: "uri", value: "'\(uri.prefix(80))'", "expected what a libvirt destination's prepareIncoming returns")
        }
        self = decoded
    }
}

extension LibvirtDriver.Configuration {
    /// How peers reach libvirtd at `uri`: the URI itself when it names a host or a socket, else
    /// (`qemu:///system`) over TCP on the agent's address.
    static func defaultPeerURI(uri: String, address: String) -> String {
        guard let range = uri.range(of: ":///"), !uri.contains("socket=") else { return uri }
        let scheme = uri[..<range.lowerBound].split(separator: "+").first.map(String.init) ?? "qemu"
        return "\(scheme)+tcp://\(address)/\(uri[range.upperBound...])"
    }
}

extension LibvirtRecord {
    /// The source domain's migratable definition `xml` as the destination is to define it: with
    /// this record in Vireo's metadata, and the source record's host-specific paths (console log,
    /// kernel, initrd, disk) and forwarded port replaced by this record's.
    /// `copyingDisk`: the disk is this record's own, a copy that stands alone, without the
    /// source's backing chain.
    func destinationXML(from xml: String, source: LibvirtRecord, copyingDisk: Bool = false) throws -> String {
        guard let open = xml.range(of: "<\(Self.prefix):vm"),
            let close = xml.range(of: "</\(Self.prefix):vm>", range: open.upperBound..<xml.endIndex)
        else { throw VireoError(.internal, "the domain's definition carries no Vireo metadata") }
        var replacements = [
            (source.serialLog, serialLog), (source.image.kernel, image.kernel), (source.image.initrd, image.initrd),
            (source.disk, disk),
        ].filter { $0.0 != $0.1 }.map { ($0.0.xmlEscaped, $0.1.xmlEscaped) }
        if let from = source.hostPort, let to = hostPort {
            replacements.append(("hostfwd=tcp:127.0.0.1:\(from)-", "hostfwd=tcp:127.0.0.1:\(to)-"))
        }
        func retarget(_ part: Substring) -> String {
            replacements.reduce(String(part)) { $0.replacingOccurrences(of: $1.0, with: $1.1) }
        }
        let moved = retarget(xml[..<open.lowerBound]) + metadataElement + retarget(xml[close.upperBound...])
        return copyingDisk ? try Self.withoutBackingChain(moved, disk: disk) : moved
    }
}

/// Where the migrating thread leaves its result for the driver to find, and wake it.
private final class MigrationOutcome: Sendable {
    private struct State {
        var result: Result<Void, VireoError>?
        var waiter: CheckedContinuation<Result<Void, VireoError>, Never>?
    }
    private let state = Mutex(State())

    var result: Result<Void, VireoError>? { state.withLock { $0.result } }

    func set(_ result: Result<Void, VireoError>) {
        let waiter = state.withLock { state in
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: result)
    }

    /// The result, once the thread has left it (also in a cancelled task: the migration must end
    /// before the driver can say where the VM runs).
    func finished() async -> Result<Void, VireoError> {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                if state.result == nil { state.waiter = continuation }
                return state.result
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

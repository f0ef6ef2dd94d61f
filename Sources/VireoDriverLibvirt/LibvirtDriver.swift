import CLibvirt
import Foundation
import Logging
import VireoDriver
import VireoModel
import VireoProcess

/// Runs each VM as a persistent libvirt domain, through libvirt's C API.
///
/// libvirt owns the hypervisor processes: they outlive the agent, and a restarted agent finds its
/// VMs again by the `<metadata>` element Vireo writes into each domain (`recover`). Per VM,
/// `<state>/<id>/` holds `disk.qcow2` (an overlay on the image's base disk), `serial.log` (the
/// console, which libvirt appends to), `run-offset` (where the current run's console output
/// starts, for the ready marker) and, for a run started from a snapshot, `run-snapshot` (its tag:
/// that run prints no ready marker).
///
/// State changes reach the agent from libvirt's domain lifecycle events; a guest becoming ready
/// shows as its marker in the console log, which the driver watches from start until it appears.
///
/// The C calls are in `LibvirtConnection.swift`, the domain XML and the metadata record in
/// `LibvirtDomainXML.swift`, the settings in `LibvirtDriverConfiguration.swift`, pause and
/// snapshots in `LibvirtSnapshots.swift`.
public actor LibvirtDriver: HypervisorDriver {
    public nonisolated let name = "libvirt"
    /// Only what this driver does: the lifecycle, the serial console, pause, snapshots, cold
    /// moves, and live migration — of memory and devices where the VMs' disks are on storage every
    /// host sees (`shared-disks`), with a copy of the disk otherwise.
    public nonisolated let capabilities: Set<Capability>
    public nonisolated let configuration: Configuration
    let images: @Sendable (String) async throws -> GuestImage
    let logger: Logger
    private var connection: LibvirtConnection?
    var instances: [VMID: Instance] = [:]
    /// VMs this host expects by live migration (prepared, not yet taken over), with what was
    /// offered to their source.
    var incoming: [VMID: LibvirtIncoming] = [:]
    /// Creates under way, so that a second create of the same VM waits for the first.
    private var creating: [VMID: Task<Void, any Error>] = [:]
    /// Incoming migrations being prepared, so that a repeated order waits for the first.
    var preparing: [VMID: Task<String, any Error>] = [:]
    /// The move whose TLS files are in `migration-tls-dir`, by end: libvirt's QEMU reads the one
    /// set there, and each move has an authority of its own, so one secured move at a time
    /// arrives (until it is taken over or dropped) and one leaves (until libvirt's call returns).
    var tlsFilesInUse: [QEMUTLSFiles.Endpoint: VMID] = [:]
    private var stateChanged: @Sendable () -> Void = {}

    struct Instance {
        var record: LibvirtRecord
        var uuid: String
        /// Where this run's output starts in the console log.
        var runOffset: UInt64 = 0
        var ready = false
        /// The run started from a snapshot (`start(_:fromSnapshot:)`): its guest was ready when the
        /// snapshot was saved and prints no marker again, so it is ready once libvirt says it runs.
        var restored = false
        var stopping = false
        /// When this process started the current run; nil for a run it re-adopted.
        var startedAt: ContinuousClock.Instant?
        /// From `virDomainCreate` to the ready marker, in milliseconds, for a run this process started.
        var bootMs: Int?
        /// The last migration copied the disk to the destination (`release` then removes this one).
        var outgoingDiskCopy = false
    }

    public init(
        configuration: Configuration, logger: Logger = Logger(label: "vireo.libvirt"),
        images: @escaping @Sendable (String) async throws -> GuestImage
    ) {
        self.configuration = configuration
        // Live migration with shared disks (`shared-disks`) or, without, copying the disk.
        self.capabilities = [.serialConsole, .pause, .snapshots, .coldMigration, .liveMigration, .storageMigration]
        self.logger = logger
        self.images = images
    }

    /// Runs on its own thread: libvirt's calls block (see `LibvirtThread`).
    public nonisolated var unownedExecutor: UnownedSerialExecutor { LibvirtThread.shared.asUnownedSerialExecutor() }

    /// The connection, opened on first use and then kept (libvirt connections are long-lived, and
    /// the lifecycle events arrive on it). One that died (libvirtd restarted) is opened again, and
    /// the agent told to look: events may have been missed meanwhile.
    func open() throws -> LibvirtConnection {
        if let connection {
            if virConnectIsAlive(connection.pointer) == 1 { return connection }
            logger.warning("libvirt connection lost; reconnecting", metadata: ["uri": "\(configuration.uri)"])
            self.connection = nil
            Task { self.notify() }
        }
        let opened = try LibvirtConnection(uri: configuration.uri)
        try opened.onLifecycleEvent { [weak self] in
            guard let self else { return }
            Task { await self.notify() }
        }
        connection = opened
        return opened
    }

    private func notify() { stateChanged() }

    public func onStateChange(_ handler: @escaping @Sendable () -> Void) async {
        stateChanged = handler
        // Register for events now, so a change is not missed before the first call that connects.
        _ = try? open()
    }

    // MARK: Facts

    public func fingerprint() async throws -> HostFingerprint {
        let facts = try open().hostFacts()
        return HostFingerprint(
            cpus: facts.cpus, memoryMiB: facts.memoryMiB, driver: name, capabilities: Array(capabilities),
            attributes: [
                "hypervisor": "\(facts.hypervisor) \(facts.hypervisorVersion)", "libvirt": facts.libvirtVersion,
                "uri": configuration.uri, Self.stateDirectoryAttribute: configuration.stateDirectory,
                // libvirt moves VMs live only between hosts running the same hypervisor under it.
                HostFingerprint.migrationFamilyAttribute: "libvirt/\(facts.hypervisor)",
            ].merging(configuration.sharedDisks.map { [HostFingerprint.sharedStorageAttribute: $0] } ?? [:]) { a, _ in a })
    }

    public func status() async throws -> [InstanceStatus] {
        let connection = try open()
        takeInImported(on: connection)
        adoptArrivals(on: connection)
        var result = incomingStatuses()
        for id in instances.keys.sorted() {
            guard var instance = instances[id] else { continue }
            let (state, message) = observe(&instance, on: connection)
            instances[id] = instance
            result.append(
                InstanceStatus(
                    id: id, name: instance.record.spec.name, state: state, message: message,
                    address: instance.record.hostPort.map { "127.0.0.1:\($0)" }, bootMs: instance.bootMs))
        }
        return result
    }

    /// The VM's state from libvirt's, and from its console for readiness.
    func observe(_ instance: inout Instance, on connection: LibvirtConnection) -> (InstanceState, String?) {
        let observed: LibvirtConnection.DomainState
        do {
            observed = try connection.withDomain(instance.uuid) { domain throws in
                try LibvirtConnection.state(of: domain)
            }
        } catch {
            return (.failed, (error as? VireoError)?.message ?? "\(error)")
        }
        switch observed.state {
        case VIR_DOMAIN_RUNNING, VIR_DOMAIN_BLOCKED:
            if instance.stopping { return (.stopping, nil) }
            if !instance.ready {
                instance.ready =
                    !configuration.guestsBoot || instance.restored || instance.record.isImported
                    || markerPrinted(instance)
                if instance.ready, !instance.record.isImported, let startedAt = instance.startedAt {
                    let elapsed = ContinuousClock.now - startedAt
                    instance.bootMs = Int(
                        elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)
                }
            }
            return (instance.ready ? .running : .starting, nil)
        case VIR_DOMAIN_PAUSED:
            // Paused on request (`pause`), or by libvirt itself (an I/O error, a save under way).
            let why =
                UInt32(observed.reason) == VIR_DOMAIN_PAUSED_USER.rawValue
                ? "paused" : "paused by libvirt (reason \(observed.reason))"
            return (instance.ready || !configuration.guestsBoot ? .running : .starting, why)
        case VIR_DOMAIN_SHUTDOWN: return (.stopping, nil)
        case VIR_DOMAIN_CRASHED: return (.failed, "the guest crashed")
        case VIR_DOMAIN_SHUTOFF:
            switch UInt32(observed.reason) {
            case VIR_DOMAIN_SHUTOFF_CRASHED.rawValue:
                return (.failed, "the guest crashed; last console line: \(lastLine(instance) ?? "none")")
            case VIR_DOMAIN_SHUTOFF_FAILED.rawValue: return (.failed, "libvirt could not start the domain")
            default: return (.stopped, nil)
            }
        default: return (.stopped, nil)
        }
    }

    public func usage(_ id: VMID) async -> ResourceUsage? {
        guard let instance = instances[id], let connection = try? open() else { return nil }
        return try? connection.withDomain(instance.uuid) { domain throws -> ResourceUsage? in
            var info = virDomainInfo()
            guard virDomainGetInfo(domain, &info) == 0, info.state == UInt8(VIR_DOMAIN_RUNNING.rawValue) else {
                return nil
            }
            // cpuTime is in nanoseconds. Memory: the hypervisor process's resident set where libvirt
            // reports it (qemu), else what the domain has been given (the test hypervisor); KiB both.
            var stats = [virDomainMemoryStatStruct](
                repeating: virDomainMemoryStatStruct(), count: Int(VIR_DOMAIN_MEMORY_STAT_NR.rawValue))
            let count = virDomainMemoryStats(domain, &stats, UInt32(stats.count), 0)
            let rss = stats.prefix(max(0, Int(count))).first { $0.tag == Int32(VIR_DOMAIN_MEMORY_STAT_RSS.rawValue) }
            if count < 0 { virResetLastError() }
            return ResourceUsage(
                cpuSeconds: Double(info.cpuTime) / 1e9, memoryBytes: UInt64(rss?.val ?? UInt64(info.memory)) * 1024)
        }
    }

    /// The CPU of libvirt's host, from libvirt (so also right for a remote URI); nil when libvirt
    /// cannot tell.
    public func hostUsage() async -> HostCPUUsage? {
        guard let connection = try? open(), let busy = try? connection.hostBusySeconds(),
            let cpus = try? connection.hostFacts().cpus
        else { return nil }
        return HostCPUUsage(busySeconds: busy, capacity: Double(cpus))
    }

    // MARK: Lifecycle

    public func create(_ spec: InstanceSpec) async throws {
        try await create(spec, diskCredentials: nil)
    }

    public func create(_ spec: InstanceSpec, diskCredentials: MigrationCredentials?) async throws {
        if spec.image == LibvirtDomainConversion.importedImage { return try createImported(spec) }
        // Where the disk came from is no part of the VM once it is here.
        let source = spec.diskSource
        var spec = spec
        spec.diskSource = nil
        if let existing = instances[spec.id] {
            guard existing.record.spec == spec else {
                throw VireoError(.conflict, "VM \(spec.id) already exists with a different spec")
            }
            return
        }
        if spec.privateNetwork != nil {
            throw VireoError(.unsupported, "driver 'libvirt' has no private networks yet")
        }
        if spec.display != nil { throw VireoError(.unsupported, "driver 'libvirt' has no display yet") }
        // Creates interleave at their awaits: a second create of the same VM waits for the first.
        if let pending = creating[spec.id] {
            try await pending.value
            return try await create(spec, diskCredentials: diskCredentials)
        }
        let definition = Task { try await define(spec, diskSource: source, diskCredentials: diskCredentials) }
        creating[spec.id] = definition
        defer { creating[spec.id] = nil }
        try await definition.value
    }

    /// Makes the VM's overlay and defines its domain; on failure leaves nothing behind.
    private func define(_ spec: InstanceSpec, diskSource: String?, diskCredentials: MigrationCredentials?) async throws {
        let connection = try open()
        let image = try await images(spec.image)
        let directory = directory(of: spec.id)
        var record = LibvirtRecord(
            spec: spec, image: image, owner: configuration.stateDirectory,
            disk: configuration.sharedDisks.map { "\($0)/\(spec.id).qcow2" } ?? directory + "/disk.qcow2",
            serialLog: directory + "/serial.log")
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            if let shared = configuration.sharedDisks {
                try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
            }
            if diskSource == InstanceSpec.sharedDisk {
                // A cold move between hosts sharing storage: the source stopped the VM and left the disk.
                guard configuration.sharedDisks != nil, FileManager.default.fileExists(atPath: record.disk) else {
                    throw VireoError(.failedPrecondition, "the VM's disk \(record.disk) is not in this host's shared storage")
                }
            } else if let diskSource {
                try await DiskTransfer.copy(from: diskSource, to: record.disk, credentials: diskCredentials)
            } else {
                try await HostTool.run(
                    "qemu-img",
                    ["create", "-q", "-f", "qcow2", "-b", image.baseDisk, "-F", "qcow2", record.disk]
                        + (spec.diskMiB.map { ["\($0)M"] } ?? []))
            }
            // libvirt would refuse the definition with a generic "operation failed"; say whose it is.
            if let other = connection.uuid(ofDomainNamed: record.domainName) {
                throw VireoError(
                    .conflict,
                    "libvirt at \(configuration.uri) already has a domain named \(record.domainName) (uuid \(other)) "
                        + "that is not VM \(spec.id) of this agent")
            }
            let test = try connection.hostFacts().hypervisor == "Test"
            if configuration.userNetwork && !test {
                record.hostPort = try LoopbackPort.free(excluding: Set(instances.values.compactMap(\.record.hostPort)))
            }
            let type = test ? "test" : configuration.domainType.rawValue
            let uuid = try connection.define(xml: record.domainXML(type: type))
            instances[spec.id] = Instance(record: record, uuid: uuid)
        } catch {
            if configuration.sharedDisks != nil { try? FileManager.default.removeItem(atPath: record.disk) }
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    public func start(_ id: VMID) async throws {
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let connection = try open()
        if try Self.isActive(instance.uuid, on: connection) { return }
        beginRun(&instance, restoredFrom: nil)
        instances[id] = instance
        let name = instance.record.spec.name
        try connection.withDomain(instance.uuid) { domain throws in
            guard virDomainCreate(domain) == 0 else { throw LibvirtConnection.lastError("starting VM \(name)") }
        }
        if configuration.guestsBoot { watchForReady(id) }
    }

    /// A new run of the VM begins here: its console output starts at the log's end, and it is not
    /// ready until its marker shows (or, restored from snapshot `tag`, until it runs). Both are
    /// written down, for an agent re-adopting the run.
    func beginRun(_ instance: inout Instance, restoredFrom tag: String?) {
        let id = instance.record.spec.id
        instance.runOffset = Self.size(of: instance.record.serialLog)
        instance.ready = false
        instance.restored = tag != nil
        instance.stopping = false
        instance.bootMs = nil
        instance.startedAt = .now
        try? String(instance.runOffset).write(toFile: runOffsetPath(id), atomically: true, encoding: .utf8)
        if let tag {
            try? tag.write(toFile: runSnapshotPath(id), atomically: true, encoding: .utf8)
        } else {
            try? FileManager.default.removeItem(atPath: runSnapshotPath(id))
        }
    }

    /// Notifies the agent when the guest prints its ready marker: the console is a file, so there
    /// is no libvirt event for it.
    private func watchForReady(_ id: VMID) {
        let deadline = ContinuousClock.now + configuration.readyTimeout
        Task { [weak self] in
            while ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(100))
                guard let self, let outcome = await self.readiness(of: id) else { return }
                if outcome {
                    await self.notify()
                    return
                }
            }
        }
    }

    /// True once the VM is ready, false while it still boots, nil when there is nothing to watch.
    private func readiness(of id: VMID) -> Bool? {
        guard var instance = instances[id], let connection else { return nil }
        let (state, _) = observe(&instance, on: connection)
        instances[id] = instance
        switch state {
        case .running: return true
        case .starting: return false
        default: return nil
        }
    }

    public func stop(_ id: VMID) async throws {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let connection = try open()
        let name = instance.record.spec.name
        guard try Self.isActive(instance.uuid, on: connection) else { return }
        instances[id]?.stopping = true
        defer { instances[id]?.stopping = false }
        try connection.withDomain(instance.uuid) { domain throws in
            // A guest without an ACPI handler ignores the request; the destroy below ends it then.
            if virDomainShutdown(domain) != 0 {
                logger.info(
                    "shutdown refused; destroying",
                    metadata: ["vm": "\(name)", "reason": "\(LibvirtConnection.lastError("shutdown").message)"])
            }
        }
        let deadline = ContinuousClock.now + configuration.stopTimeout
        while try Self.isActive(instance.uuid, on: connection), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        guard try Self.isActive(instance.uuid, on: connection) else { return }
        try connection.withDomain(instance.uuid) { domain throws in
            guard virDomainDestroy(domain) == 0 else { throw LibvirtConnection.lastError("destroying VM \(name)") }
        }
    }

    /// `virDomainDestroy`: the domain ends at once.
    public func powerOff(_ id: VMID) async throws {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let connection = try open()
        guard try Self.isActive(instance.uuid, on: connection) else { return }
        try connection.withDomain(instance.uuid) { domain throws in
            guard virDomainDestroy(domain) == 0 else {
                throw LibvirtConnection.lastError("destroying VM \(instance.record.spec.name)")
            }
        }
    }

    public func delete(_ id: VMID) async throws {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        await closeDiskExport(id)
        let connection = try open()
        let name = instance.record.spec.name
        do {
            try connection.withDomain(instance.uuid) { domain throws in
                if virDomainIsActive(domain) == 1, virDomainDestroy(domain) != 0 {
                    throw LibvirtConnection.lastError("destroying VM \(name)")
                }
                // Its snapshots' metadata goes too (libvirt refuses otherwise); their data is in the
                // overlay, removed with the directory below.
                let flags = VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue
                guard virDomainUndefineFlags(domain, flags) == 0 else {
                    throw LibvirtConnection.lastError("undefining VM \(name)")
                }
            }
        } catch let error as VireoError where error.code == .notFound {
            // Already gone from libvirt: only our files are left.
        }
        instances[id] = nil
        // A disk on shared storage is outside the VM's directory; this host owns it (a VM still
        // arriving is discarded by `abortIncoming`, which leaves the disk to the source). An
        // imported domain's disk was never Vireo's: it stays.
        if !instance.record.isImported { try? FileManager.default.removeItem(atPath: instance.record.disk) }
        try? FileManager.default.removeItem(atPath: directory(of: id))
    }

    /// Adopts every domain carrying Vireo's metadata with this driver's state directory, replacing
    /// what this process knew: libvirt's view is the truth.
    public func recover() async throws -> [InstanceStatus] {
        let connection = try open()
        var found: [VMID: Instance] = [:]
        for (uuid, metadata) in try connection.domainsWithMetadata(namespace: LibvirtRecord.namespace) {
            guard let metadata, let record = LibvirtRecord.parse(metadata: metadata),
                record.owner == configuration.stateDirectory
            else { continue }
            let id = record.spec.id
            let offset = (try? String(contentsOfFile: runOffsetPath(id), encoding: .utf8)).flatMap { UInt64($0) } ?? 0
            let restored = FileManager.default.fileExists(atPath: runSnapshotPath(id))
            found[id] = Instance(record: record, uuid: uuid, runOffset: offset, restored: restored)
        }
        instances = found
        let statuses = try await status()
        for status in statuses where status.state == .starting { watchForReady(status.id) }
        logger.info("recovered", metadata: ["vms": "\(statuses.count)", "uri": "\(configuration.uri)"])
        return statuses
    }

    public func consoleOutput(_ id: VMID, from offset: UInt64, limit: Int) async throws -> ConsoleChunk {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        return try ConsoleLog(path: instance.record.serialLog).read(from: offset, limit: limit)
    }

    public func detach() async {
        connection = nil
    }

    static func isActive(_ uuid: String, on connection: LibvirtConnection) throws -> Bool {
        try connection.withDomain(uuid) { domain throws in virDomainIsActive(domain) == 1 }
    }

    // MARK: Files

    func directory(of id: VMID) -> String { configuration.stateDirectory + "/" + id.rawValue }
    private func runOffsetPath(_ id: VMID) -> String { directory(of: id) + "/run-offset" }
    private func runSnapshotPath(_ id: VMID) -> String { directory(of: id) + "/run-snapshot" }

    static func size(of path: String) -> UInt64 {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? 0
    }

    private func markerPrinted(_ instance: Instance) -> Bool {
        let log = ConsoleLog(path: instance.record.serialLog)
        guard let text = try? log.read(from: instance.runOffset, limit: 1 << 20).text else { return false }
        return text.contains("\n" + instance.record.image.readyMarker)
    }

    private func lastLine(_ instance: Instance) -> String? {
        let text = (try? ConsoleLog(path: instance.record.serialLog).read(from: instance.runOffset, limit: 1 << 20))?.text
        return text?.split(whereSeparator: \.isNewline).last.map { String($0.prefix(200)) }
    }
}

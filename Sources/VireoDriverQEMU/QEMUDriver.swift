import Foundation
import Logging
import VireoDriver
import VireoImage
import VireoModel
import VireoProcess

/// What the driver needs of a built guest image to boot it.
public struct GuestImage: Sendable, Codable, Equatable {
    public var kernel: String
    public var initrd: String
    /// The qcow2 every VM's overlay is backed by; never written.
    public var baseDisk: String
    public var kernelCommandLine: String
    /// The line prefix the guest prints on its serial console when it is ready.
    public var readyMarker: String

    public init(kernel: String, initrd: String, baseDisk: String, kernelCommandLine: String, readyMarker: String) {
        self.kernel = kernel
        self.initrd = initrd
        self.baseDisk = baseDisk
        self.kernelCommandLine = kernelCommandLine
        self.readyMarker = readyMarker
    }
}

/// Runs each VM as a QEMU process, daemonized so that it outlives the agent, and drives it over QMP.
///
/// Per VM, `<state>/<id>/` holds `vm.json` (what to run), `disk.qcow2` (an overlay on the image's
/// base), `serial.log` (the console), `qemu.pid` and `run.json` while it runs. The QMP socket sits
/// in a short runtime directory because unix socket paths are limited to 107 bytes.
public actor QEMUDriver: HypervisorDriver {
    public struct Configuration: Sendable {
        public var stateDirectory: String
        public var binary = "qemu-system-x86_64"
        public var accelerator: Accelerator
        /// Capacity advertised to placement.
        public var cpus: Int
        public var memoryMiB: Int
        /// How long a guest may take to power off after the ACPI button before QEMU is told to quit.
        public var stopTimeout: Duration = .seconds(10)
        /// How long a guest may take to print its ready marker before the start counts as failed.
        public var readyTimeout: Duration = .seconds(120)
        public var network: NetworkMode = .user
        /// Live migration: bandwidth cap (bytes/s), the pause the final switch-over may take, and
        /// how long a migration may run before it is cancelled.
        public var migrationBandwidth: UInt64 = 8 << 30
        public var migrationDowntimeLimitMs = 300
        public var migrationTimeout: Duration = .seconds(120)
        /// auto-converge's first vCPU throttle and its step per pass, in percent; nil leaves QEMU's
        /// defaults (20 and 10).
        public var migrationThrottleInitialPercent: Int?
        public var migrationThrottleIncrementPercent: Int?
        /// Whether the guest runs while its memory is copied (see `MigrationMode`).
        public var migrationMode: MigrationMode = .auto
        /// A directory all hosts see at the same path (NFS, or one machine's disk in the testbed).
        /// VM disks kept there can be live-migrated: the destination opens the same file.
        public var sharedDisks: String?

        public init(stateDirectory: String, accelerator: Accelerator, cpus: Int, memoryMiB: Int) {
            self.stateDirectory = stateDirectory
            self.accelerator = accelerator
            self.cpus = cpus
            self.memoryMiB = memoryMiB
        }
    }

    /// How this host moves VMs.
    public enum MigrationMode: String, Sendable, CaseIterable {
        /// Pre-copy while the guest runs, then a short pause for what it dirtied meanwhile.
        case live
        /// Pause the guest, copy its memory, resume it on the destination: downtime is the whole
        /// transfer, but nothing depends on the hypervisor tracking the pages the guest writes.
        case paused
        /// `paused` under TCG (where live pre-copy of write-heavy guests was measured to lose
        /// guests: docs/benchmarks.md), `live` under KVM.
        case auto

        public static func parse(_ text: String, field: String) throws -> MigrationMode {
            guard let mode = MigrationMode(rawValue: text) else {
                throw VireoError.invalid(field: field, value: "'\(text)'", "expected auto, live or paused")
            }
            return mode
        }

        /// How memory is copied on `accelerator`.
        public func resolved(for accelerator: Accelerator) -> MigrationCopyMode {
            switch self {
            case .live: .live
            case .paused: .paused
            case .auto: accelerator == .tcg ? .paused : .live
            }
        }
    }

    public enum NetworkMode: Sendable, Equatable {
        /// No network card.
        case none
        /// QEMU user networking; the guest's port 80 is forwarded to a loopback port.
        case user
        /// A tap device on a bridge, with an address from the pool.
        case tap(TapNetwork)
    }

    /// What is stored about a VM: enough to start it again after any restart.
    struct Record: Codable, Equatable {
        var spec: InstanceSpec
        var image: GuestImage
        var mac: String
        var network: GuestNetwork
        /// The qcow2 overlay; in the VM's directory, or in shared storage.
        var disk: String
        /// False on the destination of a migration until it completes: the source still owns the
        /// shared disk, and a failed migration must not delete it.
        var ownsDisk = true
    }

    /// What is stored about a running QEMU, to re-adopt it after an agent restart.
    struct RunInfo: Codable {
        var pid: Int32
        /// Where this run's console output starts in `serial.log`.
        var serialOffset: UInt64
        var startedAt: Date
    }

    private struct Instance {
        var record: Record
        var state: InstanceState
        var message: String?
        var qmp: QMPClient?
        var pid: Int32?
        /// Bumped on every start, so a monitor of an earlier run cannot touch this one.
        var run = 0
        var stopRequested = false
        var guestPoweredOff = false
        /// Waiting for (or receiving) a live migration: ready when the guest resumes, not on a marker.
        var incomingURI: String?
        /// When this run's QEMU was launched, and how long it took the guest to be ready.
        var launchedAt: ContinuousClock.Instant?
        var bootMs: Int?
    }

    public nonisolated let name = "qemu"
    /// Live migration needs the disk on both hosts: offered only with shared storage.
    public nonisolated let capabilities: Set<Capability>
    public nonisolated let configuration: Configuration
    private let images: @Sendable (String) async throws -> GuestImage
    private let logger: Logger
    private let runtimeDirectory: String
    private let hostMeter = HostCPUMeter.detect()
    /// Guest addresses given to VMs still being created.
    private var reservedAddresses: Set<String> = []
    private var instances: [VMID: Instance] = [:]
    /// One resolution per image name, shared by concurrent creates (the first one may build it).
    private var imageResolutions: [String: Task<GuestImage, any Error>] = [:]
    /// Set by `detach`: QMP connections closing from now on do not mean QEMU exited.
    private var detached = false
    private var stateChanged: @Sendable () -> Void = {}

    public init(
        configuration: Configuration, logger: Logger = Logger(label: "vireo.qemu"),
        images: @escaping @Sendable (String) async throws -> GuestImage
    ) {
        self.configuration = configuration
        self.capabilities =
            configuration.sharedDisks == nil
            ? [.snapshots, .pause, .serialConsole] : [.liveMigration, .snapshots, .pause, .serialConsole]
        self.images = images
        self.logger = logger
        self.runtimeDirectory = "/tmp/vireo-" + Self.shortHash(configuration.stateDirectory)
    }

    // MARK: Facts

    public func fingerprint() async throws -> HostFingerprint {
        let version = (try? await HostTool.text(configuration.binary, ["--version"]))?
            .split(separator: "\n").first.map(String.init) ?? "unknown"
        return HostFingerprint(
            cpus: configuration.cpus, memoryMiB: configuration.memoryMiB, driver: name,
            capabilities: Array(capabilities),
            attributes: ["accelerator": configuration.accelerator.rawValue, "hypervisor": version])
    }

    public func status() async throws -> [InstanceStatus] {
        instances.map { id, instance in
            InstanceStatus(
                id: id, name: instance.record.spec.name, state: instance.state, message: instance.message,
                address: Self.address(of: instance.record.network), bootMs: instance.bootMs)
        }.sorted { $0.id < $1.id }
    }

    public func consoleOutput(_ id: VMID, from offset: UInt64, limit: Int) throws -> ConsoleChunk {
        guard instances[id] != nil else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard let handle = FileHandle(forReadingAtPath: paths(id).serial) else {
            return ConsoleChunk(offset: offset, next: offset, text: "")
        }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        let start = offset > size ? 0 : offset  // the log started over
        try handle.seek(toOffset: start)
        var data = (try handle.read(upToCount: max(0, limit))) ?? Data()
        // End on a character boundary: drop a trailing partial UTF-8 sequence (it comes next time).
        if data.count == limit, let cut = Self.utf8Boundary(data) { data = data.prefix(cut) }
        return ConsoleChunk(offset: start, next: start + UInt64(data.count), text: String(decoding: data, as: UTF8.self))
    }

    /// The length of `data` without a trailing incomplete UTF-8 sequence, if it ends in one.
    static func utf8Boundary(_ data: Data) -> Int? {
        var index = data.count
        var continuation = 0
        while index > 0, continuation < 4 {
            let byte = data[data.startIndex + index - 1]
            if byte & 0xC0 == 0x80 { continuation += 1; index -= 1; continue }
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            return length > continuation + 1 ? index - 1 : nil
        }
        return nil
    }

    /// The console output of the VM since it was created (the last `limit` bytes).
    public func consoleLog(_ id: VMID, limit: Int = 1 << 20) throws -> String {
        guard instances[id] != nil else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard let handle = FileHandle(forReadingAtPath: paths(id).serial) else { return "" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > UInt64(limit) ? size - UInt64(limit) : 0)
        return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
    }

    // MARK: Lifecycle

    public func create(_ spec: InstanceSpec) async throws {
        if let existing = instances[spec.id] {
            guard existing.record.spec == spec else {
                throw VireoError(.conflict, "VM \(spec.id) already exists with a different spec")
            }
            return
        }
        let image = try await image(named: spec.image)
        let paths = paths(spec.id)
        let network: GuestNetwork
        switch configuration.network {
        case .none: network = .none
        case .user: network = .user(hostPort: try Self.freeLoopbackPort())
        case .tap(let tap):
            // Creates interleave at their awaits: an address handed out is reserved until its VM is recorded.
            let used = Set(instances.values.compactMap { Self.address(of: $0.record.network) }).union(reservedAddresses)
            network = .tap(device: TapNetwork.device(for: spec.id), address: try tap.allocate(excluding: used), gateway: tap.gateway)
        }
        let reserved = Self.address(of: network)
        if let reserved { reservedAddresses.insert(reserved) }
        defer { if let reserved { reservedAddresses.remove(reserved) } }
        let disk = configuration.sharedDisks.map { "\($0)/\(spec.id).qcow2" } ?? paths.directory + "/disk.qcow2"
        let record = Record(
            spec: spec, image: image, mac: QEMUInvocation.mac(for: spec.id), network: network, disk: disk)
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        do {
            if let shared = configuration.sharedDisks {
                try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
            }
            try await HostTool.run(
                "qemu-img", ["create", "-q", "-f", "qcow2", "-b", image.baseDisk, "-F", "qcow2", disk])
            try Self.write(record, to: paths.record)
        } catch {
            try? FileManager.default.removeItem(atPath: paths.directory)
            try? FileManager.default.removeItem(atPath: disk)
            throw error
        }
        instances[spec.id] = Instance(record: record, state: .stopped)
    }

    private func image(named name: String) async throws -> GuestImage {
        if let resolution = imageResolutions[name] { return try await resolution.value }
        let images = self.images
        let resolution = Task { try await images(name) }
        imageResolutions[name] = resolution
        do {
            return try await resolution.value
        } catch {
            imageResolutions[name] = nil  // a failed build is tried again next time
            throw error
        }
    }

    public func start(_ id: VMID) async throws {
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        switch instance.state {
        case .starting, .running: return
        case .stopping: throw VireoError(.conflict, "VM \(instance.record.spec.name) is stopping")
        case .stopped, .failed: break
        }
        instance.state = .starting
        instance.message = nil
        instance.stopRequested = false
        instance.guestPoweredOff = false
        instance.run += 1
        instances[id] = instance
        try await launch(id, run: instance.run)
    }

    /// Starts QEMU for the VM's record (booting it, or waiting for a migration on `incoming`) and
    /// attaches to it. On failure the VM is `failed` with QEMU's message.
    private func launch(_ id: VMID, run: Int, incoming: String? = nil) async throws {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let paths = paths(id)
        do {
            try FileManager.default.createDirectory(atPath: runtimeDirectory, withIntermediateDirectories: true)
            try? FileManager.default.removeItem(atPath: paths.qmp)
            try? FileManager.default.removeItem(atPath: paths.pid)
            let offset = (try? FileManager.default.attributesOfItem(atPath: paths.serial)[.size] as? UInt64) ?? 0
            let record = instance.record
            let invocation = QEMUInvocation(
                name: record.spec.name, id: id, accelerator: configuration.accelerator, cpus: record.spec.cpus,
                memoryMiB: record.spec.memoryMiB, kernel: record.image.kernel, initrd: record.image.initrd,
                kernelCommandLine: record.image.kernelCommandLine, disk: record.disk, mac: record.mac,
                network: record.network, qmpSocket: paths.qmp, serialLog: paths.serial, pidFile: paths.pid,
                incoming: incoming)
            if case .tap(let device, _, _) = record.network, case .tap(let tap) = configuration.network {
                try await TapNetwork.create(device, bridge: tap.bridge)
            }
            // With -daemonize, QEMU returns once the VM is set up (or has failed to be), and the VM
            // process is no child of ours: it survives the agent.
            let launchedAt = ContinuousClock.now
            instances[id]?.launchedAt = launchedAt
            try await HostTool.run(configuration.binary, invocation.arguments)
            let daemonized = ContinuousClock.now
            let pid = try await Self.awaitPID(paths.pid)
            try Self.write(RunInfo(pid: pid, serialOffset: offset, startedAt: Date()), to: paths.run)
            let qmp = try await QMPClient.connect(path: paths.qmp)
            if incoming != nil {
                // MIGRATION events tell this side when the guest has arrived (a paused one is continued).
                try await qmp.execute(
                    "migrate-set-capabilities",
                    ["capabilities": .array([.object(["capability": .string("events"), "state": .bool(true)])])])
            }
            attach(id, run: run, pid: pid, qmp: qmp, serialOffset: offset, incoming: incoming != nil)
            logger.debug(
                "QEMU started",
                metadata: [
                    "vm": "\(instance.record.spec.name)", "pid": "\(pid)",
                    "daemonize-ms": "\(Self.milliseconds(daemonized - launchedAt))",
                    "qmp-ms": "\(Self.milliseconds(ContinuousClock.now - daemonized))",
                ])
        } catch {
            if let pid = try? Self.readPID(paths.pid) { kill(pid, SIGKILL) }
            if instances[id]?.run == run {
                instances[id]?.state = .failed
                instances[id]?.message = "\(error)"
                instances[id]?.qmp = nil
            }
            throw error
        }
    }

    public func stop(_ id: VMID) async throws {
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard instance.state == .starting || instance.state == .running, let qmp = instance.qmp else {
            if instance.state == .failed { instance.state = .stopped; instances[id] = instance }
            return
        }
        let wasReady = instance.state == .running
        instance.state = .stopping
        instance.stopRequested = true
        instances[id] = instance
        let run = instance.run
        if wasReady {
            // The guest's acpid powers it off cleanly; a guest that ignores the button is made to quit.
            _ = try? await qmp.execute("system_powerdown")
        } else {
            _ = try? await qmp.execute("quit")
        }
        let timeout = wasReady ? configuration.stopTimeout : .seconds(2)
        Task { await self.escalate(id, run: run, after: timeout) }
    }

    public func delete(_ id: VMID) async throws {
        guard let instance = instances[id] else { return }
        instances[id]?.stopRequested = true
        if let pid = instance.pid {
            _ = try? await instance.qmp?.execute("quit", timeout: .seconds(2))
            if !(await Self.waitForExit(pid, timeout: .seconds(3))) { kill(pid, SIGKILL) }
        }
        forget(id, instance.record, removingDisk: instance.record.ownsDisk)
    }

    /// Drops the VM and its local files (and its disk when it is ours to remove).
    private func forget(_ id: VMID, _ record: Record, removingDisk: Bool) {
        instances[id] = nil
        let paths = paths(id)
        try? FileManager.default.removeItem(atPath: paths.qmp)
        if case .tap(let device, _, _) = record.network { Task { await TapNetwork.remove(device) } }
        if removingDisk { try? FileManager.default.removeItem(atPath: record.disk) }
        try? FileManager.default.removeItem(atPath: paths.directory)
    }

    public func pause(_ id: VMID) async throws {
        try await running(id).execute("stop")
    }

    public func resume(_ id: VMID) async throws {
        try await running(id).execute("cont")
    }

    // MARK: Live migration

    public func prepareIncoming(_ spec: InstanceSpec, guestAddress: String?, listenAddress: String) async throws
        -> String
    {
        if let existing = instances[spec.id] {
            // The order is repeated on every heartbeat until the source starts sending.
            if let uri = existing.incomingURI, existing.state == .starting { return uri }
            throw VireoError(.conflict, "VM \(spec.name) is already on this host (\(existing.state))")
        }
        guard let shared = configuration.sharedDisks else {
            throw VireoError(.failedPrecondition, "live migration needs shared storage (driver setting shared-disks)")
        }
        let disk = "\(shared)/\(spec.id).qcow2"
        guard FileManager.default.fileExists(atPath: disk) else {
            throw VireoError(.failedPrecondition, "the VM's disk \(disk) is not visible on this host")
        }
        let image = try await image(named: spec.image)
        let network: GuestNetwork
        switch configuration.network {
        case .none: network = .none
        case .user: network = .user(hostPort: try Self.freeLoopbackPort())
        case .tap(let tap):
            // The guest keeps its address: its kernel configured it on the source.
            let address = try guestAddress.map { "\($0)/\(tap.guestPrefix)" }
                ?? tap.allocate(excluding: Set(instances.values.compactMap { Self.address(of: $0.record.network) }))
            network = .tap(device: TapNetwork.device(for: spec.id), address: address, gateway: tap.gateway)
        }
        let record = Record(
            spec: spec, image: image, mac: QEMUInvocation.mac(for: spec.id), network: network, disk: disk,
            ownsDisk: false)
        let paths = paths(spec.id)
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        try Self.write(record, to: paths.record)
        let uri = "tcp:\(listenAddress):\(try Self.freePort(on: listenAddress))"
        var instance = Instance(record: record, state: .starting)
        instance.run = 1
        instance.incomingURI = uri
        instances[spec.id] = instance
        do {
            try await launch(spec.id, run: 1, incoming: uri)
        } catch {
            forget(spec.id, record, removingDisk: false)
            throw error
        }
        logger.info("waiting for incoming migration", metadata: ["vm": "\(spec.name)", "uri": "\(uri)"])
        return uri
    }

    public func migrate(_ id: VMID, to uri: String, progress: @escaping @Sendable (MigrationProgress) -> Void)
        async throws -> MigrationStats
    {
        let qmp = try running(id)
        guard instances[id]?.state == .running else {
            throw VireoError(.failedPrecondition, "VM \(id) is not running")
        }
        // Converge even when the guest dirties memory quickly: no bandwidth cap below the link's,
        // throttle the vCPUs when needed, and accept up to the downtime the SLOs can take.
        try await qmp.execute(
            "migrate-set-capabilities",
            ["capabilities": .array([.object(["capability": .string("auto-converge"), "state": .bool(true)])])])
        var parameters: [String: JSONValue] = [
            "max-bandwidth": .number(Double(configuration.migrationBandwidth)),
            "downtime-limit": .number(Double(configuration.migrationDowntimeLimitMs)),
        ]
        if let initial = configuration.migrationThrottleInitialPercent {
            parameters["cpu-throttle-initial"] = .number(Double(initial))
        }
        if let increment = configuration.migrationThrottleIncrementPercent {
            parameters["cpu-throttle-increment"] = .number(Double(increment))
        }
        try await qmp.execute("migrate-set-parameters", parameters)
        // Paused: the guest stops before the first page is read and resumes on the destination
        // (which sees it arrive paused and continues it); downtime is the whole transfer.
        let mode = configuration.migrationMode.resolved(for: configuration.accelerator)
        let paused = mode == .paused
        let pausedAt = ContinuousClock.now
        if paused { try await qmp.execute("stop") }
        let migrateAt = ContinuousClock.now
        do {
            try await qmp.execute("migrate", ["uri": .string(uri)])
        } catch {
            if paused { try? await resumeAfterFailedMigration(qmp) }
            throw error
        }
        let deadline = ContinuousClock.now + configuration.migrationTimeout
        while true {
            let info = try await qmp.execute("query-migrate")
            let status = info["status"]?.stringValue ?? "none"
            switch status {
            case "completed":
                // Read exactly at completion, the times can still be 0: ask again (PLATFORM.md).
                var final = info
                for _ in 0..<10 where (final["total-time"]?.intValue ?? 0) == 0 {
                    try await Task.sleep(for: .milliseconds(20))
                    final = try await qmp.execute("query-migrate")
                }
                let totalMs = final["total-time"]?.intValue ?? 0
                return MigrationStats(
                    totalTimeMs: totalMs,
                    // QEMU counts its own final pause; a paused migration paused the guest before it.
                    downtimeMs: paused
                        ? Self.milliseconds(migrateAt - pausedAt) + totalMs : final["downtime"]?.intValue ?? 0,
                    transferredBytes: UInt64(final["ram"]?["transferred"]?.doubleValue ?? 0),
                    setupTimeMs: final["setup-time"]?.intValue, mode: mode)
            case "failed", "cancelled":
                let reason = info["error-desc"]?.stringValue ?? status
                try await resumeAfterFailedMigration(qmp)
                throw VireoError(.unavailable, "migration to \(uri) failed: \(reason); the VM keeps running here")
            default:
                if let ram = info["ram"] {
                    progress(
                        MigrationProgress(
                            transferredBytes: UInt64(ram["transferred"]?.doubleValue ?? 0),
                            remainingBytes: UInt64(ram["remaining"]?.doubleValue ?? 0),
                            totalBytes: UInt64(ram["total"]?.doubleValue ?? 0),
                            dirtyPagesPerSecond: UInt64(ram["dirty-pages-rate"]?.doubleValue ?? 0)))
                }
                if ContinuousClock.now > deadline {
                    _ = try? await qmp.execute("migrate_cancel")
                    try await resumeAfterFailedMigration(qmp)
                    throw VireoError(
                        .unavailable,
                        "migration to \(uri) did not finish within \(configuration.migrationTimeout); cancelled, "
                            + "the VM keeps running here")
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    /// A migration that fails in its last phase can leave the source paused: run it again.
    private func resumeAfterFailedMigration(_ qmp: QMPClient) async throws {
        let status = try await qmp.execute("query-status")
        if status["running"] != .bool(true) { _ = try? await qmp.execute("cont") }
    }

    public func release(_ id: VMID) async throws {
        guard let instance = instances[id] else { return }
        instances[id]?.stopRequested = true
        if let pid = instance.pid, Self.isQEMU(pid, running: id) {
            // The migration completed: the disk is flushed and handed over, and this copy is paused
            // for good. `quit` would take QEMU over a second to wind down here; nothing is lost by
            // not waiting for it.
            kill(pid, SIGKILL)
            _ = await Self.waitForExit(pid, timeout: .seconds(2))
        }
        // The console history stays with the VM: the destination appends to what the source had.
        forget(id, instance.record, removingDisk: false)
    }

    public func finishIncoming(_ id: VMID) async throws {
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        instance.record.ownsDisk = true
        instance.incomingURI = nil
        instances[id] = instance
        try Self.write(instance.record, to: paths(id).record)
    }

    public func abortIncoming(_ id: VMID) async throws {
        guard let instance = instances[id] else { return }
        guard !instance.record.ownsDisk else {
            throw VireoError(.conflict, "VM \(id) is no incoming migration here; not discarding it")
        }
        try await delete(id)
    }

    /// Re-adopts the VMs of a previous agent process: records on disk become instances, and a QEMU
    /// still running (pidfile, live process, answering QMP) is attached to instead of started again.
    public func recover() async throws -> [InstanceStatus] {
        let directory = configuration.stateDirectory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for entry in try FileManager.default.contentsOfDirectory(atPath: directory).sorted() {
            let id = VMID(entry)
            guard instances[id] == nil, let record = try? Self.read(Record.self, from: paths(id).record) else {
                continue
            }
            var instance = Instance(record: record, state: .stopped)
            instance.run = 1
            instances[id] = instance
            let paths = paths(id)
            guard let info = try? Self.read(RunInfo.self, from: paths.run), Self.isQEMU(info.pid, running: id) else {
                try? FileManager.default.removeItem(atPath: paths.run)
                continue
            }
            do {
                let qmp = try await QMPClient.connect(path: paths.qmp)
                instances[id]?.state = .starting
                attach(id, run: 1, pid: info.pid, qmp: qmp, serialOffset: info.serialOffset)
                logger.info("re-adopted QEMU", metadata: ["vm": "\(record.spec.name)", "pid": "\(info.pid)"])
            } catch {
                instances[id]?.state = .failed
                instances[id]?.message = "QEMU pid \(info.pid) is running but does not answer QMP: \(error)"
            }
        }
        return try await status()
    }

    /// Lets go of every VM without touching it, as an exiting agent does: QMP connections close
    /// (QEMU serves one client at a time) and the QEMU processes keep running, to be re-adopted by
    /// the next driver over the same state directory.
    public func onStateChange(_ handler: @escaping @Sendable () -> Void) {
        stateChanged = handler
    }

    public func detach() async {
        detached = true
        for instance in instances.values { await instance.qmp?.close() }
    }

    // MARK: Supervision

    private func attach(_ id: VMID, run: Int, pid: Int32, qmp: QMPClient, serialOffset: UInt64, incoming: Bool = false) {
        instances[id]?.pid = pid
        instances[id]?.qmp = qmp
        let serial = paths(id).serial
        let marker = instances[id]?.record.image.readyMarker ?? "VIREO-READY"
        let readyTimeout = configuration.readyTimeout
        Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    // An incoming guest printed its marker long ago, on the source: it is ready
                    // when it resumes here.
                    if incoming { return }
                    if await Self.waitForMarker(marker, in: serial, from: serialOffset, timeout: readyTimeout) {
                        await self.becameReady(id, run: run)
                    } else if !Task.isCancelled {
                        await self.neverReady(id, run: run, after: readyTimeout)
                    }
                }
                group.addTask {
                    for await event in qmp.events {
                        switch event.name {
                        case "SHUTDOWN": await self.shutdownEvent(id, run: run, guest: event.data["guest"] == .bool(true))
                        case "RESUME" where incoming: await self.becameReady(id, run: run)
                        case "MIGRATION" where incoming && event.data["status"]?.stringValue == "completed":
                            await self.continueArrived(id, run: run, qmp: qmp)
                        default: break
                        }
                    }
                    // The event stream ends when QEMU closes the socket: the process is gone.
                    await self.exited(id, run: run)
                }
                // Either QEMU exited or the guest became ready; readiness must not outlive the process.
                while await group.next() != nil {
                    if self.isCurrent(id, run: run, pid: pid) == false { group.cancelAll() }
                }
            }
        }
    }

    private func isCurrent(_ id: VMID, run: Int, pid: Int32) -> Bool {
        instances[id]?.run == run && instances[id]?.pid == pid
    }

    private func becameReady(_ id: VMID, run: Int) {
        guard instances[id]?.run == run, instances[id]?.state == .starting else { return }
        instances[id]?.state = .running
        stateChanged()
        if let launchedAt = instances[id]?.launchedAt {
            let bootMs = Self.milliseconds(ContinuousClock.now - launchedAt)
            instances[id]?.bootMs = bootMs
            logger.info(
                "guest ready",
                metadata: ["vm": "\(instances[id]?.record.spec.name ?? "\(id)")", "since-launch-ms": "\(bootMs)"])
        }
    }

    /// A guest sent by a paused migration arrives paused (the source stopped it first); only
    /// running guests are migrated, so it runs on here.
    private func continueArrived(_ id: VMID, run: Int, qmp: QMPClient) async {
        guard instances[id]?.run == run, instances[id]?.state == .starting,
            let status = try? await qmp.execute("query-status"), status["status"]?.stringValue == "paused"
        else { return }
        do {
            try await qmp.execute("cont")
        } catch {
            logger.error("cannot resume the arrived guest", metadata: ["vm": "\(id)", "error": "\(error)"])
        }
    }

    private func neverReady(_ id: VMID, run: Int, after timeout: Duration) async {
        guard instances[id]?.run == run, instances[id]?.state == .starting, let qmp = instances[id]?.qmp else { return }
        instances[id]?.message = "the guest printed no ready marker within \(timeout)"
        _ = try? await qmp.execute("quit", timeout: .seconds(2))
    }

    private func shutdownEvent(_ id: VMID, run: Int, guest: Bool) {
        guard instances[id]?.run == run else { return }
        if guest { instances[id]?.guestPoweredOff = true }
    }

    private func exited(_ id: VMID, run: Int) {
        guard !detached, var instance = instances[id], instance.run == run, instance.pid != nil else { return }
        let pid = instance.pid
        instance.qmp = nil
        instance.pid = nil
        if instance.message == nil, !instance.stopRequested, !instance.guestPoweredOff {
            instance.state = .failed
            instance.message = "QEMU (pid \(pid.map(String.init) ?? "?")) exited unexpectedly"
                + (Self.lastLine(of: paths(id).serial).map { "; last console line: \($0)" } ?? "")
        } else {
            instance.state = instance.message == nil ? .stopped : .failed
        }
        instances[id] = instance
        stateChanged()
        try? FileManager.default.removeItem(atPath: paths(id).run)
        try? FileManager.default.removeItem(atPath: paths(id).pid)
        if case .tap(let device, _, _) = instance.record.network { Task { await TapNetwork.remove(device) } }
    }

    private func escalate(_ id: VMID, run: Int, after timeout: Duration) async {
        guard let pid = instances[id]?.pid else { return }
        if await Self.waitForExit(pid, timeout: timeout) { return }
        guard instances[id]?.run == run else { return }
        logger.notice(
            "guest did not power off; quitting QEMU",
            metadata: ["vm": "\(instances[id]?.record.spec.name ?? "\(id)")", "timeout": "\(timeout)"])
        _ = try? await instances[id]?.qmp?.execute("quit", timeout: .seconds(2))
        if await Self.waitForExit(pid, timeout: .seconds(2)) { return }
        if instances[id]?.run == run, Self.isQEMU(pid, running: id) { kill(pid, SIGKILL) }
    }

    private func running(_ id: VMID) throws -> QMPClient {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard let qmp = instance.qmp else {
            throw VireoError(.failedPrecondition, "VM \(instance.record.spec.name) is not running")
        }
        return qmp
    }

    // MARK: Files and processes

    struct Paths {
        var directory, record, serial, pid, run, qmp: String
    }

    func paths(_ id: VMID) -> Paths {
        let directory = "\(configuration.stateDirectory)/\(id)"
        return Paths(
            directory: directory, record: directory + "/vm.json", serial: directory + "/serial.log", pid: directory + "/qemu.pid", run: directory + "/run.json",
            qmp: "\(runtimeDirectory)/\(id).qmp")
    }

    /// The host's CPU: its cgroup's (a testbed host) or the machine's.
    public func hostUsage() async -> HostCPUUsage? { hostMeter.read() }

    public func usage(_ id: VMID) async -> ResourceUsage? {
        guard let instance = instances[id], instance.state == .running, let pid = instance.pid else { return nil }
        return ProcessUsage.read(pid: pid)
    }

    static func address(of network: GuestNetwork) -> String? {
        switch network {
        case .none: nil
        case .user(let port): "127.0.0.1:\(port)"
        case .tap(_, let address, _): String(address.split(separator: "/")[0])
        }
    }

    /// Polls the console for `marker` from `offset` on. Polling every 2 ms costs a read syscall
    /// and bounds how late readiness is noticed.
    static func waitForMarker(_ marker: String, in path: String, from offset: UInt64, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        var position = offset
        var pending = Data()
        let needle = Data(marker.utf8)
        while ContinuousClock.now < deadline, !Task.isCancelled {
            if let handle = FileHandle(forReadingAtPath: path) {
                try? handle.seek(toOffset: position)
                if let data = try? handle.readToEnd(), !data.isEmpty {
                    position += UInt64(data.count)
                    pending.append(data)
                    if pending.range(of: needle) != nil { try? handle.close(); return true }
                    pending = pending.suffix(needle.count)
                }
                try? handle.close()
            }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return false
    }

    static func waitForExit(_ pid: Int32, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if kill(pid, 0) != 0 { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return kill(pid, 0) != 0
    }

    /// True when `pid` is alive and is the QEMU of this VM (pids are reused).
    static func isQEMU(_ pid: Int32, running id: VMID) -> Bool {
        guard kill(pid, 0) == 0, let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else {
            return false
        }
        return String(decoding: cmdline, as: UTF8.self).contains("process=vireo-\(id)")
    }

    /// The daemonized QEMU's pid. The file is normally there when `-daemonize` returns; on a
    /// loaded machine it has been seen to appear a moment later, so wait for it briefly.
    static func awaitPID(_ path: String, timeout: Duration = .seconds(2)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let pid = try? readPID(path) { return pid }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return try readPID(path)
    }

    static func readPID(_ path: String) throws -> Int32 {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw VireoError(.internal, "QEMU started but wrote no pid to \(path)") }
        return pid
    }

    static func lastLine(of path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.seek(toOffset: size > 4096 ? size - 4096 : 0)
        let text = String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
        return text.split(whereSeparator: \.isNewline).last.map { String($0.prefix(200)) }
    }

    static func write<T: Encodable>(_ value: T, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        try encoder.encode(value).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    static func read<T: Decodable>(_ type: T.Type, from path: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    static func freeLoopbackPort() throws -> Int { try freePort(on: "127.0.0.1") }

    /// A TCP port free on `host` now (the kernel picks it; QEMU binds it moments later).
    public static func freePort(on host: String) throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw VireoError(.internal, "socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw VireoError(.internal, "cannot find a free loopback port: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }

    static func shortHash(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16)
    }
}

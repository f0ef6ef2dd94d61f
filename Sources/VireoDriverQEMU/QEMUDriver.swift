import Foundation
import Logging
import VireoDriver
import VireoImage
import VireoModel
import VireoProcess

/// Runs each VM as a confined QEMU process, detached so that it outlives the agent, and drives it over QMP.
///
/// Per VM, `<state>/<id>/` holds `vm.json` (what to run), `disk.qcow2` (an overlay on the image's
/// base, which also holds the VM's snapshots), `serial.log` (the console), `qemu.pid` and
/// `run.json` while it runs. The QMP socket sits in a short runtime directory because unix socket
/// paths are limited to 107 bytes.
///
/// This file holds the driver's state and the VM lifecycle; the per-VM records are in
/// `QEMUInstance.swift`, watching QEMU and re-adopting it in `QEMUSupervision.swift`, live
/// migration in `QEMUMigration.swift`, snapshots in `QEMUSnapshots.swift`, private networks in
/// `PrivateNetwork.swift` and the serial console in `QEMUConsole.swift`.
public actor QEMUDriver: HypervisorDriver {
    public nonisolated let name = "qemu"
    /// Live migration needs the disk on both hosts: offered only with shared storage.
    public nonisolated let capabilities: Set<Capability>
    public nonisolated let configuration: Configuration
    private let images: @Sendable (String) async throws -> GuestImage
    let logger: Logger
    let runtimeDirectory: String
    private let hostMeter = HostCPUMeter.detect()
    /// How each QEMU is confined: its uid, and the cgroups its VM's groups go under (nil: none).
    let confinement = QEMUConfinement.forCurrentProcess()
    let cgroupParent = VMCgroup.Parent.detect()
    /// Guest addresses, private subnets (with the number of creates holding each) and VNC ports
    /// given to VMs still being created.
    var reservedAddresses: Set<String> = []
    var reservedSubnets: [String: (subnet: Int, holders: Int)] = [:]
    private var reservedDisplayPorts: Set<Int> = []
    /// Per VM with a snapshot operation under way: the operations waiting for it to end.
    var snapshotWaiters: [VMID: [CheckedContinuation<Void, Never>]] = [:]
    var instances: [VMID: Instance] = [:]
    /// One resolution per image name, shared by concurrent creates (the first one may build it).
    private var imageResolutions: [String: Task<GuestImage, any Error>] = [:]
    /// Set by `detach`: QMP connections closing from now on do not mean QEMU exited.
    var detached = false
    /// Installing the guest firewall in this host's namespace (before the first tap guest starts);
    /// concurrent launches wait for the one installation.
    private var guestFirewall: Task<Void, any Error>?
    var stateChanged: @Sendable () -> Void = {}

    public init(
        configuration: Configuration, logger: Logger = Logger(label: "vireo.qemu"),
        images: @escaping @Sendable (String) async throws -> GuestImage
    ) {
        self.configuration = configuration
        let local: Set<Capability> = [.snapshots, .pause, .serialConsole, .privateNetworks, .display]
        // Live moves either share the disk (shared-disks) or copy it over NBD while the guest runs.
        self.capabilities = local.union([.liveMigration, .storageMigration, .coldMigration])
        self.images = images
        self.logger = logger
        self.runtimeDirectory = "/tmp/vireo-" + Self.shortHash(configuration.stateDirectory)
    }

    // MARK: Facts

    public func fingerprint() async throws -> HostFingerprint {
        let version =
            (try? await HostTool.text(configuration.binary, ["--version"]))?
            .split(separator: "\n").first.map(String.init) ?? "unknown"
        return HostFingerprint(
            cpus: configuration.cpus, memoryMiB: configuration.memoryMiB, driver: name,
            capabilities: Array(capabilities),
            attributes: [
                "accelerator": configuration.accelerator.rawValue, "hypervisor": version,
                "confinement": confinementSummary,
            ].merging(
                configuration.sharedDisks.map { [HostFingerprint.sharedStorageAttribute: $0] } ?? [:]
            ) { a, _ in a })
    }

    /// How QEMU runs here, for the fingerprint: `uid-per-vm` or `agent-uid`, `seccomp`, and the
    /// cgroup layout VMs get (`cgroup-v1`, `cgroup-v2`) or `no-cgroup`.
    var confinementSummary: String {
        [confinement.uids != nil ? "uid-per-vm" : "agent-uid", "seccomp", cgroupParent?.description ?? "no-cgroup"]
            .joined(separator: ",")
    }

    public func status() async throws -> [InstanceStatus] {
        instances.map { id, instance in
            InstanceStatus(
                id: id, name: instance.record.spec.name, state: instance.state, message: instance.message,
                address: Self.address(of: instance.record.network), bootMs: instance.bootMs,
                display: instance.state == .running ? instance.record.vncPort.map { "127.0.0.1:\($0)" } : nil,
                paused: instance.state == .running && instance.paused ? true : nil)
        }.sorted { $0.id < $1.id }
    }

    /// The host's CPU: its cgroup's (a testbed host) or the machine's.
    public func hostUsage() async -> HostCPUUsage? { hostMeter.read() }

    public func usage(_ id: VMID) async -> ResourceUsage? {
        guard let instance = instances[id], instance.state == .running, let pid = instance.pid,
            let stat = try? ProcessStat.read(pid: pid), let resident = ProcessStat.residentBytes(pid: pid)
        else { return nil }
        return ResourceUsage(cpuSeconds: stat.cpuSeconds, memoryBytes: resident)
    }

    // MARK: Lifecycle

    public func create(_ spec: InstanceSpec) async throws {
        try await create(spec, diskCredentials: nil)
    }

    public func create(_ spec: InstanceSpec, diskCredentials: MigrationCredentials?) async throws {
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
        try Self.checkSupported(spec)
        let image = try await image(named: spec.image)
        let paths = paths(spec.id)
        let network: GuestNetwork
        // Creates interleave at their awaits: an address, a private subnet or a display port handed
        // out is reserved until its VM is recorded.
        if let privateNetwork = spec.privateNetwork {
            network = .tap(
                device: TapNetwork.device(for: spec.id), address: try allocatePrivateAddress(on: privateNetwork),
                gateway: nil)
        } else {
            switch configuration.network {
            case .none: network = .none
            case .user: network = .user(hostPort: try Self.freeLoopbackPort())
            case .tap(let tap):
                let used = Set(instances.values.compactMap { Self.address(of: $0.record.network) }).union(reservedAddresses)
                network = .tap(
                    device: TapNetwork.device(for: spec.id), address: try tap.allocate(excluding: used), gateway: tap.gateway)
            }
        }
        let reserved = Self.address(of: network)
        if let reserved { reservedAddresses.insert(reserved) }
        let subnet = spec.privateNetwork.flatMap { name in reserved.flatMap(PrivateNetwork.subnet(of:)).map { (name, $0) } }
        if let (name, number) = subnet { reservedSubnets[name] = (number, (reservedSubnets[name]?.holders ?? 0) + 1) }
        let vncPort = spec.display == .vnc ? try allocateDisplayPort() : nil
        if let vncPort { reservedDisplayPorts.insert(vncPort) }
        defer {
            if let reserved { reservedAddresses.remove(reserved) }
            if let (name, _) = subnet, let held = reservedSubnets[name] {
                reservedSubnets[name] = held.holders > 1 ? (held.subnet, held.holders - 1) : nil
            }
            if let vncPort { reservedDisplayPorts.remove(vncPort) }
        }
        let disk = configuration.sharedDisks.map { "\($0)/\(spec.id).qcow2" } ?? paths.directory + "/disk.qcow2"
        var record = Record(
            spec: spec, image: image, mac: QEMUInvocation.mac(for: spec.id), network: network, disk: disk,
            memoryTrimKiB: QEMUInvocation.memoryTrimKiB(on: configuration.accelerator))
        record.vncPort = vncPort
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        do {
            if let shared = configuration.sharedDisks {
                try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
            }
            if source == InstanceSpec.sharedDisk {
                // A cold move between hosts sharing storage: the source stopped the VM and left the disk.
                guard configuration.sharedDisks != nil, FileManager.default.fileExists(atPath: disk) else {
                    throw VireoError(.failedPrecondition, "the VM's disk \(disk) is not in this host's shared storage")
                }
            } else if let source {
                try await DiskTransfer.copy(from: source, to: disk, credentials: diskCredentials)
            } else {
                try await HostTool.run(
                    "qemu-img",
                    ["create", "-q", "-f", "qcow2", "-b", image.baseDisk, "-F", "qcow2", disk]
                        + (spec.diskMiB.map { ["\($0)M"] } ?? []))
            }
            try Self.write(record, to: paths.record)
        } catch {
            try? FileManager.default.removeItem(atPath: paths.directory)
            try? FileManager.default.removeItem(atPath: disk)
            throw error
        }
        instances[spec.id] = Instance(record: record, state: .stopped)
    }

    func image(named name: String) async throws -> GuestImage {
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
        instance.beginRun()
        instances[id] = instance
        try await launch(id, run: instance.run)
    }

    /// Starts QEMU for the VM's record (booting it, running it from `snapshot`, or waiting for a
    /// migration on `incoming`), confined (`QEMUConfinement`), and attaches to it. On failure the
    /// VM is `failed` with QEMU's message.
    func launch(_ id: VMID, run: Int, incoming: String? = nil, snapshot: String? = nil) async throws {
        // The previous run's tap and cgroup must be gone before this run makes its own of the
        // same names.
        await instances[id]?.tapRemoval?.value
        await instances[id]?.cgroupRemoval?.value
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        let paths = paths(id)
        var launched: Int32?
        var launchedAt: ContinuousClock.Instant?
        do {
            let record = try confine(id)
            let cgroup = try cgroupParent.map {
                try VMCgroup.create(
                    cgroupName(id), under: $0, cpus: record.spec.cpus, memoryMiB: record.spec.memoryMiB)
            }
            instances[id]?.cgroup = cgroup
            try? FileManager.default.removeItem(atPath: paths.qmp)
            try? FileManager.default.removeItem(atPath: paths.pid)
            let offset = (try? FileManager.default.attributesOfItem(atPath: paths.serial)[.size] as? UInt64) ?? 0
            let logOffset = (try? FileManager.default.attributesOfItem(atPath: paths.log)[.size] as? UInt64) ?? 0
            let invocation = QEMUInvocation(
                name: record.spec.name, id: id, accelerator: configuration.accelerator, cpus: record.spec.cpus,
                memoryMiB: record.spec.memoryMiB, kernel: record.image.kernel, initrd: record.image.initrd,
                kernelCommandLine: record.image.kernelCommandLine, disk: record.disk, mac: record.mac,
                network: record.network, qmpSocket: paths.qmp, serialLog: paths.serial,
                incoming: incoming, loadSnapshot: snapshot, vncPort: record.vncPort,
                memoryTrimKiB: record.memoryTrimKiB ?? 0)
            let namespace = privateNamespace(of: record)
            if case .tap(let device, let address, _) = record.network {
                if let namespace {
                    try await preparePrivateTap(device, address: address, namespace: namespace, owner: record.uid)
                } else if case .tap(let tap) = configuration.network {
                    try await ensureGuestFirewall()
                    try await TapNetwork.create(device, bridge: tap.bridge, owner: record.uid)
                }
            }
            // QEMU runs detached (a session of its own, no child of ours): it survives the agent.
            let started = ContinuousClock.now
            launchedAt = started
            instances[id]?.launchedAt = started
            let pid = try await HostTool.spawnDetached(
                QEMUConfinement.command(binary: configuration.binary, arguments: invocation.arguments, uid: record.uid),
                log: paths.log, pidFile: paths.pid, cgroups: cgroup?.directories ?? [], umask: "077")
            launched = pid
            // Known at once, not only once QEMU answers QMP, so that a delete, release or power-off
            // from now on ends this QEMU; and one that came while it was being spawned ends it
            // here. (Known only at `attach`, an incoming VM discarded while its QEMU started was
            // forgotten with the QEMU left running, paused — a second QEMU on the VM's disk.)
            try ensureLaunching(id, run: run, at: started, name: record.spec.name)
            instances[id]?.pid = pid
            try Self.write(
                RunInfo(
                    pid: pid, serialOffset: offset, startedAt: Date(), snapshot: snapshot, incoming: incoming != nil ? true : nil),
                to: paths.run)
            // QMP answers once QEMU has set the VM up (a snapshot loaded, memory preallocated).
            let qmp = try await Self.connectQMP(
                paths.qmp, pid: pid, log: paths.log, logOffset: logOffset,
                timeout: snapshot != nil ? configuration.snapshotTimeout : .seconds(60))
            let answered = ContinuousClock.now
            if case .tap(let device, _, _) = record.network, let namespace {
                // QEMU has the tap open: now it goes where the VM's network is.
                try await PrivateNetwork.attach(device, to: namespace)
            }
            if incoming != nil {
                // MIGRATION events tell this side when the guest has arrived (a paused one is continued).
                try await qmp.execute(QMP.MigrateSetCapabilities([.events: true]))
            }
            do {
                try ensureLaunching(id, run: run, at: started, name: record.spec.name)
            } catch {
                await qmp.close()
                throw error
            }
            attach(
                id, run: run, pid: pid, qmp: qmp, serialOffset: offset,
                readiness: incoming != nil ? .incoming : snapshot != nil ? .restored : .marker)
            logger.debug(
                "QEMU started",
                metadata: [
                    "vm": "\(instance.record.spec.name)", "pid": "\(pid)", "uid": "\(record.uid.map(String.init) ?? "agent")",
                    "qmp-ms": "\(Self.milliseconds(answered - started))",
                ])
        } catch {
            if let pid = launched ?? (try? Self.readPID(paths.pid)), Self.isQEMU(pid, running: id) { kill(pid, SIGKILL) }
            // This run's instance still (not one made again since, with a QEMU of its own).
            if instances[id]?.run == run, launchedAt == nil || instances[id]?.launchedAt == launchedAt {
                instances[id]?.state = .failed
                instances[id]?.message = "\(error)"
                instances[id]?.qmp = nil
                instances[id]?.pid = nil
            }
            throw error
        }
    }

    /// Throws when the VM `launch` is starting a QEMU for was removed meanwhile (deleted,
    /// released, a migration's arrival discarded — or that and made again), or is being removed
    /// (a delete stays visible through its awaits): its QEMU is no one's.
    private func ensureLaunching(_ id: VMID, run: Int, at launchedAt: ContinuousClock.Instant, name: String) throws {
        guard let instance = instances[id], instance.run == run, instance.launchedAt == launchedAt,
            !instance.stopRequested
        else {
            throw VireoError(.conflict, "VM \(name) was removed while its QEMU started")
        }
    }

    /// Installs the guest firewall (`GuestFirewall`) in this host's namespace, once per driver: no
    /// guest on a tap starts without it.
    private func ensureGuestFirewall() async throws {
        let installation = guestFirewall ?? Task { try await GuestFirewall.install() }
        guestFirewall = installation
        do {
            try await installation.value
        } catch {
            if guestFirewall == installation { guestFirewall = nil }  // the next launch tries again
            throw VireoError(
                .failedPrecondition, "cannot install the guest firewall (docs/security.md), so no guest starts on a tap: \(error)"
            )
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
            _ = try? await qmp.execute(QMP.SystemPowerdown())
        } else {
            _ = try? await qmp.execute(QMP.Quit())
        }
        let timeout = wasReady ? configuration.stopTimeout : .seconds(2)
        Task { await self.escalate(id, run: run, after: timeout) }
    }

    /// SIGKILLs QEMU (a frozen one too) and waits for it to be gone.
    public func powerOff(_ id: VMID) async throws {
        guard var instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard let pid = instance.pid, [.starting, .running, .stopping].contains(instance.state) else { return }
        instance.state = .stopping
        instance.stopRequested = true
        instances[id] = instance
        if Self.isQEMU(pid, running: id) { kill(pid, SIGKILL) }
        _ = await Self.waitForExit(pid, timeout: .seconds(2))
    }

    public func delete(_ id: VMID) async throws {
        guard let instance = instances[id] else { return }
        instances[id]?.stopRequested = true
        await closeDiskExport(id)
        if let pid = instance.pid {
            if let qmp = instance.qmp {
                _ = try? await qmp.execute(QMP.Quit(), timeout: .seconds(2))
            } else if Self.isQEMU(pid, running: id) {
                kill(pid, SIGKILL)  // still starting: there is no QMP to ask it to quit over
            }
            if !(await Self.waitForExit(pid, timeout: .seconds(3))) { kill(pid, SIGKILL) }
        }
        await forget(id, instance.record, removingDisk: instance.record.ownsDisk)
    }

    /// Drops the VM, its local files (and its disk, with its snapshots, when it is ours to remove)
    /// and its network: its tap, and a private network's namespace with the network's last VM.
    func forget(_ id: VMID, _ record: Record, removingDisk: Bool) async {
        await instances[id]?.incomingTunnel?.close()
        // Its QEMU has exited (or been killed): the group goes now, not after this process has
        // ended (a process that exits right after a delete would leave it behind). A QEMU slow to
        // wind down is not waited for long; the group then goes in the background.
        releaseCgroup(id)
        if let removal = instances[id]?.cgroupRemoval {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await removal.value }
                group.addTask { try? await Task.sleep(for: .seconds(3)) }
                await group.next()
                group.cancelAll()
            }
        }
        let tapRemoval = instances[id]?.tapRemoval
        instances[id] = nil
        let paths = paths(id)
        try? FileManager.default.removeItem(atPath: paths.runtime)
        // The runtime directory too, with its last VM (it is made again with the next): one per
        // state directory, under /tmp, they piled up in their thousands on a test machine.
        rmdir(runtimeDirectory)
        if removingDisk { try? FileManager.default.removeItem(atPath: record.disk) }
        try? FileManager.default.removeItem(atPath: paths.directory)
        await tapRemoval?.value
        await releaseNetwork(of: record)
    }

    public func exportDisk(_ id: VMID, listenAddress: String, credentials: MigrationCredentials?) async throws -> String {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard instance.state == .stopped || instance.state == .failed else {
            throw VireoError(
                .failedPrecondition,
                "VM \(instance.record.spec.name) is \(instance.state.rawValue); only a stopped VM's disk moves")
        }
        return try await DiskTransfer.export(
            disk: instance.record.disk, on: listenAddress, port: { try Self.freePort(on: listenAddress) },
            in: paths(id).directory, credentials: credentials)
    }

    public func closeDiskExport(_ id: VMID) async {
        DiskTransfer.stopExport(in: paths(id).directory)
    }

    public func pause(_ id: VMID) async throws {
        try await running(id).execute(QMP.Stop())
        instances[id]?.paused = true
    }

    public func resume(_ id: VMID) async throws {
        try await running(id).execute(QMP.Cont())
        instances[id]?.paused = false
    }

    /// The QMP connection of a VM whose QEMU is up; fails naming the VM otherwise.
    func running(_ id: VMID) throws -> QMPClient {
        guard let instance = instances[id] else { throw VireoError(.notFound, "VM \(id) is not on this host") }
        guard let qmp = instance.qmp else {
            throw VireoError(.failedPrecondition, "VM \(instance.record.spec.name) is not running")
        }
        return qmp
    }

    // MARK: Host

    static func freeLoopbackPort() throws -> Int { try freePort(on: "127.0.0.1") }

    /// Says what of `spec` this driver cannot do, before anything is made.
    static func checkSupported(_ spec: InstanceSpec) throws {
        if let network = spec.privateNetwork {
            guard !network.isEmpty, network.count <= 128 else {
                throw VireoError.invalid(field: "privateNetwork", value: "'\(network)'", "expected a name of 1 to 128 characters")
            }
            // Network namespaces and taps need root (CAP_NET_ADMIN); saying so here beats a failed start.
            guard getuid() == 0 else {
                throw VireoError(
                    .failedPrecondition,
                    "privateNetwork '\(network)': private networks are network namespaces, which need the agent to run as root")
            }
        }
    }

    /// The first loopback port from 5900 that no VM here has and nothing listens on now.
    func allocateDisplayPort() throws -> Int {
        let taken = Set(instances.values.compactMap(\.record.vncPort)).union(reservedDisplayPorts)
        let base = QEMUInvocation.vncBasePort
        guard let port = (base..<base + 1000).first(where: { !taken.contains($0) && Self.isFree(port: $0, on: "127.0.0.1") })
        else {
            throw VireoError(.unavailable, "display: no free VNC port on 127.0.0.1 from \(base) to \(base + 999)")
        }
        return port
    }

    /// True when nothing on `host` has TCP `port` bound now.
    static func isFree(port: Int, on host: String) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A TCP port free on `host` now (the kernel picks it; QEMU binds it moments later).
    public static func freePort(on host: String) throws -> Int { try LoopbackPort.free(on: host) }

    /// Deletes the private networks of the driver whose state is in `stateDirectory`, once its
    /// agent and QEMUs are gone for good (`vireo testbed down`); returns their namespaces.
    public static func removePrivateNetworks(stateDirectory: String) async -> [String] {
        await PrivateNetwork.removeAll(stateDirectory: stateDirectory)
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

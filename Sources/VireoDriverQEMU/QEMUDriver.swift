import Foundation
import Logging
import VireoDriver
import VireoImage
import VireoModel

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
        /// `user` (port-forwarded to loopback) or `none`; tap networking comes with the testbed.
        public var network: String = "user"

        public init(stateDirectory: String, accelerator: Accelerator, cpus: Int, memoryMiB: Int) {
            self.stateDirectory = stateDirectory
            self.accelerator = accelerator
            self.cpus = cpus
            self.memoryMiB = memoryMiB
        }
    }

    /// What is stored about a VM: enough to start it again after any restart.
    struct Record: Codable, Equatable {
        var spec: InstanceSpec
        var image: GuestImage
        var mac: String
        var network: GuestNetwork
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
    }

    public nonisolated let name = "qemu"
    public nonisolated let capabilities: Set<Capability> = [.liveMigration, .snapshots, .pause, .serialConsole]
    public nonisolated let configuration: Configuration
    private let images: @Sendable (String) async throws -> GuestImage
    private let logger: Logger
    private let runtimeDirectory: String
    private var instances: [VMID: Instance] = [:]
    /// One resolution per image name, shared by concurrent creates (the first one may build it).
    private var imageResolutions: [String: Task<GuestImage, any Error>] = [:]
    /// Set by `detach`: QMP connections closing from now on do not mean QEMU exited.
    private var detached = false

    public init(
        configuration: Configuration, logger: Logger = Logger(label: "vireo.qemu"),
        images: @escaping @Sendable (String) async throws -> GuestImage
    ) {
        self.configuration = configuration
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
                address: Self.address(of: instance.record.network))
        }.sorted { $0.id < $1.id }
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
        case "none": network = .none
        default: network = .user(hostPort: try Self.freeLoopbackPort())
        }
        let record = Record(spec: spec, image: image, mac: QEMUInvocation.mac(for: spec.id), network: network)
        try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true)
        do {
            try await HostTool.run(
                "qemu-img", ["create", "-q", "-f", "qcow2", "-b", image.baseDisk, "-F", "qcow2", paths.disk])
            try Self.write(record, to: paths.record)
        } catch {
            try? FileManager.default.removeItem(atPath: paths.directory)
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
        let run = instance.run
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
                kernelCommandLine: record.image.kernelCommandLine, disk: paths.disk, mac: record.mac,
                network: record.network, qmpSocket: paths.qmp, serialLog: paths.serial, pidFile: paths.pid)
            // With -daemonize, QEMU returns once the VM is set up (or has failed to be), and the VM
            // process is no child of ours: it survives the agent.
            try await HostTool.run(configuration.binary, invocation.arguments)
            let pid = try Self.readPID(paths.pid)
            try Self.write(RunInfo(pid: pid, serialOffset: offset, startedAt: Date()), to: paths.run)
            let qmp = try await QMPClient.connect(path: paths.qmp)
            attach(id, run: run, pid: pid, qmp: qmp, serialOffset: offset)
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
        instances[id] = nil
        let paths = paths(id)
        try? FileManager.default.removeItem(atPath: paths.qmp)
        try FileManager.default.removeItem(atPath: paths.directory)
    }

    public func pause(_ id: VMID) async throws {
        try await running(id).execute("stop")
    }

    public func resume(_ id: VMID) async throws {
        try await running(id).execute("cont")
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
    public func detach() async {
        detached = true
        for instance in instances.values { await instance.qmp?.close() }
    }

    // MARK: Supervision

    private func attach(_ id: VMID, run: Int, pid: Int32, qmp: QMPClient, serialOffset: UInt64) {
        instances[id]?.pid = pid
        instances[id]?.qmp = qmp
        let serial = paths(id).serial
        let marker = instances[id]?.record.image.readyMarker ?? "VIREO-READY"
        let readyTimeout = configuration.readyTimeout
        Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    if await Self.waitForMarker(marker, in: serial, from: serialOffset, timeout: readyTimeout) {
                        await self.becameReady(id, run: run)
                    } else if !Task.isCancelled {
                        await self.neverReady(id, run: run, after: readyTimeout)
                    }
                }
                group.addTask {
                    for await event in qmp.events where event.name == "SHUTDOWN" {
                        await self.shutdownEvent(id, run: run, guest: event.data["guest"] == .bool(true))
                    }
                    // The event stream ends when QEMU closes the socket: the process is gone.
                    await self.exited(id, run: run)
                }
                await group.next()
                // Either QEMU exited or the guest became ready; readiness must not outlive the process.
                if self.isCurrent(id, run: run, pid: pid) == false { group.cancelAll() }
            }
        }
    }

    private func isCurrent(_ id: VMID, run: Int, pid: Int32) -> Bool {
        instances[id]?.run == run && instances[id]?.pid == pid
    }

    private func becameReady(_ id: VMID, run: Int) {
        guard instances[id]?.run == run, instances[id]?.state == .starting else { return }
        instances[id]?.state = .running
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
        try? FileManager.default.removeItem(atPath: paths(id).run)
        try? FileManager.default.removeItem(atPath: paths(id).pid)
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
        var directory, record, disk, serial, pid, run, qmp: String
    }

    func paths(_ id: VMID) -> Paths {
        let directory = "\(configuration.stateDirectory)/\(id)"
        return Paths(
            directory: directory, record: directory + "/vm.json", disk: directory + "/disk.qcow2",
            serial: directory + "/serial.log", pid: directory + "/qemu.pid", run: directory + "/run.json",
            qmp: "\(runtimeDirectory)/\(id).qmp")
    }

    static func address(of network: GuestNetwork) -> String? {
        switch network {
        case .none: nil
        case .user(let port): "127.0.0.1:\(port)"
        case .tap(_, let address, _): String(address.split(separator: "/")[0])
        }
    }

    /// Polls the console for `marker` from `offset` on. Polling every 10 ms costs a read syscall
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
            try? await Task.sleep(for: .milliseconds(10))
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

    /// A port on 127.0.0.1 that is free now (the kernel picks it; QEMU binds it moments later).
    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw VireoError(.internal, "socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
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

    static func shortHash(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16)
    }
}

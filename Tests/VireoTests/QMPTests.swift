import Foundation
import Testing
import VireoImage
import VireoModel
import VireoProcess

@testable import VireoDriverQEMU

/// A real QEMU with no machine: enough to speak QMP, quick to start.
struct BareQEMU {
    let socket: String
    let pid: Int32

    static func start() async throws -> BareQEMU {
        let directory = "/tmp/vireo-qmp-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let socket = directory + "/qmp.sock"
        try await HostTool.run(
            "qemu-system-x86_64",
            [
                "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "unix:\(socket),server=on,wait=off",
                "-pidfile", directory + "/pid", "-daemonize",
            ])
        return BareQEMU(socket: socket, pid: try QEMUDriver.readPID(directory + "/pid"))
    }

    func kill() {
        _ = Foundation.kill(pid, SIGKILL)
        try? FileManager.default.removeItem(atPath: (socket as NSString).deletingLastPathComponent)
    }
}

/// A command this QEMU does not have.
private struct NoSuchCommand: QMPCommand {
    static let name = "no-such-command"
}

/// `query-name`, read as if it answered like `query-status`.
private struct QueryNameAsStatus: QMPCommand {
    static let name = "query-name"
    typealias Response = QMP.QueryStatus.Response
}

/// Reads back what `migrate-set-parameters` set.
private struct QueryMigrateParameters: QMPCommand {
    static let name = "query-migrate-parameters"
    struct Response: Decodable, Equatable {
        var maxBandwidth: UInt64
        var downtimeLimit: Int
        var cpuThrottleInitial: Int
        var cpuThrottleIncrement: Int
        enum CodingKeys: String, CodingKey {
            case maxBandwidth = "max-bandwidth"
            case downtimeLimit = "downtime-limit"
            case cpuThrottleInitial = "cpu-throttle-initial"
            case cpuThrottleIncrement = "cpu-throttle-increment"
        }
    }
}

/// Reads back what `migrate-set-capabilities` set.
private struct QueryMigrateCapabilities: QMPCommand {
    static let name = "query-migrate-capabilities"
    struct Capability: Decodable, Sendable {
        var capability: String
        var state: Bool
    }
    typealias Response = [Capability]
}

@Suite("QMP client (real QEMU)")
struct QMPTests {
    @Test("greets, runs commands, reports command errors and delivers events")
    func commandsAndEvents() async throws {
        let qemu = try await BareQEMU.start()
        defer { qemu.kill() }
        let qmp = try await QMPClient.connect(path: qemu.socket)
        #expect((qmp.version["major"]?.intValue ?? 0) >= 7)

        let status = try await qmp.execute(QMP.QueryStatus())
        #expect(status.status == .running && status.running)

        let error = await #expect(throws: QMPError.self) { try await qmp.execute(NoSuchCommand()) }
        #expect(error?.kind == .command("CommandNotFound"))

        // `stop` emits a STOP event, which may arrive before or after the reply.
        try await qmp.execute(QMP.Stop())
        #expect(try await qmp.execute(QMP.QueryStatus()) == .init(status: .paused, running: false))
        var iterator = qmp.events.makeAsyncIterator()
        let event = await iterator.next()
        #expect(event?.name == "STOP")
        await qmp.close()
    }

    @Test("concurrent commands each get their own reply")
    func concurrent() async throws {
        let qemu = try await BareQEMU.start()
        defer { qemu.kill() }
        let qmp = try await QMPClient.connect(path: qemu.socket)
        let names = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<50 { group.addTask { try await qmp.execute(QMP.QueryName()).name ?? "none" } }
            for _ in 0..<50 { group.addTask { try await qmp.execute(QMP.QueryStatus()).status.rawValue } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(names.count == 100)
        #expect(names.filter { $0 == "none" }.count == 50)
        await qmp.close()
    }

    @Test("when QEMU exits, pending commands fail and the event stream ends")
    func exit() async throws {
        let qemu = try await BareQEMU.start()
        defer { qemu.kill() }
        let qmp = try await QMPClient.connect(path: qemu.socket)
        _ = try? await qmp.execute(QMP.Quit())
        for await _ in qmp.events {}  // returns only because the stream finishes
        let error = await #expect(throws: QMPError.self) { try await qmp.execute(QMP.QueryStatus()) }
        #expect(error?.kind == .disconnected)
    }

    @Test("a reply of another shape than the command declares fails naming the command and the field")
    func unexpectedReply() async throws {
        let qemu = try await BareQEMU.start()
        defer { qemu.kill() }
        let qmp = try await QMPClient.connect(path: qemu.socket)
        // query-name answers `{}` without -name: there is no `status` to read.
        let error = await #expect(throws: QMPError.self) { try await qmp.execute(QueryNameAsStatus()) }
        #expect(error?.kind == .protocolViolation)
        #expect(error?.message == "query-name: field 'status' is missing")
        // The connection is still usable afterwards.
        #expect(try await qmp.execute(QMP.QueryStatus()).running)
        await qmp.close()
    }

    @Test("QEMU takes the typed migration settings and reports them back as sent")
    func migrationSettings() async throws {
        let qemu = try await BareQEMU.start()
        defer { qemu.kill() }
        let qmp = try await QMPClient.connect(path: qemu.socket)
        try await qmp.execute(QMP.MigrateSetCapabilities([.autoConverge: true, .events: true]))
        try await qmp.execute(
            QMP.MigrateSetParameters(
                maxBandwidth: 8 << 30, downtimeLimitMs: 300, cpuThrottleInitialPercent: 30,
                cpuThrottleIncrementPercent: 5))
        let parameters = try await qmp.execute(QueryMigrateParameters())
        #expect(
            parameters
                == .init(maxBandwidth: 8 << 30, downtimeLimit: 300, cpuThrottleInitial: 30, cpuThrottleIncrement: 5))
        let enabled = try await qmp.execute(QueryMigrateCapabilities()).filter(\.state).map(\.capability)
        #expect(Set(enabled) == ["auto-converge", "events"])
        #expect(try await qmp.execute(QMP.QueryMigrate()).status == QMP.MigrationStatus.none)
        await qmp.close()
    }

    @Test("connecting to a socket nobody serves fails with a clear error")
    func noServer() async throws {
        let error = await #expect(throws: QMPError.self) {
            try await QMPClient.connect(path: "/tmp/vireo-no-such-\(UUID().uuidString.prefix(8)).sock")
        }
        #expect(error?.kind == .disconnected)
        #expect(error?.message.contains("cannot connect") == true)
    }
}

@Suite("QEMU command line")
struct QEMUCommandLineTests {
    @Test("the accelerator is KVM only with vmx/svm and a usable /dev/kvm")
    func accelerator() throws {
        let withVMX = "processor: 0\nflags\t\t: fpu vme vmx sse\n"
        let without = "processor: 0\nflags\t\t: fpu vme sse hypervisor\n"
        #expect(Accelerator.probe(cpuinfo: withVMX, kvmUsable: true) == .kvm)
        #expect(Accelerator.probe(cpuinfo: withVMX, kvmUsable: false) == .tcg)
        #expect(Accelerator.probe(cpuinfo: without, kvmUsable: true) == .tcg)
        #expect(try Accelerator.resolve("tcg", cpuinfo: { withVMX }, kvmUsable: { true }) == .tcg)
        let error = #expect(throws: VireoError.self) {
            try Accelerator.resolve("hvf", cpuinfo: { "" }, kvmUsable: { false })
        }
        #expect(error?.message.contains("'hvf'") == true)
    }

    @Test(
        "migration mode: live when auto, but paused under TCG for a VM whose RAM is not trimmed; a bad mode names the setting"
    )
    func migrationMode() throws {
        #expect(QEMUDriver.MigrationMode.auto.resolved(for: .tcg, memoryTrimmed: true) == .live)
        #expect(QEMUDriver.MigrationMode.auto.resolved(for: .tcg, memoryTrimmed: false) == .paused)
        #expect(QEMUDriver.MigrationMode.auto.resolved(for: .kvm, memoryTrimmed: false) == .live)
        #expect(QEMUDriver.MigrationMode.live.resolved(for: .tcg, memoryTrimmed: false) == .live)
        #expect(QEMUDriver.MigrationMode.paused.resolved(for: .kvm, memoryTrimmed: true) == .paused)
        #expect(try QEMUDriver.MigrationMode.parse("paused", field: "--mode") == .paused)
        let error = #expect(throws: VireoError.self) { try QEMUDriver.MigrationMode.parse("postcopy", field: "--mode") }
        #expect(error?.message.contains("--mode") == true && error?.message.contains("'postcopy'") == true)
    }

    @Test("a destination's address names the RAM it prepared, and a source of another size is refused naming both")
    func incomingEndpoint() throws {
        let plain = try IncomingEndpoint(parsing: "tcp:198.18.0.2:4444")
        #expect(plain.memoryTrimKiB == 0 && plain.disk == nil && plain.description == "tcp:198.18.0.2:4444")
        let full = try IncomingEndpoint(parsing: "tcp:198.18.0.2:4444;disk=nbd:198.18.0.2:4445;ram-trim-kib=8")
        #expect(full.disk == .init(host: "198.18.0.2", port: 4445) && full.memoryTrimKiB == 8)
        #expect(full.description == "tcp:198.18.0.2:4444;disk=nbd:198.18.0.2:4445;ram-trim-kib=8")
        #expect(
            IncomingEndpoint(migrationURI: "tcp:198.18.0.2:1", memoryTrimKiB: 8).description == "tcp:198.18.0.2:1;ram-trim-kib=8")
        for bad in [
            "tcp:198.18.0.2:4444;ram-trim-kib=x", "tcp:198.18.0.2:4444;ram-trim-kib=0", "tcp:198.18.0.2:4444;colour=blue",
        ] {
            let error = #expect(throws: VireoError.self) { try IncomingEndpoint(parsing: bad) }
            #expect(error?.message.contains("incomingURI") == true && error?.message.contains(bad) == true)
        }
        try IncomingEndpoint.checkSameRAM(vm: "web", memoryMiB: 512, sourceTrimKiB: 8, destinationTrimKiB: 8)
        let error = #expect(throws: VireoError.self) {
            try IncomingEndpoint.checkSameRAM(vm: "web", memoryMiB: 512, sourceTrimKiB: 0, destinationTrimKiB: 8)
        }
        #expect(error?.code == .failedPrecondition)
        #expect(error?.message.contains("512 MiB of RAM here and the destination prepared 512 MiB less 8 KiB") == true)
        #expect(error?.message.contains("keeps running here") == true)
    }

    /// `--driver-opt images=.build/test-images` once gave disks the backing file
    /// `<disk directory>/.build/test-images/…`, which qemu-img could not open.
    @Test("an image cache named relative to the working directory is kept as an absolute path")
    func relativeImageCache() {
        let cwd = FileManager.default.currentDirectoryPath
        #expect(ImageBuilder(cacheDirectory: "some/images").cacheDirectory == cwd + "/some/images")
        #expect(ImageBuilder(cacheDirectory: "./a/../images/").cacheDirectory == cwd + "/images")
        #expect(ImageBuilder(cacheDirectory: "/var/lib/vireo/images").cacheDirectory == "/var/lib/vireo/images")
    }

    @Test("the invocation boots the image with the VM's sizes, disk, console and network")
    func invocation() {
        let id = VMID("0b0e6c1e-0000-4000-8000-000000000001")
        let invocation = QEMUInvocation(
            name: "web-1", id: id, accelerator: .tcg, cpus: 2, memoryMiB: 256, kernel: "/i/vmlinux",
            initrd: "/i/initramfs.cpio.gz", kernelCommandLine: "console=ttyS0", disk: "/s/disk.qcow2",
            mac: QEMUInvocation.mac(for: id), network: .user(hostPort: 18080), qmpSocket: "/r/q.sock",
            serialLog: "/s/serial.log")
        let arguments = invocation.arguments
        func value(after flag: String) -> String? {
            arguments.firstIndex(of: flag).map { arguments[$0 + 1] }
        }
        #expect(value(after: "-accel") == "tcg")
        #expect(value(after: "-m") == "256")
        #expect(value(after: "-smp") == "2")
        #expect(value(after: "-append") == "console=ttyS0 vireo.name=web-1 vireo.ip=10.0.2.15/24 vireo.gw=10.0.2.2")
        #expect(value(after: "-netdev") == "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18080-:80")
        // Confined: QEMU's seccomp filter with every deny set, and no -daemonize (a fork it forbids).
        #expect(value(after: "-sandbox") == "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
        #expect(!arguments.contains("-daemonize"))
        #expect(!arguments.contains("-incoming"))
        #expect(!arguments.contains("-mem-prealloc"))
        // A migration's destination waits for the stream with its memory already allocated, so
        // receiving pages does not also fault them in.
        var incoming = invocation
        incoming.incoming = "tcp:198.18.0.2:4444"
        #expect(incoming.arguments.suffix(3) == ["-mem-prealloc", "-incoming", "tcp:198.18.0.2:4444"])
        // Under TCG a new VM's RAM is 8 KiB short, so that QEMU 7.2 syncs its dirty pages one by one
        // (`QEMUInvocation.memoryTrimKiB(on:)`): 256 MiB is 262,144 KiB.
        #expect(QEMUInvocation.memoryTrimKiB(on: .tcg) == 8)
        #expect(QEMUInvocation.memoryTrimKiB(on: .kvm) == nil)
        var trimmed = invocation
        trimmed.memoryTrimKiB = 8
        #expect(trimmed.arguments[trimmed.arguments.firstIndex(of: "-m")! + 1] == "262136K")
        #expect(QEMUInvocation.mac(for: id) == QEMUInvocation.mac(for: id))
        #expect(QEMUInvocation.mac(for: id).hasPrefix("52:54:"))
        #expect(QEMUInvocation.mac(for: id).count == 17)
    }
}

import AsyncHTTPClient
import CLibvirt
import Foundation
import Testing
import VireoAPI
import VireoAgent
import VireoController
import VireoDriver
import VireoModel
import VireoProcess
import VireoSecurity
import VireoStore

@testable import VireoDriverLibvirt

@Suite("libvirt live migration")
struct LibvirtMigrationTests {
    func spec(_ name: String) -> InstanceSpec {
        InstanceSpec(id: .generate(), name: name, image: "tiny", cpus: 1, memoryMiB: 128)
    }

    @Test("libvirt's job statistics, read from typed parameters, become migration progress and stats")
    func jobStatistics() throws {
        // libvirt's calls keep their last error in thread-local storage that virInitialize sets up
        // (connecting does it too); without it, this test would write into another library's slot.
        #expect(virInitialize() == 0)
        var params: UnsafeMutablePointer<virTypedParameter>?
        var count: Int32 = 0
        var capacity: Int32 = 0
        defer { virTypedParamsFree(params, count) }
        let figures: [(String, UInt64)] = [
            (VIR_DOMAIN_JOB_TIME_ELAPSED, 1003), (VIR_DOMAIN_JOB_DOWNTIME, 161),
            (VIR_DOMAIN_JOB_MEMORY_PROCESSED, 68_782_080), (VIR_DOMAIN_JOB_MEMORY_REMAINING, 1_048_576),
            (VIR_DOMAIN_JOB_MEMORY_TOTAL, 269_230_080), (VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE, 250),
            (VIR_DOMAIN_JOB_SETUP_TIME, 1),
        ]
        for (name, value) in figures {
            #expect(virTypedParamsAddULLong(&params, &count, &capacity, name, value) == 0)
        }
        // What libvirt also puts there and the mapping has no use for.
        #expect(virTypedParamsAddInt(&params, &count, &capacity, VIR_DOMAIN_JOB_OPERATION, 7) == 0)
        #expect(virTypedParamsAddString(&params, &count, &capacity, "note", "text") == 0)
        let numbers = LibvirtConnection.numbers(in: UnsafeBufferPointer(start: try #require(params), count: Int(count)))
        #expect(numbers.count == figures.count + 1 && numbers["note"] == nil)

        let progress = try #require(LibvirtJobStatistics.progress(from: numbers))
        #expect(
            progress
                == MigrationProgress(
                    transferredBytes: 68_782_080, remainingBytes: 1_048_576, totalBytes: 269_230_080,
                    dirtyPagesPerSecond: 250))
        let stats = LibvirtJobStatistics.stats(from: numbers, mode: .live)
        #expect(
            stats
                == MigrationStats(
                    totalTimeMs: 1003, downtimeMs: 161, transferredBytes: 68_782_080, setupTimeMs: 1, mode: .live))
        // libvirt's own downtime (pause to resume) in either mode.
        let paused = LibvirtJobStatistics.stats(from: numbers, mode: .paused)
        #expect(paused.downtimeMs == 161 && paused.mode == .paused)
        // No job (or not started yet): no memory figures, no progress.
        #expect(LibvirtJobStatistics.progress(from: [:]) == nil)
        #expect(LibvirtJobStatistics.progress(from: [VIR_DOMAIN_JOB_MEMORY_TOTAL: 0]) == nil)
    }

    @Test("the destination's definition carries its record, console log and forwarded port; the rest stays the source's")
    func destinationDefinition() throws {
        let image = GuestImage(
            kernel: "/images/vmlinux", initrd: "/images/initrd.gz", baseDisk: "/images/base.qcow2",
            kernelCommandLine: "console=ttyS0", readyMarker: "VIREO-READY")
        var source = LibvirtRecord(
            spec: InstanceSpec(id: VMID("vm-1"), name: "web-1", image: "web", cpus: 1, memoryMiB: 128), image: image,
            owner: "/a/vms", disk: "/shared/vm-1.qcow2", serialLog: "/a/vms/vm-1/serial.log")
        source.hostPort = 40001
        var destination = source
        destination.owner = "/b/vms"
        destination.serialLog = "/b/vms/vm-1/serial.log"
        destination.hostPort = 40002
        // As libvirt formats a migratable definition: its own quoting and indentation, the metadata
        // re-serialized.
        let xml = source.domainXML(type: "qemu").replacingOccurrences(
            of: "<name>", with: "<uuid>0b6e1f2a-6a39-4bd0-9d1c-2f4d1c7d7a11</uuid>\n  <name>")
        let moved = try destination.destinationXML(from: xml, source: source)
        #expect(moved.contains("<source path='/b/vms/vm-1/serial.log' append='on'/>"))
        #expect(!moved.contains("/a/vms"))
        #expect(moved.contains("hostfwd=tcp:127.0.0.1:40002-:80") && !moved.contains("40001"))
        #expect(moved.contains("<uuid>0b6e1f2a-6a39-4bd0-9d1c-2f4d1c7d7a11</uuid>"))
        #expect(moved.contains("<source file='/shared/vm-1.qcow2'/>"))
        #expect(moved.contains("<kernel>/images/vmlinux</kernel>"))
        let metadataStart = try #require(moved.range(of: "<vireo:vm"))
        let metadataEnd = try #require(moved.range(of: "</vireo:vm>"))
        #expect(LibvirtRecord.parse(metadata: String(moved[metadataStart.lowerBound..<metadataEnd.upperBound])) == destination)

        let error = #expect(throws: VireoError.self) {
            _ = try destination.destinationXML(from: "<domain><name>x</name></domain>", source: source)
        }
        #expect(error?.message.contains("no Vireo metadata") == true)
    }

    @Test("peers reach qemu:///system over TCP on the agent's address; a URI naming a host or a socket as it is")
    func peerURI() {
        typealias Configuration = LibvirtDriver.Configuration
        #expect(Configuration.defaultPeerURI(uri: "qemu:///system", address: "10.0.0.2") == "qemu+tcp://10.0.0.2/system")
        #expect(
            Configuration.defaultPeerURI(uri: "qemu+unix:///system?socket=/x/libvirt-sock", address: "10.0.0.2")
                == "qemu+unix:///system?socket=/x/libvirt-sock")
        #expect(Configuration.defaultPeerURI(uri: "qemu+ssh://h2/system", address: "10.0.0.2") == "qemu+ssh://h2/system")
    }

    @Test("live migration is declared with or without shared disks (copying the disk), whose setting must be an absolute path")
    func capability() throws {
        var registry = DriverRegistry()
        registry.registerLibvirt()
        let plain = try registry.make("libvirt", options: .init(stateDirectory: "/tmp/x"))
        #expect(plain.capabilities.isSuperset(of: [.liveMigration, .storageMigration, .coldMigration]))
        let shared = try registry.make(
            "libvirt",
            options: .init(
                stateDirectory: "/tmp/x",
                settings: ["shared-disks": "/srv/disks", "peer-uri": "qemu+tcp://10.0.0.2/system", "migration-timeout-s": "30"]))
        #expect(shared.capabilities == plain.capabilities)
        let configuration = try #require((shared as? LibvirtDriver)?.configuration)
        #expect(configuration.sharedDisks == "/srv/disks" && configuration.peerURI == "qemu+tcp://10.0.0.2/system")
        #expect(configuration.migrationTimeout == .seconds(30))
        #expect(configuration.migrationMode == .auto)
        let live = try registry.make(
            "libvirt", options: .init(stateDirectory: "/tmp/x", settings: ["migration-mode": "live"]))
        #expect((live as? LibvirtDriver)?.configuration.migrationMode == .live)
        let secured = try registry.make(
            "libvirt", options: .init(stateDirectory: "/tmp/x", settings: ["migration-tls-dir": "/etc/pki/vireo-migrate"]))
        #expect((secured as? LibvirtDriver)?.configuration.migrationTLSDirectory == "/etc/pki/vireo-migrate")
        #expect(configuration.migrationTLSDirectory == nil)
        // As the qemu driver: paused under TCG, live with hardware virtualization.
        #expect(LibvirtDriver.MigrationMode.auto.resolved(for: .qemu) == .paused)
        #expect(LibvirtDriver.MigrationMode.auto.resolved(for: .kvm) == .live)
        #expect(LibvirtDriver.MigrationMode.live.resolved(for: .qemu) == .live)
        for (key, value) in [
            ("shared-disks", "disks"), ("peer-uri", "no uri"), ("migration-timeout-s", "soon"), ("migration-mode", "postcopy"),
            ("migration-tls-dir", "pki"),
        ] {
            let error = #expect(throws: VireoError.self) {
                _ = try registry.make("libvirt", options: .init(stateDirectory: "/tmp/x", settings: [key: value]))
            }
            #expect(error?.message.contains(key) == true, "\(String(describing: error))")
        }
    }

    @Test("the destination prepares only with the VM's disk visible on shared storage; repeated orders get the same offer")
    func prepareIncoming() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let vm = spec("lv-incoming")
        let unshared = TestLibvirt.driver(uri: "test:///default", stateDirectory: root + "/a")
        let refused = await #expect(throws: VireoError.self) {
            _ = try await unshared.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
        }
        #expect(refused?.code == .failedPrecondition && refused?.message.contains("shared-disks") == true)

        var configuration = LibvirtDriver.Configuration(uri: "test:///default", stateDirectory: root + "/b")
        configuration.sharedDisks = root + "/disks"
        let destination = LibvirtDriver(configuration: configuration) { _ in try await TestLibvirt.placeholder.image() }
        let missing = await #expect(throws: VireoError.self) {
            _ = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
        }
        #expect(missing?.code == .failedPrecondition && missing?.message.contains("\(vm.id).qcow2") == true)

        try FileManager.default.createDirectory(atPath: root + "/disks", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: "\(root)/disks/\(vm.id).qcow2", contents: Data())
        let uri = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
        #expect(try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1") == uri)
        let offer = try LibvirtIncoming(decoding: uri)
        // A local URI: peers reach its daemon over TCP on the agent's address.
        #expect(offer.peerURI == "test+tcp://127.0.0.1/default" && offer.migrationURI == "tcp://127.0.0.1")
        #expect(offer.record.owner == root + "/b" && offer.record.disk == "\(root)/disks/\(vm.id).qcow2")
        #expect(offer.record.serialLog == "\(root)/b/\(vm.id)/serial.log")
        let waiting = try await destination.status()
        #expect(waiting.map(\.id) == [vm.id] && waiting.first?.state == .starting)
        // Nothing arrived: it cannot be taken over, and discarding it leaves the disk to the source.
        let early = await #expect(throws: VireoError.self) { try await destination.finishIncoming(vm.id) }
        #expect(early?.code == .notFound)
        try await destination.abortIncoming(vm.id)
        #expect(try await destination.status().isEmpty)
        #expect(FileManager.default.fileExists(atPath: "\(root)/disks/\(vm.id).qcow2"))
        #expect(!FileManager.default.fileExists(atPath: "\(root)/b/\(vm.id)"))
    }

    @Test(
        "a copy offer sends the disk too: libvirt's non-shared-disk copy of the VM's disk into the destination's own, standing alone"
    )
    func copyOffer() throws {
        let image = GuestImage(
            kernel: "/images/vmlinux", initrd: "/images/initrd.gz", baseDisk: "/images/base.qcow2",
            kernelCommandLine: "console=ttyS0", readyMarker: "VIREO-READY")
        let source = LibvirtRecord(
            spec: InstanceSpec(id: VMID("vm-1"), name: "web-1", image: "web", cpus: 1, memoryMiB: 128, diskMiB: 256),
            image: image, owner: "/a/vms", disk: "/a/vms/vm-1/disk.qcow2", serialLog: "/a/vms/vm-1/serial.log")
        var destination = source
        destination.owner = "/b/vms"
        destination.disk = "/b/vms/vm-1/disk.qcow2"
        destination.serialLog = "/b/vms/vm-1/serial.log"
        // As libvirt shows a running domain's disk: with the backing chain it found.
        let xml = source.domainXML(type: "qemu").replacingOccurrences(
            of: "<target dev='vda' bus='virtio'/>",
            with: """
                <backingStore type='file' index='1'>
                        <format type='qcow2'/>
                        <source file='/images/base.qcow2'/>
                        <backingStore/>
                      </backingStore>
                      <target dev='vda' bus='virtio'/>
                """)
        let copied = try destination.destinationXML(from: xml, source: source, copyingDisk: true)
        #expect(copied.contains("<source file='/b/vms/vm-1/disk.qcow2'/>") && !copied.contains("/a/vms"))
        let diskElement = try #require(copied.range(of: "<disk")).lowerBound..<#require(copied.range(of: "</disk>")).upperBound
        #expect(!copied[diskElement].contains("base.qcow2") && copied.components(separatedBy: "<backingStore").count == 2)
        #expect(copied.contains("<backingStore/>\n      <target dev='vda' bus='virtio'/>"))
        // A shared disk keeps its chain; a definition without the disk is refused.
        #expect(try destination.destinationXML(from: xml, source: source).contains("<source file='/images/base.qcow2'/>"))
        let missing = #expect(throws: VireoError.self) {
            _ = try LibvirtRecord.withoutBackingChain(xml, disk: "/elsewhere/disk.qcow2")
        }
        #expect(missing?.message.contains("/elsewhere/disk.qcow2") == true)

        let copy = LibvirtDriver.migrationFlags(mode: .live, storage: .copy)
        #expect(copy & VIR_MIGRATE_NON_SHARED_DISK.rawValue != 0 && copy & VIR_MIGRATE_UNSAFE.rawValue == 0)
        #expect(copy & VIR_MIGRATE_NON_SHARED_INC.rawValue == 0 && copy & VIR_MIGRATE_LIVE.rawValue != 0)
        #expect(copy & VIR_MIGRATE_PEER2PEER.rawValue != 0 && copy & VIR_MIGRATE_PERSIST_DEST.rawValue != 0)
        let shared = LibvirtDriver.migrationFlags(mode: .paused, storage: .shared)
        #expect(shared & VIR_MIGRATE_NON_SHARED_DISK.rawValue == 0 && shared & VIR_MIGRATE_UNSAFE.rawValue != 0)
        #expect(shared & VIR_MIGRATE_LIVE.rawValue == 0)

        let offer = LibvirtIncoming(
            peerURI: "qemu+tcp://10.0.0.2/system", migrationURI: "tcp://10.0.0.2", record: destination, storage: .copy)
        #expect(try LibvirtIncoming(decoding: try offer.encoded()) == offer)
        #expect(offer.copyParameters.map { "\($0)=\($1)" } == ["migrate_disks=vda", "listen_address=10.0.0.2"])
        var sharedOffer = offer
        sharedOffer.storage = .shared
        #expect(sharedOffer.copyParameters.isEmpty)

        // While the disk is copied no memory is sent yet; the completed job counts the disk's bytes.
        let copying = try #require(
            LibvirtJobStatistics.progress(from: [
                VIR_DOMAIN_JOB_DISK_TOTAL: 256 << 20, VIR_DOMAIN_JOB_DISK_PROCESSED: 100 << 20, VIR_DOMAIN_JOB_MEMORY_TOTAL: 0,
            ]))
        #expect(
            copying
                == MigrationProgress(
                    transferredBytes: 0, remainingBytes: 0, totalBytes: 0, storageCopiedBytes: 100 << 20,
                    storageTotalBytes: 256 << 20))
        let stats = LibvirtJobStatistics.stats(
            from: [
                VIR_DOMAIN_JOB_TIME_ELAPSED: 5000, VIR_DOMAIN_JOB_DOWNTIME: 90, VIR_DOMAIN_JOB_MEMORY_PROCESSED: 40 << 20,
                VIR_DOMAIN_JOB_DISK_TOTAL: 256 << 20, VIR_DOMAIN_JOB_DISK_PROCESSED: 256 << 20,
            ], mode: .live)
        #expect(stats.storageBytes == 256 << 20 && stats.transferredBytes == 40 << 20)
    }

    @Test(
        "a copy is prepared as an empty disk of the guest's size in the destination's own directory, refused without room, discarded with its disk"
    )
    func prepareCopy() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let destination = TestLibvirt.driver(uri: "test:///default", stateDirectory: root + "/b")
        var huge = spec("lv-huge")
        huge.diskMiB = 1 << 30
        let refused = await #expect(throws: VireoError.self) {
            _ = try await destination.prepareIncoming(huge, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy)
        }
        #expect(refused?.code == .failedPrecondition)
        #expect(refused?.message.contains("no room for the VM's disk") == true, "\(String(describing: refused))")
        #expect(try await destination.status().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/b/\(huge.id)"))

        let vm = spec("lv-copy")
        let uri = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy)
        #expect(
            try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy) == uri)
        let offer = try LibvirtIncoming(decoding: uri)
        let disk = "\(root)/b/\(vm.id)/disk.qcow2"
        #expect(offer.storage == .copy && offer.record.disk == disk)
        let info = try await HostTool.text("qemu-img", ["info", "--output=json", disk])
        #expect(info.contains("\"virtual-size\": \(ImageCatalogue.virtualDiskMiB << 20)"), "\(info)")
        #expect(!info.contains("backing-filename"))
        #expect(try await destination.status().map(\.state) == [.starting])
        try await destination.abortIncoming(vm.id)
        #expect(try await destination.status().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/b/\(vm.id)"))
    }

    @Test(
        "with credentials the destination puts its server files in migration-tls-dir and offers TLS; without that directory it refuses, leaving nothing"
    )
    func prepareOverTLS() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let vm = spec("lv-tls")
        let credentials = try MigrationAuthority().issue(migration: .generate(), listener: .destination, address: "127.0.0.1")
            .destination
        try FileManager.default.createDirectory(atPath: root + "/disks", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: "\(root)/disks/\(vm.id).qcow2", contents: Data())

        var configuration = LibvirtDriver.Configuration(uri: "test:///default", stateDirectory: root + "/b")
        configuration.sharedDisks = root + "/disks"
        let unconfigured = LibvirtDriver(configuration: configuration) { _ in try await TestLibvirt.placeholder.image() }
        let refused = await #expect(throws: VireoError.self) {
            _ = try await unconfigured.prepareIncoming(
                vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: credentials)
        }
        #expect(refused?.code == .failedPrecondition, "\(String(describing: refused))")
        #expect(
            refused?.message.contains("migration-tls-dir") == true && refused?.message.contains("--migration-tls off") == true)
        #expect(try await unconfigured.status().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/b/\(vm.id)"))

        // The directory is libvirtd's: what else is in it (the source's files of another move) stays.
        let tls = root + "/tls"
        try FileManager.default.createDirectory(atPath: tls, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: tls + "/client-cert.pem", contents: Data("other".utf8))
        configuration.migrationTLSDirectory = tls
        let destination = LibvirtDriver(configuration: configuration) { _ in try await TestLibvirt.placeholder.image() }
        let uri = try await destination.prepareIncoming(
            vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: credentials)
        let offer = try LibvirtIncoming(decoding: uri)
        #expect(offer.tls && offer.migrationURI == "tcp://127.0.0.1")
        #expect(try String(contentsOfFile: tls + "/server-cert.pem", encoding: .utf8) == credentials.certificate)
        #expect(try String(contentsOfFile: tls + "/server-key.pem", encoding: .utf8) == credentials.privateKey)
        #expect(try String(contentsOfFile: tls + "/ca-cert.pem", encoding: .utf8) == credentials.caCertificate)
        #expect(try String(contentsOfFile: tls + "/client-cert.pem", encoding: .utf8) == "other")
        // The key is readable to the directory's group (libvirt's QEMU user), not to others.
        let key = try FileManager.default.attributesOfItem(atPath: tls + "/server-key.pem")
        #expect((key[.posixPermissions] as? Int) == 0o640)
        let files = try FileManager.default.contentsOfDirectory(atPath: tls)
        #expect(!files.contains { $0.hasSuffix(".vireo-new") }, "\(files)")

        // Another secured move into this host waits for this one to end: its files would replace
        // this move's, whose authority is another.
        let second = spec("lv-tls-2")
        FileManager.default.createFile(atPath: "\(root)/disks/\(second.id).qcow2", contents: Data())
        let secondCredentials = try MigrationAuthority().issue(
            migration: .generate(), listener: .destination, address: "127.0.0.1"
        ).destination
        let busy = await #expect(throws: VireoError.self) {
            _ = try await destination.prepareIncoming(
                second, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: secondCredentials)
        }
        #expect(busy?.code == .unavailable && busy?.message.contains("under way (lv-tls)") == true, "\(String(describing: busy))")
        #expect(try String(contentsOfFile: tls + "/ca-cert.pem", encoding: .utf8) == credentials.caCertificate)
        // A plain move is not held up, and once the first is dropped the second can come.
        let plain = spec("lv-plain")
        _ = try await destination.prepareIncoming(
            plain, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy, credentials: nil)
        try await destination.abortIncoming(plain.id)
        try await destination.abortIncoming(vm.id)
        _ = try await destination.prepareIncoming(
            second, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: secondCredentials)
        #expect(try String(contentsOfFile: tls + "/ca-cert.pem", encoding: .utf8) == secondCredentials.caCertificate)
        try await destination.abortIncoming(second.id)
    }

    @Test("the source refuses a move whose TLS does not match the destination's offer, before anything is sent")
    func tlsMismatch() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        var configuration = LibvirtDriver.Configuration(uri: "test:///default", stateDirectory: root + "/a")
        configuration.migrationTLSDirectory = root
        let driver = LibvirtDriver(configuration: configuration) { _ in try await TestLibvirt.placeholder.image() }
        let vm = spec("lv-tls-mismatch")
        try await driver.create(vm)
        try await driver.start(vm.id)
        let record = LibvirtRecord(
            spec: vm, image: try await TestLibvirt.placeholder.image(), owner: root + "/b", disk: root + "/disk.qcow2",
            serialLog: root + "/b/serial.log")
        let credentials = try MigrationAuthority().issue(migration: .generate(), listener: .destination, address: "127.0.0.1")
            .source
        for (tls, given) in [(true, nil), (false, credentials)] {
            let offer = try LibvirtIncoming(
                peerURI: "test+tcp://127.0.0.1/default", migrationURI: "tcp://127.0.0.1", record: record, tls: tls
            ).encoded()
            let error = await #expect(throws: VireoError.self) {
                _ = try await driver.migrate(vm.id, to: offer, credentials: given) { _ in }
            }
            #expect(error?.code == .failedPrecondition && error?.message.contains("TLS") == true, "\(String(describing: error))")
        }
        #expect(!FileManager.default.fileExists(atPath: root + "/client-key.pem"))
        #expect(try await driver.status().first?.state == .running)
        #expect(
            LibvirtDriver.migrationFlags(mode: .live, storage: .copy, tls: true) & VIR_MIGRATE_TLS.rawValue != 0
                && LibvirtDriver.migrationFlags(mode: .live, storage: .copy) & VIR_MIGRATE_TLS.rawValue == 0)
        try await driver.delete(vm.id)
    }

    @Test("an order that is no libvirt destination's offer is refused before anything is sent")
    func foreignOffer() async throws {
        let root = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let driver = TestLibvirt.driver(uri: "test:///default", stateDirectory: root + "/vms")
        let vm = spec("lv-foreign")
        try await driver.create(vm)
        try await driver.start(vm.id)
        let error = await #expect(throws: VireoError.self) {
            _ = try await driver.migrate(vm.id, to: "tcp:127.0.0.1:4444") { _ in }
        }
        #expect(error?.code == .invalidArgument && error?.message.contains("tcp:127.0.0.1:4444") == true)
        #expect(try await driver.status().first?.state == .running)
        try await driver.delete(vm.id)
    }
}

/// A second libvirt "host" on this machine (`scripts/libvirt-second-host.sh`): a libvirtd with its
/// own host UUID and state in a mount namespace, started by the test that needs it and stopped
/// (its domains destroyed, its directory removed) when the test ends.
struct SecondLibvirtHost {
    let directory: String
    let uri: String

    static var script: String { FileManager.default.currentDirectoryPath + "/scripts/libvirt-second-host.sh" }

    static func start() async throws -> SecondLibvirtHost {
        // A short path: the daemon's socket path must fit in a sockaddr_un (108 bytes).
        let directory = "/tmp/vireo-lv2-" + UUID().uuidString.prefix(8).lowercased()
        let started = ContinuousClock.now
        let uri = try await HostTool.text("bash", [script, "start", directory])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        print("libvirt migration test: second libvirtd at \(uri) answered after \(ContinuousClock.now - started)")
        return SecondLibvirtHost(directory: directory, uri: uri)
    }

    func stop() async throws {
        try await HostTool.run("bash", [Self.script, "stop", directory])
    }

    /// Its libvirtd's `migrate_tls_x509_cert_dir`.
    var tlsDirectory: String { directory + "/tls" }
}

extension RealQEMU {
    /// Two libvirt hosts on one machine: the system libvirtd and a second one of this test's.
    @Suite("libvirt live migration (qemu:///system and a second libvirtd)")
    struct LibvirtMigrationQEMUTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }

        func driver(
            uri: String, root: String, name: String, mode: LibvirtDriver.MigrationMode = .auto, sharedDisks: Bool = true,
            tlsDirectory: String? = nil
        ) -> LibvirtDriver {
            var configuration = LibvirtDriver.Configuration(uri: uri, stateDirectory: "\(root)/\(name)")
            configuration.migrationMode = mode
            configuration.migrationTLSDirectory = tlsDirectory
            configuration.sharedDisks = sharedDisks ? root + "/disks" : nil
            configuration.stopTimeout = .seconds(20)
            return LibvirtDriver(configuration: configuration) { name in try await TestLibvirt.realImage(name) }
        }

        func status(_ address: String) async throws -> JSONValue {
            let response = try await HTTPClient.shared.execute(
                HTTPClientRequest(url: "http://\(address)/status"), timeout: .seconds(10))
            return try JSONDecoder().decode(JSONValue.self, from: Data(buffer: try await response.body.collect(upTo: 1 << 16)))
        }

        /// After a failed move: the VM goes from both hosts (a half-made incoming copy included),
        /// then the second libvirtd and the test's directory.
        func discard(_ vm: InstanceSpec, on drivers: [LibvirtDriver], second: SecondLibvirtHost, root: String) async {
            for driver in drivers {
                try? await driver.abortIncoming(vm.id)
                try? await driver.delete(vm.id)
            }
            try? await second.stop()
            try? FileManager.default.removeItem(atPath: root)
        }

        func webGuest() -> InstanceSpec {
            InstanceSpec(
                id: .generate(), name: "lv-mig-\(UUID().uuidString.prefix(6).lowercased())", image: "web", cpus: 1,
                memoryMiB: 256)
        }

        @Test(
            "a running web guest moves to the other libvirt host and keeps running: same boot, uptime goes on",
            arguments: [LibvirtDriver.MigrationMode.live, .paused])
        func migrate(mode: LibvirtDriver.MigrationMode) async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            let root = temporaryDirectory()
            let second = try await SecondLibvirtHost.start()
            let source = driver(uri: "qemu:///system", root: root, name: "a", mode: mode)
            let destination = driver(uri: second.uri, root: root, name: "b", mode: mode)
            let vm = webGuest()
            do {
                try await move(vm, from: source, to: destination, root: root, mode: mode)
            } catch {
                await discard(vm, on: [source, destination], second: second, root: root)
                throw error
            }
            try await second.stop()
            try FileManager.default.removeItem(atPath: root)
        }

        private func move(
            _ vm: InstanceSpec, from source: LibvirtDriver, to destination: LibvirtDriver, root: String,
            mode: LibvirtDriver.MigrationMode
        ) async throws {
            #expect(source.capabilities.contains(.liveMigration))
            try await source.create(vm)
            #expect(FileManager.default.fileExists(atPath: "\(root)/disks/\(vm.id).qcow2"))
            try await source.start(vm.id)
            let running = try await settle(source, vm.id, to: .running, tick: tick)
            let before = try await status(try #require(running.address))

            let uri = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1")
            #expect(try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1") == uri)
            #expect(try await destination.status().first?.state == .starting)
            let seen = ProgressLog()
            let started = ContinuousClock.now
            let stats = try await source.migrate(vm.id, to: uri) { seen.append($0) }
            let elapsed = ContinuousClock.now - started
            let last = seen.all.last
            print(
                "libvirt \(mode) migration of a 256 MiB web guest (TCG): total \(stats.totalTimeMs) ms, downtime "
                    + "\(stats.downtimeMs) ms, setup \(stats.setupTimeMs.map(String.init) ?? "?") ms, "
                    + "\(stats.transferredBytes) bytes sent; migrate() took \(elapsed); \(seen.all.count) progress reports, "
                    + "last \(last.map { "\($0.transferredBytes)/\($0.totalBytes) bytes" } ?? "none")")
            #expect(stats.totalTimeMs > 0 && stats.downtimeMs > 0)
            #expect(stats.transferredBytes > 1 << 20 && stats.transferredBytes < UInt64(vm.memoryMiB + 64) << 20)
            #expect(stats.mode == mode.resolved(for: .qemu))
            // A paused copy of an idle guest is over in a few polls (none were seen in it here).
            if mode == .live { #expect(!seen.all.isEmpty, "no progress was reported while the migration ran") }
            #expect(seen.all.allSatisfy { $0.totalBytes >= UInt64(vm.memoryMiB) << 20 })
            try await source.release(vm.id)
            #expect(try await source.status().isEmpty)
            let systemDomains = try await HostTool.text("virsh", ["-c", "qemu:///system", "list", "--all", "--name"])
            #expect(!systemDomains.contains("vireo-\(vm.name)"), "the source still has the domain: \(systemDomains)")

            // The destination adopts the arrived domain (its lifecycle events and listing show it).
            let arrived = try await settle(destination, vm.id, to: .running, tick: tick)
            try await destination.finishIncoming(vm.id)
            let address = try #require(arrived.address)
            #expect(address != running.address, "the destination forwards its own port")
            let after = try await status(address)
            #expect(after["bootId"] == before["bootId"])
            #expect((after["uptimeSeconds"]?.doubleValue ?? 0) > (before["uptimeSeconds"]?.doubleValue ?? .infinity))
            // A restarted destination agent finds it as its own.
            let recovered = try await driver(uri: destination.configuration.uri, root: root, name: "b").recover()
            #expect(recovered.map(\.id) == [vm.id])
            try await destination.delete(vm.id)
            #expect(!FileManager.default.fileExists(atPath: "\(root)/disks/\(vm.id).qcow2"))
        }

        @Test(
            "without shared storage a web guest moves with a copy of its disk, written to during the move; the source's disk goes",
            arguments: [LibvirtDriver.MigrationMode.live, .paused])
        func migrateCopyingDisk(mode: LibvirtDriver.MigrationMode) async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            let root = temporaryDirectory()
            let second = try await SecondLibvirtHost.start()
            let source = driver(uri: "qemu:///system", root: root, name: "a", mode: mode, sharedDisks: false)
            let destination = driver(uri: second.uri, root: root, name: "b", mode: mode, sharedDisks: false)
            var vm = webGuest()
            vm.diskMiB = 256
            do {
                try await copyUnderWrites(vm, from: source, to: destination, root: root, mode: mode)
            } catch {
                // What the destination's libvirtd saw, before the daemon and its logs go.
                let seen = try? await HostTool.text(
                    "bash",
                    [
                        "-c",
                        "virsh -c '\(second.uri)' list --all; virsh -c '\(second.uri)' domstate --reason vireo-\(vm.name); "
                            + "tail -20 \(second.directory)/log/qemu/*.log",
                    ])
                print("libvirt copy-storage test failed; the destination's libvirtd: \(seen ?? "unreadable")")
                await discard(vm, on: [source, destination], second: second, root: root)
                throw error
            }
            try await second.stop()
            try FileManager.default.removeItem(atPath: root)
        }

        private func copyUnderWrites(
            _ vm: InstanceSpec, from source: LibvirtDriver, to destination: LibvirtDriver, root: String,
            mode: LibvirtDriver.MigrationMode
        ) async throws {
            #expect(source.capabilities.contains(.storageMigration) && destination.configuration.sharedDisks == nil)
            try await source.create(vm)
            let sourceDisk = "\(root)/a/\(vm.id)/disk.qcow2"
            #expect(FileManager.default.fileExists(atPath: sourceDisk))
            try await source.start(vm.id)
            let running = try #require(try await settle(source, vm.id, to: .running, tick: tick).address)
            let before = try await status(running)

            let uri = try await destination.prepareIncoming(vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .copy)
            #expect(FileManager.default.fileExists(atPath: "\(root)/b/\(vm.id)/disk.qcow2"))
            // 32 MiB written past the guest's filesystem over two seconds, each MiB synced to the disk:
            // while the disk is copied, and on until the memory goes.
            _ = try await guest(running, "/fill?mib=32&rate=16", post: true)
            let seen = ProgressLog()
            let stats = try await source.migrate(vm.id, to: uri) { seen.append($0) }
            let disk = seen.all.last { $0.storageTotalBytes != nil }
            print(
                "libvirt copy-storage migration of a web guest with a 256 MiB disk (TCG, \(mode)): total "
                    + "\(stats.totalTimeMs) ms, downtime \(stats.downtimeMs) ms, disk \(stats.storageBytes ?? 0) bytes in "
                    + "\(stats.storageTimeMs ?? 0) ms, memory \(stats.transferredBytes) bytes; \(seen.all.count) progress "
                    + "reports, last disk \(disk.map { "\($0.storageCopiedBytes ?? 0)/\($0.storageTotalBytes ?? 0)" } ?? "none")")
            #expect((stats.storageBytes ?? 0) > 64 << 20)
            // libvirt does not say when the disk copy ended: no time is made up for it.
            #expect(stats.storageTimeMs == nil)
            #expect(stats.downtimeMs > 0 && stats.transferredBytes > 1 << 20)
            #expect(stats.mode == mode.resolved(for: .qemu))
            #expect(seen.all.contains { ($0.storageTotalBytes ?? 0) >= UInt64(256) << 20 }, "no disk progress was reported")

            let arrived = try #require(try await settle(destination, vm.id, to: .running, tick: tick).address)
            try await destination.finishIncoming(vm.id)
            try await source.release(vm.id)
            #expect(try await source.status().isEmpty)
            #expect(!FileManager.default.fileExists(atPath: sourceDisk), "the source's copy of the disk is removed")
            let systemDomains = try await HostTool.text("virsh", ["-c", "qemu:///system", "list", "--all", "--name"])
            #expect(!systemDomains.contains("vireo-\(vm.name)"), "the source still has the domain: \(systemDomains)")

            let after = try await status(arrived)
            #expect(after["bootId"] == before["bootId"])
            #expect((after["uptimeSeconds"]?.doubleValue ?? 0) > (before["uptimeSeconds"]?.doubleValue ?? .infinity))
            try await expectDiskWrites(at: arrived, mib: 32)
            // The copy stands alone at the destination, in its own directory.
            let info = try await HostTool.text("qemu-img", ["info", "-U", "--output=json", "\(root)/b/\(vm.id)/disk.qcow2"])
            #expect(!info.contains("backing-filename"), "\(info)")
            try await destination.delete(vm.id)
            #expect(!FileManager.default.fileExists(atPath: "\(root)/b/\(vm.id)"))
        }

        @Test(
            "over QEMU's TLS between two libvirt hosts: a source with the credentials of another move cannot send the guest, which keeps running; the move's own credentials can"
        )
        func migrateOverTLS() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            let root = temporaryDirectory()
            // Two daemons of the test's own: each is given its certificates through its own directory.
            let first = try await SecondLibvirtHost.start()
            let second: SecondLibvirtHost
            do { second = try await SecondLibvirtHost.start() } catch {
                try? await first.stop()
                throw error
            }
            let source = driver(uri: first.uri, root: root, name: "a", tlsDirectory: first.tlsDirectory)
            let destination = driver(uri: second.uri, root: root, name: "b", tlsDirectory: second.tlsDirectory)
            let vm = webGuest()
            do {
                try await source.create(vm)
                try await source.start(vm.id)
                let running = try await settle(source, vm.id, to: .running, tick: tick)
                let before = try await status(try #require(running.address))
                let authority = MigrationAuthority()

                // A rogue source with credentials this controller issued for another move (as one
                // of its hosts would hold): it trusts this move's authority and knows the
                // destination's name (QEMU checks its own certificate when the object is made, so
                // it trusts its own move's authority too). libvirt sets no tls-authz: the
                // destination's QEMU checks only who issued the certificate — another move's
                // authority, which it does not trust.
                let refusedMove = try authority.issue(migration: .generate(), listener: .destination, address: "127.0.0.1")
                let waiting = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared,
                    credentials: refusedMove.destination)
                #expect(try LibvirtIncoming(decoding: waiting).tls)
                let stranger = try authority.issue(migration: .generate(), listener: .destination, address: "127.0.0.1").source
                let rogue = MigrationCredentials(
                    caCertificate: refusedMove.source.caCertificate + "\n" + stranger.caCertificate,
                    certificate: stranger.certificate, privateKey: stranger.privateKey, peer: stranger.peer)
                let refused = await #expect(throws: VireoError.self) {
                    _ = try await source.migrate(vm.id, to: waiting, credentials: rogue) { _ in }
                }
                print("libvirt TLS migration with a rogue source certificate: \(refused?.message ?? "no error")")
                #expect(refused?.code == .unavailable && refused?.message.contains("keeps running here") == true)
                #expect(refused?.message.contains("TLS") == true, "the stream was TLS: \(refused?.message ?? "")")
                // It differs from the move below only in its own certificate (its QEMU accepted
                // that certificate and the destination's): the destination's QEMU ended the TLS
                // session when it saw it. (That QEMU logs no reason; libvirt then removes it.)
                let stayed = try await status(try #require(running.address))
                #expect(stayed["bootId"] == before["bootId"])
                #expect(try await source.status().first { $0.id == vm.id }?.state == .running)
                try await destination.abortIncoming(vm.id)
                let leftover = try await HostTool.text("virsh", ["-c", second.uri, "list", "--all", "--name"])
                #expect(!leftover.contains("vireo-\(vm.name)"), "the destination kept a domain: \(leftover)")

                // The move's own credentials: the guest moves, its TLS files in each daemon's directory.
                let move = try authority.issue(migration: .generate(), listener: .destination, address: "127.0.0.1")
                let offer = try await destination.prepareIncoming(
                    vm, guestAddress: nil, listenAddress: "127.0.0.1", storage: .shared, credentials: move.destination)
                let stats = try await source.migrate(vm.id, to: offer, credentials: move.source) { _ in }
                print(
                    "libvirt migration over TLS (256 MiB web guest, TCG): total \(stats.totalTimeMs) ms, downtime "
                        + "\(stats.downtimeMs) ms, \(stats.transferredBytes) bytes")
                #expect(stats.transferredBytes > 1 << 20)
                #expect(FileManager.default.fileExists(atPath: first.tlsDirectory + "/client-key.pem"))
                #expect(FileManager.default.fileExists(atPath: second.tlsDirectory + "/server-key.pem"))
                try await source.release(vm.id)
                let arrived = try await settle(destination, vm.id, to: .running, tick: tick)
                try await destination.finishIncoming(vm.id)
                let after = try await status(try #require(arrived.address))
                #expect(after["bootId"] == before["bootId"])
                try await destination.delete(vm.id)
            } catch {
                for driver in [source, destination] {
                    try? await driver.abortIncoming(vm.id)
                    try? await driver.delete(vm.id)
                }
                try? await first.stop()
                try? await second.stop()
                try? FileManager.default.removeItem(atPath: root)
                throw error
            }
            try await first.stop()
            try await second.stop()
            try FileManager.default.removeItem(atPath: root)
        }

        @Test("a migration to an unreachable destination fails with libvirt's reason; the VM keeps running at the source")
        func unreachableDestination() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            let root = temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: root) }
            let source = driver(uri: "qemu:///system", root: root, name: "a")
            let vm = webGuest()
            try await source.create(vm)
            do {
                try await source.start(vm.id)
                let running = try await settle(source, vm.id, to: .running, tick: tick)
                let before = try await status(try #require(running.address))
                // What a destination would offer, but its libvirtd is gone.
                var record = LibvirtRecord(
                    spec: vm, image: try await TestLibvirt.realImage("web"), owner: root + "/b",
                    disk: "\(root)/disks/\(vm.id).qcow2", serialLog: "\(root)/b/\(vm.id)/serial.log")
                record.hostPort = try LoopbackPort.free(excluding: [])
                let gone = "qemu+unix:///system?socket=\(root)/gone/libvirt-sock"
                let offer = try LibvirtIncoming(peerURI: gone, migrationURI: "tcp://127.0.0.1", record: record).encoded()
                let error = await #expect(throws: VireoError.self) { _ = try await source.migrate(vm.id, to: offer) { _ in } }
                print("libvirt migration test: unreachable destination: \(String(describing: error))")
                #expect(error?.code == .unavailable)
                #expect(error?.message.contains(gone) == true && error?.message.contains("keeps running here") == true)
                #expect(error?.message.contains("libvirt-sock") == true, "libvirt's reason is missing")
                #expect(try await source.status().first?.state == .running)
                let after = try await status(try #require(running.address))
                #expect(after["bootId"] == before["bootId"])
            } catch {
                try? await source.delete(vm.id)
                throw error
            }
            try await source.delete(vm.id)
            let domains = try await HostTool.text("virsh", ["-c", "qemu:///system", "list", "--all", "--name"])
            #expect(!domains.contains("vireo-\(vm.name)"))
        }
    }
}

extension RealQEMU {
    /// The whole path: the controller orders the move, the agents drive their libvirt drivers.
    @Suite("libvirt live migration through the controller and agents")
    struct LibvirtMigrationClusterTests {
        @Test("the controller moves a web guest between two libvirt hosts; the migration is recorded with its figures")
        func throughAgents() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            let root = temporaryDirectory()
            let second = try await SecondLibvirtHost.start()
            let controller = try await Controller.open(store: try SQLiteStore(), settings: .steady)
            let loops = controllerLoops(controller)
            let hosts = LibvirtMigrationQEMUTests()
            var agents: [Task<Void, any Error>] = []
            func join(_ name: String, uri: String) {
                let agent = Agent(
                    settings: .init(name: name, address: "127.0.0.1", heartbeatInterval: .milliseconds(100)),
                    driver: hosts.driver(uri: uri, root: root, name: name), link: controller)
                agents.append(Task { try await agent.run() })
            }
            let name = "lv-agent-\(UUID().uuidString.prefix(6).lowercased())"
            do {
                // Only the system host first, so that the VM starts there: the second daemon cannot
                // send back to qemu:///system (docs/libvirt-driver.md).
                join("lv-a", uri: "qemu:///system")
                try await eventually("lv-a registered", within: 30) {
                    await controller.listHosts().items.contains { $0.name == "lv-a" && $0.state == .ready }
                }
                _ = try await controller.createVM(VMSpec(name: name, image: "web", cpus: 1, memoryMiB: 256))
                try await eventually("\(name) running", within: 120) { try await controller.vm(name).state == .running }
                let placed = try await controller.vm(name)
                #expect(placed.host == "lv-a")
                let before = try await hosts.status(try #require(placed.address))
                join("lv-b", uri: second.uri)
                try await eventually("lv-b registered", within: 30) {
                    await controller.listHosts().items.contains { $0.name == "lv-b" && $0.state == .ready }
                }
                let started = try await controller.migrateVM(name, to: "lv-b")
                try await eventually("migration settled", within: 120) {
                    let state = try await controller.migration(started.id.rawValue).state
                    return state == .completed || state == .failed
                }
                let settled = try await controller.migration(started.id.rawValue)
                #expect(settled.state == .completed, "\(settled.message ?? "")")
                // The destination's guest runs (libvirt's finish phase) before the source's call returns
                // (its confirm phase): the controller may complete the move on the destination's word,
                // and the source's figures follow.
                try await eventually("the source's figures recorded", within: 15) {
                    try await controller.migration(started.id.rawValue).stats != nil
                }
                let stats = try #require(try await controller.migration(started.id.rawValue).stats)
                print(
                    "libvirt migration through the agents: \(stats.mode.map { "\($0)" } ?? "?"), total "
                        + "\(stats.totalTimeMs) ms, downtime \(stats.downtimeMs) ms, \(stats.transferredBytes) bytes")
                #expect(stats.downtimeMs > 0 && stats.transferredBytes > 1 << 20)
                try await eventually("\(name) running on lv-b", within: 30) {
                    let vm = try await controller.vm(name)
                    return vm.host == "lv-b" && vm.state == .running && vm.address != nil && vm.address != placed.address
                }
                let moved = try await controller.vm(name)
                let after = try await hosts.status(try #require(moved.address))
                #expect(after["bootId"] == before["bootId"])
                _ = try await controller.deleteVM(name)
                try await eventually("\(name) deleted", within: 60) {
                    controller.listVMs().items.allSatisfy { $0.name != name }
                }
            } catch {
                _ = try? await controller.deleteVM(name)
                try? await eventually("\(name) deleted", within: 60) {
                    controller.listVMs().items.allSatisfy { $0.name != name }
                }
                for agent in agents { agent.cancel() }
                loops.cancel()
                try? await second.stop()
                try? FileManager.default.removeItem(atPath: root)
                throw error
            }
            for agent in agents { agent.cancel() }
            loops.cancel()
            try await second.stop()
            try FileManager.default.removeItem(atPath: root)
            let domains = try await HostTool.text("virsh", ["-c", "qemu:///system", "list", "--all", "--name"])
            #expect(!domains.contains("vireo-\(name)"))
        }
    }
}

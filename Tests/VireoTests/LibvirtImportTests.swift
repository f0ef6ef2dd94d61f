import CLibvirt
import Foundation
import Testing
import VireoDriver
import VireoModel

@testable import VireoDriverLibvirt

/// Domain XML fixtures: a domain Vireo can adopt, and variations of it it cannot.
enum ImportFixtures {
    static let uuid = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"

    /// A running qemu domain with one file disk, a CD-ROM, a network interface and a serial file.
    static func domain(
        type: String = "qemu", name: String = "legacy-web", memory: String = "<memory unit='KiB'>524288</memory>",
        vcpu: String = "<vcpu placement='static' current='1'>2</vcpu>", os: String = "", devices: String = ""
    ) -> String {
        """
        <domain type='\(type)' id='7'>
          <name>\(name)</name>
          <uuid>\(uuid)</uuid>
          \(memory)
          <currentMemory unit='KiB'>262144</currentMemory>
          \(vcpu)
          <os><type arch='x86_64' machine='pc'>hvm</type>\(os)</os>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/libvirt/images/legacy-web.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
            <interface type='network'><source network='default'/></interface>
            <serial type='file'><source path='/var/log/legacy-web.log'/><target port='0'/></serial>
            \(devices)
          </devices>
        </domain>
        """
    }

    static func convert(_ xml: String, _ facts: LibvirtDomainConversion.Facts = .init(active: true))
        -> LibvirtDomainConversion
    {
        LibvirtDomainConversion.convert(xml: xml, facts: facts)
    }
}

@Suite("libvirt import: converting domains")
struct LibvirtImportConversionTests {
    @Test("a supported domain becomes a VM with its UUID (lowercase), name, vCPUs, memory, disk and console file")
    func supported() {
        let converted = ImportFixtures.convert(ImportFixtures.domain())
        #expect(converted.refusals == [])
        #expect(converted.importable)
        #expect(converted.uuid == ImportFixtures.uuid.lowercased())
        #expect(converted.domain == "legacy-web")
        #expect(converted.running)
        #expect(converted.cpus == 2, "the maximum vCPUs, not the current 1")
        #expect(converted.memoryMiB == 512, "<memory>, not the ballooned <currentMemory>")
        #expect(converted.disk == "/var/lib/libvirt/images/legacy-web.qcow2")
        #expect(converted.serialLog == "/var/log/legacy-web.log")
        let record = converted.record(owner: "/state/vms")
        #expect(record.spec.id.rawValue == converted.uuid && record.spec.image == "imported")
        #expect(record.isImported && record.owner == "/state/vms" && record.hostPort == nil)
        let stopped = ImportFixtures.convert(ImportFixtures.domain(type: "kvm"), .init(active: false))
        #expect(stopped.importable && !stopped.running)
    }

    @Test("a domain without a disk (direct kernel boot) is accepted, with no disk")
    func noDisk() {
        let xml = ImportFixtures.domain().replacingOccurrences(
            of: "<disk type='file' device='disk'>", with: "<disk type='file' device='cdrom'>")
        let converted = ImportFixtures.convert(xml)
        #expect(converted.importable, "\(converted.refusals)")
        #expect(converted.disk == nil)
    }

    @Test("memory units are read as libvirt reads them and rounded up to whole MiB; KiB without a unit")
    func units() {
        let cases: [(value: String, unit: String, bytes: UInt64?)] = [
            ("524288", "KiB", 512 << 20), ("524288", "k", 512 << 20), ("512", "M", 512 << 20), ("512", "mib", 512 << 20),
            ("2", "GiB", 2 << 30), ("1", "G", 1 << 30), ("2", "GB", 2_000_000_000), ("1000", "KB", 1_000_000),
            ("4096", "bytes", 4096), ("4096", "b", 4096), ("1", "TiB", 1 << 40),
            ("1", "xB", nil), ("1", "KiBs", nil), ("-1", "KiB", nil), ("1.5", "GiB", nil), ("20", "EiB", nil),
        ]
        for (value, unit, bytes) in cases {
            #expect(LibvirtDomainConversion.bytes(value, unit: unit) == bytes, "\(value) \(unit)")
        }
        func memory(_ element: String) -> Int { ImportFixtures.convert(ImportFixtures.domain(memory: element)).memoryMiB }
        #expect(memory("<memory>1048576</memory>") == 1024)
        #expect(memory("<memory unit='GB'>2</memory>") == 1908, "2e9 bytes are 1907.3 MiB, rounded up")
        #expect(memory("<memory unit='b'>1</memory>") == 1)
        let bad = ImportFixtures.convert(ImportFixtures.domain(memory: "<memory unit='parsecs'>3</memory>"))
        #expect(bad.refusals == ["<memory unit='parsecs'>3</memory> is not a memory size"])
    }

    /// Each domain Vireo cannot adopt, with what its one refusal must name.
    static let refused: [(what: String, xml: String, facts: LibvirtDomainConversion.Facts, names: [String])] = [
        ("xen", ImportFixtures.domain(type: "xen"), .init(active: true), ["<domain type='xen'>"]),
        ("transient", ImportFixtures.domain(), .init(active: true, persistent: false), ["transient"]),
        (
            "two disks",
            ImportFixtures.domain(
                devices: "<disk type='file' device='disk'><source file='/d2.img'/><target dev='vdb'/></disk>"),
            .init(active: true), ["2 disks", "/d2.img"]
        ),
        (
            "block disk", ImportFixtures.domain(devices: "<disk type='block'><source dev='/dev/sdb'/><target dev='vdb'/></disk>"),
            .init(active: true), ["<disk type='block'>", "vdb"]
        ),
        (
            "network disk",
            ImportFixtures.domain(devices: "<disk type='network' device='disk'><target dev='vdc'/></disk>"),
            .init(active: true), ["<disk type='network'>", "vdc"]
        ),
        (
            "lun", ImportFixtures.domain(devices: "<disk type='block' device='lun'><target dev='sda'/></disk>"),
            .init(active: true), ["<disk device='lun'>", "sda"]
        ),
        (
            "hostdev", ImportFixtures.domain(devices: "<hostdev mode='subsystem' type='pci'/>"), .init(active: true),
            ["<hostdev>"]
        ),
        (
            "redirdev", ImportFixtures.domain(devices: "<redirdev bus='usb' type='spicevmc'/>"), .init(active: true),
            ["<redirdev>"]
        ),
        ("nvram", ImportFixtures.domain(os: "<nvram>/var/lib/nvram/x_VARS.fd</nvram>"), .init(active: true), ["<nvram>"]),
        ("snapshots", ImportFixtures.domain(), .init(active: true, snapshots: 2), ["2 snapshots"]),
        ("managed save", ImportFixtures.domain(), .init(active: false, managedSave: true), ["managed save"]),
        ("bad name", ImportFixtures.domain(name: "Legacy_Web"), .init(active: true), ["<name>", "'Legacy_Web'"]),
        ("managed", ImportFixtures.domain(), .init(active: true, vireoMetadata: "<vireo:vm/>"), ["already managed by Vireo"]),
        ("no vcpu", ImportFixtures.domain(vcpu: ""), .init(active: true), ["<vcpu>"]),
        ("no memory", ImportFixtures.domain(memory: ""), .init(active: true), ["<memory>"]),
        ("not a domain", "<network><name>x</name></network>", .init(active: true), ["<domain>"]),
        ("not XML", "<domain", .init(active: true), ["does not parse"]),
    ]

    @Test("each domain Vireo cannot represent is refused with the element or fact named", arguments: 0..<refused.count)
    func refusals(_ index: Int) {
        let (what, xml, facts, names) = Self.refused[index]
        let converted = ImportFixtures.convert(xml, facts)
        #expect(!converted.importable, "\(what)")
        #expect(converted.refusals.count == 1, "\(what): \(converted.refusals)")
        for name in names {
            #expect(converted.refusals.first?.contains(name) == true, "\(what): \(converted.refusals) should name \(name)")
        }
    }

    @Test("every reason is given at once, not only the first")
    func allReasons() {
        let converted = ImportFixtures.convert(
            ImportFixtures.domain(type: "lxc", name: "Bad", devices: "<hostdev mode='subsystem' type='usb'/>"),
            .init(active: true, persistent: false))
        #expect(converted.refusals.count == 4, "\(converted.refusals)")
    }
}

@Suite("libvirt import: the driver takes adopted domains in (test:///default)")
struct LibvirtImportAdoptionTests {
    /// Defines (and starts) a test-hypervisor domain the way someone else's tooling would, with a
    /// real disk file; returns its UUID. The connection must stay open: the test hypervisor forgets
    /// its domains when its last connection in the process closes.
    static func define(_ name: String, disk: String, start: Bool, on connection: LibvirtConnection) throws -> String {
        try Data("not really a disk".utf8).write(to: URL(fileURLWithPath: disk))
        let uuid = try connection.define(
            xml: """
                <domain type='test'>
                  <name>\(name)</name>
                  <memory unit='MiB'>256</memory>
                  <vcpu>2</vcpu>
                  <os><type>hvm</type></os>
                  <devices>
                    <disk type='file' device='disk'><source file='\(disk)'/><target dev='vda' bus='virtio'/></disk>
                  </devices>
                </domain>
                """)
        if start {
            try connection.withDomain(uuid) { domain throws in
                guard virDomainCreate(domain) == 0 else { throw LibvirtConnection.lastError("starting \(name)") }
            }
        }
        return uuid
    }

    static func domainID(_ uuid: String, on connection: LibvirtConnection) throws -> UInt32 {
        try connection.withDomain(uuid) { virDomainGetID($0) }
    }

    @Test("an adopted running domain is listed by its UUID, stops, starts and is undefined; its disk file stays")
    func lifecycle() async throws {
        let keep = try LibvirtConnection(uri: "test:///default")
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let name = "imp-\(UUID().uuidString.prefix(6).lowercased())"
        let uuid = try Self.define(name, disk: directory + "/disk.img", start: true, on: keep)
        let idBefore = try Self.domainID(uuid, on: keep)
        let state = directory + "/vms"
        let driver = TestLibvirt.driver(uri: "test:///default", stateDirectory: state)
        let other = TestLibvirt.driver(uri: "test:///default", stateDirectory: directory + "/other")
        #expect(try await driver.status().isEmpty, "nothing is taken before it is adopted")

        let source = try LibvirtImportSource(uri: "test:///default")
        let conversion = try #require(try source.conversions(of: [name]).first)
        #expect(conversion.importable && conversion.running && conversion.uuid == uuid, "\(conversion.refusals)")
        #expect(conversion.cpus == 2 && conversion.memoryMiB == 256)
        try source.adopt(conversion, owner: state)
        #expect(try source.isManaged(conversion))
        #expect(try source.conversions(of: [name]).first?.refusals == [LibvirtDomainConversion.alreadyManaged])
        #expect(try source.conversions(of: []).allSatisfy { $0.uuid != uuid }, "a managed domain is not offered again")
        let again = #expect(throws: VireoError.self) { try source.adopt(conversion, owner: state) }
        #expect(again?.code == .conflict)

        let status = try #require(try await driver.status().first)
        #expect(status.id.rawValue == uuid && status.name == name && status.state == .running)
        #expect(status.bootMs == nil)
        #expect(try Self.domainID(uuid, on: keep) == idBefore, "the domain was not restarted")
        #expect(try await other.status().isEmpty, "another agent's driver leaves it alone")
        #expect(FileManager.default.fileExists(atPath: "\(state)/\(uuid)"), "the per-VM directory is made on first sight")
        // The agent's reconcile may call create for it: that is the adopted domain, not a new one.
        let spec = InstanceSpec(id: VMID(uuid), name: name, image: "imported", cpus: 2, memoryMiB: 256)
        try await driver.create(spec)
        try await driver.start(VMID(uuid))
        #expect(try Self.domainID(uuid, on: keep) == idBefore, "start of a running domain does nothing")

        try await driver.stop(VMID(uuid))
        #expect(try await driver.status().first?.state == .stopped)
        try await driver.start(VMID(uuid))
        #expect(try await driver.status().first?.state == .running, "no ready marker is awaited from an adopted guest")
        // A restarted agent re-adopts it like its own domains.
        let restarted = TestLibvirt.driver(uri: "test:///default", stateDirectory: state)
        #expect(try await restarted.recover().map(\.id) == [VMID(uuid)])

        try await driver.delete(VMID(uuid))
        #expect(keep.uuid(ofDomainNamed: name) == nil, "the domain is undefined")
        #expect(FileManager.default.fileExists(atPath: directory + "/disk.img"), "a disk Vireo did not create stays")
        #expect(!FileManager.default.fileExists(atPath: "\(state)/\(uuid)"))
        #expect(try await driver.status().isEmpty)
    }

    @Test("a domain whose metadata is removed again (an import the controller refused) is forgotten")
    func released() async throws {
        let keep = try LibvirtConnection(uri: "test:///default")
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let name = "imp-\(UUID().uuidString.prefix(6).lowercased())"
        let uuid = try Self.define(name, disk: directory + "/disk.img", start: false, on: keep)
        defer {
            try? keep.withDomain(uuid) { domain in _ = virDomainUndefine(domain) }
        }
        let state = directory + "/vms"
        let driver = TestLibvirt.driver(uri: "test:///default", stateDirectory: state)
        let source = try LibvirtImportSource(uri: "test:///default")
        let conversion = try #require(try source.conversions(of: [name]).first)
        #expect(!conversion.running)
        try source.adopt(conversion, owner: state)
        #expect(try await driver.status().map(\.state) == [.stopped])
        try source.release(conversion)
        #expect(try !source.isManaged(conversion))
        #expect(try await driver.status().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(state)/\(uuid)"))
        #expect(keep.uuid(ofDomainNamed: name) == uuid, "the domain itself is untouched")
    }

    @Test("when the controller refuses, every domain's metadata is removed again and the error is the controller's")
    func refusedImportIsUndone() async throws {
        let keep = try LibvirtConnection(uri: "test:///default")
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let names = (0..<2).map { _ in "imp-\(UUID().uuidString.prefix(6).lowercased())" }
        let uuids = try names.enumerated().map { index, name in
            try Self.define(name, disk: directory + "/disk\(index).img", start: index == 0, on: keep)
        }
        defer {
            for uuid in uuids {
                try? keep.withDomain(uuid) { domain in
                    _ = virDomainDestroy(domain)
                    _ = virDomainUndefine(domain)
                }
            }
        }
        let state = directory + "/vms"
        let driver = TestLibvirt.driver(uri: "test:///default", stateDirectory: state)
        let source = try LibvirtImportSource(uri: "test:///default")
        let conversions = try source.conversions(of: names)
        let error = await #expect(throws: VireoError.self) {
            try await source.adoptAll(conversions, owner: state) { () async throws -> Int in
                // Meanwhile the agent may have taken them in: it must let them go again.
                #expect(try await driver.status().count == 2)
                #expect(try conversions.allSatisfy { try source.isManaged($0) })
                throw VireoError(.conflict, "a VM named '\(names[1])' already exists")
            }
        }
        #expect(error?.code == .conflict && error?.message.contains(names[1]) == true)
        #expect(try conversions.allSatisfy { try !source.isManaged($0) })
        #expect(try await driver.status().isEmpty)
        #expect(try source.conversions(of: names).allSatisfy(\.importable), "they can be imported later")

        // A domain that cannot be written (gone meanwhile) undoes those written before it.
        var vanished = conversions
        vanished.append(vanished[0])
        vanished[2].uuid = UUID().uuidString.lowercased()
        let gone = await #expect(throws: VireoError.self) {
            try await source.adoptAll(vanished, owner: state) { Issue.record("recorded although a write failed") }
        }
        #expect(gone?.code == .notFound)
        #expect(try conversions.allSatisfy { try !source.isManaged($0) })
    }

    @Test("create of an imported VM whose domain is not adopted for this driver says so; nothing is built")
    func missing() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let driver = TestLibvirt.driver(uri: "test:///default", stateDirectory: directory + "/vms")
        let spec = InstanceSpec(id: .generate(), name: "gone", image: "imported", cpus: 1, memoryMiB: 128)
        let error = await #expect(throws: VireoError.self) { try await driver.create(spec) }
        #expect(error?.code == .notFound && error?.message.contains("cannot be made again") == true)
        #expect(try await driver.status().isEmpty)
    }

    @Test("an unknown domain and an unreachable libvirt are errors naming them")
    func badSource() throws {
        let source = try LibvirtImportSource(uri: "test:///default")
        let unknown = #expect(throws: VireoError.self) { _ = try source.conversions(of: ["no-such-domain"]) }
        #expect(unknown?.code == .notFound && unknown?.message.contains("'no-such-domain'") == true)
        let unreachable = #expect(throws: VireoError.self) { _ = try LibvirtImportSource(uri: "qemu+tcp://127.0.0.1:1/system") }
        #expect(unreachable?.code == .unavailable && unreachable?.message.contains("qemu+tcp://127.0.0.1:1/system") == true)
    }
}

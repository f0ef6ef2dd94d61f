import Foundation
import Testing
import VireoAPI
import VireoDriver
import VireoModel
import VireoProcess

/// `vireo import libvirt` against a `vireo up` whose agent runs the libvirt driver on
/// `test:///default`. The test hypervisor's domains live in each process: the CLI sees the
/// built-in domain `test` (a running test domain with one file disk) in its own, so these tests
/// check what the CLI converts, refuses and records — the agent taking the domain in is tested in
/// process (`LibvirtImportAdoptionTests`) and end to end on `qemu:///system` (`ImportQEMUTests`).
@Suite("Command line: vireo import libvirt", .serialized)
struct ImportCLITests {
    static let uri = "test:///default"
    static let testDomainUUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"

    @Test(
        "dry run, unknown domain, unreachable libvirt, name clash and unknown host change nothing; then the import records the VM"
    )
    func importTestDomain() async throws {
        let up = try UpProcess(driver: ["--driver", "libvirt", "--driver-opt", "uri=\(Self.uri)"])
        defer {
            up.kill(SIGTERM)
            try? FileManager.default.removeItem(atPath: up.dataDir)
        }
        let server = try await up.ready()
        func vms() async throws -> [VMView] {
            try decodeJSON([VMView].self, try await vireo(["vm", "list", "-o", "json"], server: server).stdout)
        }

        let dry = try await vireo(
            ["import", "libvirt", "--uri", Self.uri, "--domain", "test", "--dry-run", "-o", "json"], server: server)
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains(#""uuid" : "\#(Self.testDomainUUID)""#), "\(dry.stdout)")
        #expect(dry.stdout.contains(#""refusals" : ["#) && dry.stdout.contains(#""host" : "local""#))
        let table = try await vireo(["import", "libvirt", "--uri", Self.uri, "--domain", "test", "--dry-run"], server: server)
        #expect(table.stdout.hasPrefix("DOMAIN") && table.stdout.contains("would import on local"), "\(table.stdout)")
        #expect(try await vms().isEmpty, "a dry run records nothing")
        // Without --domain: every domain without Vireo's metadata (the CLI's test hypervisor has one).
        let all = try await vireo(["import", "libvirt", "--uri", Self.uri, "--dry-run", "-o", "json"], server: server)
        #expect(all.status == 0, "\(all.stderr)")
        #expect(all.stdout.components(separatedBy: #""domain" : "#).count == 2, "one domain: \(all.stdout)")
        #expect(all.stdout.contains(#""domain" : "test""#) && all.stdout.contains(#""dryRun" : true"#))

        let unknown = try await vireo(["import", "libvirt", "--uri", Self.uri, "--domain", "nope"], server: server)
        #expect(unknown.status == 3, "\(unknown.stderr)")
        #expect(unknown.stderr.contains("no domain named 'nope'"))

        let unreachable = try await vireo(
            ["import", "libvirt", "--uri", "qemu+tcp://127.0.0.1:1/system", "--domain", "test"], server: server)
        #expect(unreachable.status == 5, "\(unreachable.stderr)")
        #expect(unreachable.stderr.contains("cannot connect to libvirt at qemu+tcp://127.0.0.1:1/system"))

        let noHost = try await vireo(
            ["import", "libvirt", "--uri", Self.uri, "--domain", "test", "--host", "elsewhere"], server: server)
        #expect(noHost.status == 3 && noHost.stderr.contains("'elsewhere'"), "\(noHost.stderr)")

        // A VM named like the domain (pending: pinned to a host that does not exist).
        let taken = try await vireo(["vm", "create", "test", "--host", "nowhere"], server: server)
        #expect(taken.status == 0, "\(taken.stderr)")
        let clash = try await vireo(["import", "libvirt", "--uri", Self.uri, "--domain", "test"], server: server)
        #expect(clash.status == 4, "\(clash.stderr)")
        #expect(clash.stderr.contains("a VM named 'test' already exists"), "\(clash.stderr)")
        #expect(clash.stdout.contains("refused"), "the plan shows the refusal: \(clash.stdout)")
        #expect(try await vms().map(\.id.rawValue) != [Self.testDomainUUID])
        #expect(try await vireo(["vm", "delete", "test"], server: server).status == 0)
        try await eventually("the pending VM is gone") { try await vms().isEmpty }

        let imported = try await vireo(
            ["import", "libvirt", "--uri", Self.uri, "--domain", "test", "-o", "json"], server: server)
        #expect(imported.status == 0, "\(imported.stderr)")
        let listed = try await vms()
        #expect(listed.map(\.id.rawValue) == [Self.testDomainUUID])
        #expect(listed.first?.name == "test" && listed.first?.host == "local" && listed.first?.image == "imported")
        #expect(listed.first?.intent == .running)

        // Imported again (the CLI's own test hypervisor starts afresh): the name and the id clash.
        let twice = try await vireo(["import", "libvirt", "--uri", Self.uri, "--domain", "test"], server: server)
        #expect(twice.status == 4, "\(twice.stderr)")
        #expect(twice.stderr.contains("already has id \(Self.testDomainUUID)"), "\(twice.stderr)")
        #expect(try await vms().count == 1)
    }
}

extension RealQEMU {
    /// `vireo import libvirt` end to end on `qemu:///system`: domains someone defined (and one
    /// started) with virsh, from a Vireo-built image booted under TCG, are adopted by a `vireo up`
    /// whose agent runs the libvirt driver, without a restart, then stopped, started and deleted
    /// through Vireo.
    @Suite("vireo import libvirt (qemu:///system)")
    struct ImportQEMUTests {
        static let uri = "qemu:///system"

        static func virsh(_ arguments: [String]) async throws -> String {
            try await HostTool.text("virsh", ["-c", uri] + arguments)
        }

        static func qemuPID(_ name: String) -> String? {
            (try? String(contentsOfFile: "/run/libvirt/qemu/\(name).pid", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// The domain's Vireo metadata element as virsh shows it; empty when it has none.
        static func vireoMetadata(_ domain: String) async throws -> String {
            let output = try await HostTool.run(
                "virsh", ["-c", uri, "metadata", domain, "--uri", "https://vireo.dev/xmlns/libvirt/1"], acceptedStatus: [0, 1])
            return String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// A domain as someone's own tooling would define it: direct kernel boot of a Vireo-built
        /// image, an overlay disk and a serial file in `directory`, no Vireo metadata.
        static func defineDomain(_ name: String, image: GuestImage, in directory: String) async throws {
            let disk = "\(directory)/\(name).qcow2"
            try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", image.baseDisk, "-F", "qcow2", disk])
            let xml = """
                <domain type='qemu'>
                  <name>\(name)</name>
                  <memory unit='KiB'>131072</memory>
                  <vcpu>1</vcpu>
                  <os>
                    <type arch='x86_64' machine='pc'>hvm</type>
                    <kernel>\(image.kernel)</kernel>
                    <initrd>\(image.initrd)</initrd>
                    <cmdline>\(image.kernelCommandLine) vireo.name=\(name)</cmdline>
                  </os>
                  <features><acpi/></features>
                  <on_poweroff>destroy</on_poweroff>
                  <devices>
                    <disk type='file' device='disk'>
                      <driver name='qemu' type='qcow2'/>
                      <source file='\(disk)'/>
                      <target dev='vda' bus='virtio'/>
                    </disk>
                    <serial type='file'><source path='\(directory)/\(name).log' append='on'/><target port='0'/></serial>
                    <memballoon model='none'/>
                  </devices>
                </domain>
                """
            try xml.write(toFile: "\(directory)/\(name).xml", atomically: true, encoding: .utf8)
            _ = try await virsh(["define", "\(directory)/\(name).xml"])
        }

        @Test(
            "a running and a defined domain are imported together with their UUIDs, the running one keeping its QEMU process; both stop, start and are deleted through Vireo"
        )
        func importDomains() async throws {
            try await LibvirtQEMUTests.ensureDaemons()
            let image = try await TestLibvirt.realImage("tiny")
            let directory = temporaryDirectory()
            let suffix = UUID().uuidString.prefix(6).lowercased()
            let names = (running: "legacy-\(suffix)", defined: "legacy-def-\(suffix)")
            var up: UpProcess?
            var failure: (any Error)?
            do {
                try await Self.defineDomain(names.running, image: image, in: directory)
                try await Self.defineDomain(names.defined, image: image, in: directory)
                try await run(names, directory: directory, image: image) { up = $0 }
            } catch {
                failure = error
            }
            // Whatever happened, nothing is left behind (the domains are already gone when Vireo deleted them).
            up?.kill(SIGTERM)
            if let up { try? FileManager.default.removeItem(atPath: up.dataDir) }
            for name in [names.running, names.defined] {
                _ = try? await HostTool.run("virsh", ["-c", Self.uri, "destroy", name], acceptedStatus: [0, 1])
                _ = try? await HostTool.run("virsh", ["-c", Self.uri, "undefine", name], acceptedStatus: [0, 1])
            }
            try? FileManager.default.removeItem(atPath: directory)
            if let failure { throw failure }
        }

        func run(
            _ names: (running: String, defined: String), directory: String, image: GuestImage, started: (UpProcess) -> Void
        ) async throws {
            let name = names.running
            _ = try await Self.virsh(["start", name])
            let uuid = try await Self.virsh(["domuuid", name]).trimmingCharacters(in: .whitespacesAndNewlines)
            let definedUUID = try await Self.virsh(["domuuid", names.defined]).trimmingCharacters(in: .whitespacesAndNewlines)
            let pid = try #require(Self.qemuPID(name))
            try await eventually("the guest booted", within: 120) {
                ((try? String(contentsOfFile: "\(directory)/\(name).log", encoding: .utf8)) ?? "").contains(image.readyMarker)
            }

            let process = try UpProcess(
                driver: ["--driver", "libvirt", "--driver-opt", "uri=\(Self.uri)", "--driver-opt", "network=none"])
            started(process)
            let server = try await process.ready()
            let selection = ["--uri", Self.uri, "--domain", name, "--domain", names.defined]
            // A clash with one domain refuses both, and leaves both domains as they were.
            #expect(try await vireo(["vm", "create", names.defined, "--host", "nowhere"], server: server).status == 0)
            let clash = try await vireo(["import", "libvirt"] + selection, server: server)
            #expect(clash.status == 4 && clash.stderr.contains("a VM named '\(names.defined)' already exists"), "\(clash.stderr)")
            for domain in [name, names.defined] {
                #expect(try await Self.vireoMetadata(domain).isEmpty, "no Vireo metadata on \(domain)")
            }
            #expect(try await vireo(["vm", "delete", names.defined], server: server).status == 0)
            let dry = try await vireo(["import", "libvirt"] + selection + ["--dry-run"], server: server)
            #expect(dry.status == 0 && dry.stdout.contains("would import on local"), "\(dry.stdout)\(dry.stderr)")
            let imported = try await vireo(["import", "libvirt"] + selection, server: server)
            #expect(imported.status == 0, "\(imported.stderr)")
            print("import test:\n\(imported.stdout)")
            let written = try await Self.vireoMetadata(names.defined)
            #expect(written.contains(#""image":"imported""#), "\(written)")
            try await eventually("the imported VMs are reported", within: 30) {
                let list = try decodeJSON([VMView].self, try await vireo(["vm", "list", "-o", "json"], server: server).stdout)
                return list.first { $0.name == name }?.state == .running
                    && list.first { $0.name == names.defined }?.state == .stopped
            }
            let vm = try decodeJSON(VMView.self, try await vireo(["vm", "show", name, "-o", "json"], server: server).stdout)
            #expect(vm.id.rawValue == uuid && vm.host == "local" && vm.intent == .running)
            let defined = try decodeJSON(
                VMView.self, try await vireo(["vm", "show", names.defined, "-o", "json"], server: server).stdout)
            #expect(defined.id.rawValue == definedUUID && defined.intent == .stopped)
            #expect(try await Self.virsh(["domstate", names.defined]).contains("shut off"), "a defined domain is not started")
            #expect(Self.qemuPID(name) == pid, "the domain's QEMU process is the one it had before the import")
            let logs = try await vireo(["vm", "logs", name], server: server)
            #expect(logs.stdout.contains(image.readyMarker), "the console is the domain's serial file")
            let again = try await vireo(["import", "libvirt", "--uri", Self.uri, "--domain", name], server: server)
            #expect(again.status == 4 && again.stderr.contains("already managed"), "\(again.stderr)")

            let stop = try await vireo(["vm", "stop", name, "--wait"], server: server)
            #expect(stop.status == 0, "\(stop.stderr)")
            #expect(try await Self.virsh(["domstate", name]).contains("shut off"))
            for vm in [name, names.defined] {
                let start = try await vireo(["vm", "start", vm, "--wait"], server: server)
                #expect(start.status == 0, "\(start.stderr)")
                #expect(try await Self.virsh(["domstate", vm]).contains("running"))
                let delete = try await vireo(["vm", "delete", vm, "--wait"], server: server)
                #expect(delete.status == 0, "\(delete.stderr)")
            }
            let listed = try await Self.virsh(["list", "--all", "--name"])
            #expect(!listed.contains(name) && !listed.contains(names.defined), "the domains are undefined: \(listed)")
            #expect(FileManager.default.fileExists(atPath: "\(directory)/\(name).qcow2"), "a disk Vireo did not create stays")
        }
    }
}

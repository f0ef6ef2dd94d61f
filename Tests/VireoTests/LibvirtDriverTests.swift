import AsyncHTTPClient
import CLibvirt
import Foundation
import NIOCore
import Synchronization
import Testing
import VireoDriver
import VireoModel
import VireoProcess

@testable import VireoDriverLibvirt

/// libvirt drivers for tests. On `test:///default` no guest boots, so the image need not be a real
/// one — but `create` makes a real qcow2 overlay on its base disk, so the base is a real (empty)
/// qcow2, made once per run.
enum TestLibvirt {
    static func driver(uri: String, stateDirectory: String = temporaryDirectory() + "/vms") -> LibvirtDriver {
        var configuration = LibvirtDriver.Configuration(uri: uri, stateDirectory: stateDirectory)
        configuration.stopTimeout = .seconds(20)
        return LibvirtDriver(configuration: configuration) { name in
            uri.hasPrefix("test:") ? try await placeholder.image() : try await realImage(name)
        }
    }

    static func realImage(_ name: String) async throws -> GuestImage {
        let built = try await TestQEMU.builder.build(name)
        return GuestImage(
            kernel: built.kernel, initrd: built.initrd, baseDisk: built.baseDisk,
            kernelCommandLine: built.kernelCommandLine, readyMarker: built.readyMarker)
    }

    static let placeholder = Placeholder()

    actor Placeholder {
        var made: Task<GuestImage, any Error>?
        func image() async throws -> GuestImage {
            if let made { return try await made.value }
            let task = Task {
                let directory = temporaryDirectory()
                try await HostTool.run("qemu-img", ["create", "-q", "-f", "qcow2", directory + "/base.qcow2", "16M"])
                return GuestImage(
                    kernel: directory + "/vmlinux", initrd: directory + "/initrd", baseDisk: directory + "/base.qcow2",
                    kernelCommandLine: "console=ttyS0", readyMarker: "VIREO-READY")
            }
            made = task
            return try await task.value
        }
    }
}

@Suite("libvirt driver (test:///default)")
struct LibvirtDriverTests {
    func spec(_ name: String) -> InstanceSpec {
        InstanceSpec(id: .generate(), name: name, image: "tiny", cpus: 1, memoryMiB: 128)
    }

    @Test("a restarted driver re-adopts its domains, neither losing nor duplicating one; another agent's stay its own")
    func recoverAfterRestart() async throws {
        let state = temporaryDirectory() + "/vms"
        let first = TestLibvirt.driver(uri: "test:///default", stateDirectory: state)
        let running = spec("lv-recover-run")
        let defined = spec("lv-recover-def")
        try await first.create(running)
        try await first.create(defined)
        try await first.start(running.id)
        // libvirt's test hypervisor forgets its domains when its last connection closes (a real
        // libvirtd keeps them): the second driver connects before the first lets go.
        let second = TestLibvirt.driver(uri: "test:///default", stateDirectory: state)
        let other = TestLibvirt.driver(uri: "test:///default")
        _ = try await second.fingerprint()
        await first.detach()
        let recovered = try await second.recover()
        #expect(recovered.map(\.id).sorted() == [running.id, defined.id].sorted())
        #expect(recovered.first { $0.id == running.id }?.state == .running)
        #expect(recovered.first { $0.id == defined.id }?.state == .stopped)
        #expect(try await second.recover().count == 2)
        #expect(try await other.recover().isEmpty)
        try await second.delete(running.id)
        try await second.delete(defined.id)
        #expect(try await second.recover().isEmpty)
    }

    @Test("a name another agent's domain has is a conflict naming it; concurrent creates of one VM define it once")
    func nameConflict() async throws {
        let mine = TestLibvirt.driver(uri: "test:///default")
        let theirs = TestLibvirt.driver(uri: "test:///default")
        let vm = spec("lv-clash")
        try await theirs.create(vm)
        var twin = spec("lv-clash")
        twin.cpus = 2
        let error = await #expect(throws: VireoError.self) { try await mine.create(twin) }
        #expect(error?.code == .conflict && error?.message.contains("vireo-lv-clash") == true)
        #expect(try await mine.status().isEmpty)
        try await theirs.delete(vm.id)

        let once = spec("lv-once")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<3 { group.addTask { try await mine.create(once) } }
            try await group.waitForAll()
        }
        #expect(try await mine.status().map(\.id) == [once.id])
        try await mine.delete(once.id)
    }

    @Test("libvirt's lifecycle events reach the state change handler")
    func lifecycleEvents() async throws {
        let driver = TestLibvirt.driver(uri: "test:///default")
        let calls = Mutex(0)
        await driver.onStateChange { calls.withLock { $0 += 1 } }
        let vm = spec("lv-events")
        try await driver.create(vm)
        // Defining the domain is an event too; it must have arrived before the start's is counted.
        try await eventually("a lifecycle event for the definition") { calls.withLock { $0 } > 0 }
        try await Task.sleep(for: .milliseconds(100))
        let afterCreate = calls.withLock { $0 }
        try await driver.start(vm.id)
        try await eventually("a lifecycle event for the start") { calls.withLock { $0 } > afterCreate }
        let afterStart = calls.withLock { $0 }
        try await driver.stop(vm.id)
        try await eventually("a lifecycle event for the stop") { calls.withLock { $0 } > afterStart }
        try await driver.delete(vm.id)
    }

    @Test("the console is read from the serial log, from an offset, at character boundaries")
    func console() async throws {
        let state = temporaryDirectory() + "/vms"
        let driver = TestLibvirt.driver(uri: "test:///default", stateDirectory: state)
        let vm = spec("lv-console")
        try await driver.create(vm)
        // The test hypervisor writes nothing: write what a guest would.
        try "boot\nVIREO-READY name=lv-console é\n".write(
            toFile: "\(state)/\(vm.id)/serial.log", atomically: true, encoding: .utf8)
        let all = try await driver.consoleOutput(vm.id, from: 0, limit: 4096)
        #expect(all.text == "boot\nVIREO-READY name=lv-console é\n")
        let cut = try await driver.consoleOutput(vm.id, from: 5, limit: 29)
        #expect(cut.text == "VIREO-READY name=lv-console ")  // the two-byte é is not split
        #expect(cut.next == 33)
        try await driver.delete(vm.id)
        let gone = await #expect(throws: VireoError.self) { try await driver.consoleOutput(vm.id, from: 0, limit: 1) }
        #expect(gone?.code == .notFound)
    }

    @Test("usage comes from libvirt while the domain runs, and is nil when it does not")
    func usage() async throws {
        let driver = TestLibvirt.driver(uri: "test:///default")
        let vm = spec("lv-usage")
        try await driver.create(vm)
        #expect(await driver.usage(vm.id) == nil)
        try await driver.start(vm.id)
        let usage = try #require(await driver.usage(vm.id))
        #expect(usage.memoryBytes == 128 << 20)
        try await driver.delete(vm.id)
    }

    @Test("pause and resume act on libvirt's domain; the VM stays running, shown paused; a stopped or unknown VM is refused")
    func pauseResume() async throws {
        let driver = TestLibvirt.driver(uri: "test:///default")
        #expect(driver.capabilities.isSuperset(of: [.pause, .snapshots]))
        let vm = spec("lv-pause")
        try await driver.create(vm)
        let stopped = await #expect(throws: VireoError.self) { try await driver.pause(vm.id) }
        #expect(stopped?.code == .failedPrecondition && stopped?.message.contains("lv-pause") == true)
        try await driver.start(vm.id)
        _ = try await driver.status()
        try await driver.pause(vm.id)
        // libvirt's own view, on a connection of the test's: the process shares the test hypervisor.
        let libvirt = try LibvirtConnection(uri: "test:///default")
        func libvirtState() throws -> virDomainState {
            let uuid = try #require(libvirt.uuid(ofDomainNamed: "vireo-lv-pause"))
            return try libvirt.withDomain(uuid) { domain throws in try LibvirtConnection.state(of: domain).state }
        }
        #expect(try libvirtState() == VIR_DOMAIN_PAUSED)
        let paused = try #require(try await driver.status().first { $0.id == vm.id })
        #expect(paused.state == .running && paused.message == "paused")
        try await driver.resume(vm.id)
        #expect(try libvirtState() == VIR_DOMAIN_RUNNING)
        let resumed = try #require(try await driver.status().first { $0.id == vm.id })
        #expect(resumed.state == .running && resumed.message == nil)
        let unknown = await #expect(throws: VireoError.self) { try await driver.resume(VMID("nope")) }
        #expect(unknown?.code == .notFound)
        try await driver.delete(vm.id)
    }

    @Test("deleting a VM, running or stopped, takes its snapshots with it: the name starts afresh with none")
    func deleteWithSnapshots() async throws {
        let state = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: state) }
        let driver = TestLibvirt.driver(uri: "test:///default", stateDirectory: state + "/vms")
        let libvirt = try LibvirtConnection(uri: "test:///default")
        for stopFirst in [false, true] {
            let vm = spec("lv-snapdel")
            try await driver.create(vm)
            try await driver.start(vm.id)
            _ = try await driver.status()
            _ = try await driver.saveSnapshot(vm.id, tag: "one")
            _ = try await driver.saveSnapshot(vm.id, tag: "two")
            if stopFirst { try await driver.stop(vm.id) }
            #expect(try await driver.snapshots(vm.id) == ["one", "two"])
            // libvirt refuses to undefine a stopped domain that has snapshots unless told to drop them.
            try await driver.delete(vm.id)
            #expect(libvirt.uuid(ofDomainNamed: "vireo-lv-snapdel") == nil, "stopped first: \(stopFirst)")
            #expect(!FileManager.default.fileExists(atPath: "\(state)/vms/\(vm.id)"))
            let again = spec("lv-snapdel")
            try await driver.create(again)
            #expect(try await driver.snapshots(again.id) == [])
            try await driver.delete(again.id)
        }
    }

    @Test("snapshot errors name the VM and the tag; libvirt's own refusals carry libvirt's message")
    func snapshotErrorMessages() async throws {
        let driver = TestLibvirt.driver(uri: "test:///default")
        let vm = spec("lv-snapmsg")
        try await driver.create(vm)
        let stopped = await #expect(throws: VireoError.self) { _ = try await driver.saveSnapshot(vm.id, tag: "a") }
        #expect(stopped?.message == "VM lv-snapmsg is stopped: only a running VM can save a snapshot")
        try await driver.start(vm.id)
        _ = try await driver.status()
        _ = try await driver.saveSnapshot(vm.id, tag: "a")
        let taken = await #expect(throws: VireoError.self) { _ = try await driver.saveSnapshot(vm.id, tag: "a") }
        #expect(taken?.code == .conflict && taken?.message == "VM lv-snapmsg already has a snapshot 'a'")
        let missing = await #expect(throws: VireoError.self) { _ = try await driver.loadSnapshot(vm.id, tag: "gone") }
        #expect(missing?.code == .notFound && missing?.message == "VM lv-snapmsg has no snapshot 'gone'")
        let running = await #expect(throws: VireoError.self) { try await driver.start(vm.id, fromSnapshot: "a") }
        #expect(running?.code == .failedPrecondition && running?.message.contains("lv-snapmsg is running") == true)
        // libvirt's own refusal (a snapshot gone between the driver's check and its call): its message.
        let libvirt = try LibvirtConnection(uri: "test:///default")
        let uuid = try #require(libvirt.uuid(ofDomainNamed: "vireo-lv-snapmsg"))
        let error = #expect(throws: VireoError.self) {
            try libvirt.withDomain(uuid) { domain throws in
                try LibvirtConnection.revert(domain, to: "gone", doing: "loading snapshot 'gone'")
            }
        }
        #expect(error?.code == .notFound && error?.message.hasPrefix("loading snapshot 'gone': ") == true)
        print("libvirt test: libvirt's refusal reads \(error?.message ?? "nothing")")
        try await driver.delete(vm.id)
    }

    @Test(
        "snapshots are ordered by libvirt's creation time, then Vireo's sequence within a second; the embedded domain is not read"
    )
    func snapshotOrder() {
        func xml(_ created: Int, _ description: String?) -> String {
            "<domainsnapshot><name>x</name>" + (description.map { "<description>\($0)</description>" } ?? "")
                + "<state>running</state><creationTime>\(created)</creationTime>"
                + "<domain type='qemu'><description>vireo-order 99</description></domain></domainsnapshot>"
        }
        let entry = LibvirtConnection.SnapshotEntry(name: "a", xml: xml(1_796_444_615, "vireo-order 7"))
        #expect(entry.name == "a" && entry.created == 1_796_444_615 && entry.order == 7)
        #expect(LibvirtConnection.SnapshotEntry(name: "b", xml: xml(5, nil)).order == nil)
        #expect(LibvirtConnection.SnapshotEntry(name: "c", xml: xml(5, "taken by hand")).order == nil)
    }

    @Test("the host's CPU comes from libvirt's node statistics")
    func hostUsage() async throws {
        let driver = TestLibvirt.driver(uri: "test:///default")
        let usage = try #require(await driver.hostUsage())
        let fingerprint = try await driver.fingerprint()
        #expect(usage.capacity == Double(fingerprint.cpus))
        // The test hypervisor's fixed figures: user 9797400000 ns + kernel 34678723400000 ns.
        #expect(abs(usage.busySeconds - 34688.5208) < 0.001)
    }

    @Test("an unreachable libvirt is reported as unavailable with libvirt's reason")
    func unreachable() async throws {
        let driver = TestLibvirt.driver(uri: "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
        let error = await #expect(throws: VireoError.self) { _ = try await driver.fingerprint() }
        #expect(error?.code == .unavailable)
        #expect(error?.message.contains("qemu+unix:///system") == true, "\(String(describing: error))")
    }

    @Test("private networks are refused at create, naming what is missing")
    func privateNetworkRefused() async throws {
        let driver = TestLibvirt.driver(uri: "test:///default")
        var vm = spec("lv-private")
        vm.privateNetwork = "lab"
        let error = await #expect(throws: VireoError.self) { try await driver.create(vm) }
        #expect(error?.code == .unsupported && error?.message.contains("private networks") == true)
        #expect(try await driver.status().isEmpty)
    }

    @Test("libvirt's errors map to Vireo's codes: no domain, no connection, denied, invalid, unsupported")
    func errorCodes() {
        let cases: [(virErrorNumber, VireoError.Code)] = [
            (VIR_ERR_NO_DOMAIN, .notFound), (VIR_ERR_NO_CONNECT, .unavailable), (VIR_ERR_RPC, .unavailable),
            (VIR_ERR_SYSTEM_ERROR, .unavailable), (VIR_ERR_AUTH_FAILED, .unauthorized),
            (VIR_ERR_ACCESS_DENIED, .unauthorized), (VIR_ERR_OPERATION_DENIED, .failedPrecondition),
            (VIR_ERR_OPERATION_INVALID, .failedPrecondition), (VIR_ERR_NO_SUPPORT, .unsupported),
            (VIR_ERR_XML_ERROR, .internal),
        ]
        for (number, code) in cases {
            #expect(LibvirtConnection.code(forLibvirtError: Int32(number.rawValue), fallback: .internal) == code, "\(number)")
        }
    }

    @Test("the domain definition boots the image's kernel directly and carries the record, escaped, in its metadata")
    func domainDefinition() throws {
        let record = LibvirtRecord(
            spec: InstanceSpec(id: VMID("vm-1"), name: "web-1", image: "web", cpus: 2, memoryMiB: 256),
            image: GuestImage(
                kernel: "/images/vmlinux", initrd: "/images/initrd.gz", baseDisk: "/images/base.qcow2",
                kernelCommandLine: "console=ttyS0 quiet", readyMarker: "VIREO-READY"),
            owner: "/state/<a & b>", disk: "/state/vm-1/disk.qcow2", serialLog: "/state/vm-1/serial.log")
        let xml = record.domainXML(type: "qemu")
        #expect(xml.contains("<domain type='qemu'") && xml.contains("<name>vireo-web-1</name>"))
        #expect(xml.contains("<kernel>/images/vmlinux</kernel>") && xml.contains("<initrd>/images/initrd.gz</initrd>"))
        #expect(xml.contains("<cmdline>console=ttyS0 quiet vireo.name=web-1</cmdline>"))
        #expect(!xml.contains("qemu:commandline"))
        var networked = record
        networked.hostPort = 40123
        let withNetwork = networked.domainXML(type: "qemu")
        #expect(withNetwork.contains("vireo.name=web-1 vireo.ip=10.0.2.15/24 vireo.gw=10.0.2.2</cmdline>"))
        #expect(withNetwork.contains("hostfwd=tcp:127.0.0.1:40123-:80"))
        #expect(LibvirtRecord.parse(metadata: networked.metadataElement)?.hostPort == 40123)
        #expect(xml.contains("<memory unit='MiB'>256</memory>") && xml.contains("<vcpu>2</vcpu>"))
        #expect(xml.contains("<source path='/state/vm-1/serial.log' append='on'/>"))
        #expect(!xml.contains("<a & b>"))
        #expect(LibvirtRecord.parse(metadata: record.metadataElement) == record)
        #expect(LibvirtRecord.parse(metadata: "<other:thing xmlns:other='x'>42</other:thing>") == nil)
    }

    @Test("kvm domains only on a local URI whose CPU has vmx or svm and a usable /dev/kvm; the host CPU model for them")
    func domainType() {
        let vmx = "processor : 0\nflags : fpu vme vmx sse\n"
        let none = "processor : 0\nflags : fpu vme sse hypervisor\n"
        typealias Configuration = LibvirtDriver.Configuration
        #expect(Configuration.probeDomainType(uri: "qemu:///system", cpuinfo: vmx, kvmUsable: true) == .kvm)
        #expect(Configuration.probeDomainType(uri: "qemu:///system", cpuinfo: vmx, kvmUsable: false) == .qemu)
        // A nested "PVM" /dev/kvm without vmx/svm (these machines): TCG.
        #expect(Configuration.probeDomainType(uri: "qemu:///system", cpuinfo: none, kvmUsable: true) == .qemu)
        #expect(Configuration.probeDomainType(uri: "qemu+ssh://h2/system", cpuinfo: vmx, kvmUsable: true) == .qemu)
        let record = LibvirtRecord(
            spec: InstanceSpec(id: VMID("vm-1"), name: "a", image: "tiny", cpus: 1, memoryMiB: 128),
            image: GuestImage(kernel: "/k", initrd: "/i", baseDisk: "/b", kernelCommandLine: "", readyMarker: "R"),
            owner: "/s", disk: "/s/d", serialLog: "/s/l")
        #expect(record.domainXML(type: "kvm").contains("<cpu mode='host-passthrough'/>"))
        #expect(!record.domainXML(type: "qemu").contains("<cpu"))
    }

    @Test("the registry makes the libvirt driver from its settings and rejects unknown ones")
    func registration() throws {
        var registry = DriverRegistry()
        registry.registerLibvirt()
        let driver = try registry.make(
            "libvirt", options: .init(stateDirectory: "/tmp/x", settings: ["uri": "test:///default", "stop-timeout-s": "3"]))
        #expect(driver.name == "libvirt")
        #expect((driver as? LibvirtDriver)?.configuration.stopTimeout == .seconds(3))
        #expect((driver as? LibvirtDriver)?.configuration.uri == "test:///default")
        let defaulted = try registry.make("libvirt", options: .init(stateDirectory: "/tmp/x"))
        #expect((defaulted as? LibvirtDriver)?.configuration.uri == "qemu:///system")
        let error = #expect(throws: VireoError.self) {
            _ = try registry.make("libvirt", options: .init(stateDirectory: "/tmp/x", settings: ["url": "x"]))
        }
        #expect(error?.message.contains("url") == true)
        let type = #expect(throws: VireoError.self) {
            _ = try registry.make("libvirt", options: .init(stateDirectory: "/tmp/x", settings: ["domain-type": "xen"]))
        }
        #expect(type?.message.contains("domain-type") == true)
        let forced = try registry.make("libvirt", options: .init(stateDirectory: "/tmp/x", settings: ["domain-type": "kvm"]))
        #expect((forced as? LibvirtDriver)?.configuration.domainType == .kvm)
    }
}

extension RealQEMU {
    /// The libvirt driver on `qemu:///system`: real guests under libvirtd (TCG here).
    @Suite("libvirt driver (qemu:///system)")
    struct LibvirtQEMUTests {
        /// libvirtd and virtlogd, started here when they do not run (no systemd on these machines);
        /// a failure to start them fails the test with the reason rather than skipping it.
        static func ensureDaemons() async throws {
            for daemon in ["virtlogd", "libvirtd"] {
                let running = try await HostTool.run("pgrep", ["-x", daemon], acceptedStatus: [0, 1])
                if running.isEmpty {
                    print("libvirt test: \(daemon) was not running; starting it with '\(daemon) -d' (it stays running)")
                    try await HostTool.run(daemon, ["-d"])
                }
            }
        }

        @Test("a web guest defined through libvirt boots to its ready marker, shows its console, stops and is deleted")
        func webGuest() async throws {
            try await Self.ensureDaemons()
            let state = temporaryDirectory() + "/vms"
            let driver = TestLibvirt.driver(uri: "qemu:///system", stateDirectory: state)
            let changes = Mutex(0)
            await driver.onStateChange { changes.withLock { $0 += 1 } }
            let fingerprint = try await driver.fingerprint()
            print(
                "libvirt test: \(fingerprint.attributes["hypervisor"] ?? "?"), libvirt \(fingerprint.attributes["libvirt"] ?? "?")"
            )
            #expect(fingerprint.attributes["hypervisor"]?.hasPrefix("QEMU") == true)
            #expect(fingerprint.migrationFamily == "libvirt/QEMU", "no live move between it and the qemu driver's hosts")
            let vm = InstanceSpec(
                id: .generate(), name: "lv-web-\(UUID().uuidString.prefix(6).lowercased())", image: "web", cpus: 1, memoryMiB: 256
            )
            try await driver.create(vm)
            do {
                let startedAt = ContinuousClock.now
                try await driver.start(vm.id)
                let running = try await settle(
                    driver, vm.id, to: .running, tick: { try? await Task.sleep(for: .milliseconds(100)) })
                print(
                    "libvirt test: start to ready marker in \(ContinuousClock.now - startedAt); "
                        + "the driver's bootMs \(running.bootMs.map(String.init) ?? "none")")
                #expect((running.bootMs ?? 0) > 0)
                #expect(changes.withLock { $0 } > 0, "no state change reached the handler")
                let console = try await driver.consoleOutput(vm.id, from: 0, limit: 1 << 20)
                #expect(console.text.contains("VIREO-READY name=\(vm.name)"))
                // The web service answers on the forwarded loopback port.
                let address = try #require(running.address)
                #expect(address.hasPrefix("127.0.0.1:"))
                let response = try await HTTPClient.shared.execute(
                    HTTPClientRequest(url: "http://\(address)/"), timeout: .seconds(10))
                let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
                #expect(response.status.code == 200 && body.contains("\"ok\":true"), "\(body)")
                let usage = try #require(await driver.usage(vm.id))
                #expect(usage.cpuSeconds > 0)
                // The QEMU process's resident set: some, and less than guest memory plus QEMU's own.
                print("libvirt test: usage \(usage.cpuSeconds) s CPU, \(usage.memoryBytes >> 20) MiB resident")
                #expect(usage.memoryBytes > 16 << 20 && usage.memoryBytes < UInt64(vm.memoryMiB + 512) << 20)
                let host = try #require(await driver.hostUsage())
                #expect(host.busySeconds > usage.cpuSeconds && host.capacity == Double(fingerprint.cpus))
                // Another driver on the same state directory (an agent restart) finds it, once.
                let restarted = TestLibvirt.driver(uri: "qemu:///system", stateDirectory: state)
                let recovered = try await restarted.recover()
                #expect(recovered.map(\.id) == [vm.id])
                #expect(recovered.first?.state == .running)
                let stoppedAt = ContinuousClock.now
                try await driver.stop(vm.id)
                print("libvirt test: stop in \(ContinuousClock.now - stoppedAt)")
                #expect(try await driver.status().first { $0.id == vm.id }?.state == .stopped)
            } catch {
                try? await driver.delete(vm.id)
                throw error
            }
            try await driver.delete(vm.id)
            let domains = try await HostTool.text("virsh", ["-c", "qemu:///system", "list", "--all", "--name"])
            #expect(!domains.contains("vireo-\(vm.name)"), "domain left defined: \(domains)")
            #expect(try await TestLibvirt.driver(uri: "qemu:///system", stateDirectory: state).recover().isEmpty)
            #expect(!FileManager.default.fileExists(atPath: "\(state)/\(vm.id)"))
        }

        /// A request on a connection of its own: after a snapshot load the guest's TCP state is the
        /// saved one (and libvirt runs a new QEMU), so a pooled connection could be one it forgot.
        static func request(_ address: String, _ path: String, post: Bool = false, timeout: TimeAmount = .seconds(15))
            async throws -> String
        {
            var request = HTTPClientRequest(url: "http://\(address)\(path)")
            request.method = post ? .POST : .GET
            request.headers.add(name: "Connection", value: "close")
            let response = try await HTTPClient.shared.execute(request, timeout: timeout)
            let body = String(buffer: try await response.body.collect(upTo: 1 << 16))
            try #require(response.status == .ok, "\(path): \(response.status) \(body)")
            return body
        }

        static func marks(_ address: String) async throws -> [String: String] {
            try JSONDecoder().decode([String: String].self, from: Data(try await request(address, "/mark").utf8))
        }

        static func mark(_ address: String, _ value: String) async throws {
            _ = try await request(address, "/mark?value=\(value)", post: true)
        }

        @Test(
            "a web guest's snapshot brings back its marks in memory, tmpfs and disk; pause holds it; a stopped VM starts from a snapshot; delete leaves nothing"
        )
        func webSnapshots() async throws {
            try await Self.ensureDaemons()
            let state = temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: state) }
            let driver = TestLibvirt.driver(uri: "qemu:///system", stateDirectory: state + "/vms")
            let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(100)) }
            let vm = InstanceSpec(
                id: .generate(), name: "lv-snap-\(UUID().uuidString.prefix(6).lowercased())", image: "web", cpus: 1,
                memoryMiB: 256)
            try await driver.create(vm)
            do {
                try await driver.start(vm.id)
                let address = try #require(try await settle(driver, vm.id, to: .running, tick: tick).address)
                let clean = ["disk": "clean", "memory": "clean", "tmpfs": "clean"]
                try await Self.mark(address, "clean")
                let saved = try await driver.saveSnapshot(vm.id, tag: "clean")
                try await Self.mark(address, "later")
                #expect(try await Self.marks(address) == ["disk": "later", "memory": "later", "tmpfs": "later"])
                let before = try await driver.consoleOutput(vm.id, from: 0, limit: 1 << 20)
                let loaded = try await driver.loadSnapshot(vm.id, tag: "clean")
                print("libvirt test: snapshot save \(saved), load \(loaded) (256 MiB web guest, TCG)")
                #expect(try await driver.status().first?.state == .running, "the restored guest is ready at once")
                #expect(try await Self.marks(address) == clean, "after the load")
                // The new QEMU appends to the same console log: what was read stays where it was.
                let after = try await driver.consoleOutput(vm.id, from: 0, limit: 1 << 20)
                #expect(after.text.hasPrefix(before.text) && after.next >= before.next)

                // Paused, the guest answers nothing; resumed, it does.
                try await driver.pause(vm.id)
                let paused = try #require(try await driver.status().first)
                #expect(paused.state == .running && paused.message == "paused")
                await #expect(throws: (any Error).self, "a paused guest answered") {
                    _ = try await Self.request(address, "/mark", timeout: .seconds(2))
                }
                try await driver.resume(vm.id)
                #expect(try await Self.marks(address) == clean, "after resume")

                // Stopped, it keeps its snapshots and starts from one without booting.
                _ = try await driver.saveSnapshot(vm.id, tag: "second")
                #expect(try await driver.snapshots(vm.id) == ["clean", "second"])
                try await driver.stop(vm.id)
                #expect(try await driver.status().first?.state == .stopped)
                #expect(try await driver.snapshots(vm.id) == ["clean", "second"])
                try await driver.deleteSnapshot(vm.id, tag: "second")
                try await driver.start(vm.id, fromSnapshot: "clean")
                let restored = try #require(try await driver.status().first)
                #expect(restored.state == .running, "ready without a ready marker in this run")
                print("libvirt test: start from snapshot in \(restored.bootMs.map { "\($0) ms" } ?? "?")")
                #expect(try await Self.marks(address) == clean, "after a start from the snapshot")
                // An agent restarting now finds the restored run ready, though it printed no marker.
                let restarted = TestLibvirt.driver(uri: "qemu:///system", stateDirectory: state + "/vms")
                #expect(try await restarted.recover().map(\.state) == [.running])
                #expect(try await restarted.snapshots(vm.id) == ["clean"])
            } catch {
                try? await driver.delete(vm.id)
                throw error
            }
            try await driver.delete(vm.id)
            let domains = try await HostTool.text("virsh", ["-c", "qemu:///system", "list", "--all", "--name"])
            #expect(!domains.contains("vireo-\(vm.name)"), "domain left defined: \(domains)")
            #expect(!FileManager.default.fileExists(atPath: "/var/lib/libvirt/qemu/snapshot/vireo-\(vm.name)"))
        }
    }
}

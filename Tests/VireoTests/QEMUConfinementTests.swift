import Foundation
import Testing
import VireoDriver
import VireoModel
import VireoProcess

@testable import VireoDriverQEMU

@Suite("QEMU confinement")
struct QEMUConfinementTests {
    let confinement = QEMUConfinement(uids: QEMUConfinement.defaultUIDs)

    @Test("a VM's uid comes from its ID, stays in the range, and skips uids other VMs here hold")
    func uids() throws {
        let id = VMID("0b0e6c1e-0000-4000-8000-000000000001")
        let uid = try #require(confinement.uid(for: id, taken: []))
        #expect(QEMUConfinement.defaultUIDs.contains(uid))
        #expect(uid >= 1 << 30)
        #expect(confinement.uid(for: id, taken: []) == uid)
        let next = try #require(confinement.uid(for: id, taken: [uid]))
        #expect(next != uid && QEMUConfinement.defaultUIDs.contains(next))
        #expect(confinement.uid(for: VMID("0b0e6c1e-0000-4000-8000-000000000002"), taken: []) != uid)
        // An agent that is not root runs QEMU as itself.
        #expect(QEMUConfinement(uids: nil).uid(for: id, taken: []) == nil)
    }

    @Test("a file QEMU's uid cannot reach is named, with the directory in the way")
    func reachability() throws {
        let directory = temporaryDirectory()
        let closed = directory + "/closed"
        try FileManager.default.createDirectory(atPath: closed, withIntermediateDirectories: true)
        chmod(directory, 0o755)
        chmod(closed, 0o700)
        let file = closed + "/vmlinux"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        chmod(file, 0o644)
        let uid = QEMUConfinement.defaultUIDs.lowerBound
        do {
            try QEMUConfinement.checkReachable(file, by: uid)
            Issue.record("a file under a 0700 directory passed")
        } catch let error as VireoError {
            #expect(error.message.contains("cannot reach \(file)"))
            #expect(error.message.contains("\(closed) is not searchable"))
        }
        chmod(closed, 0o711)
        try QEMUConfinement.checkReachable(file, by: uid)
        // Readable is not writable; a file handed to the uid is both.
        #expect(throws: VireoError.self) { try QEMUConfinement.checkReachable(file, by: uid, access: 0o6) }
        if getuid() == 0 {
            try QEMUConfinement.handOver(file, to: uid, mode: 0o600)
            try QEMUConfinement.checkReachable(file, by: uid, access: 0o6)
            #expect(throws: VireoError.self) { try QEMUConfinement.checkReachable(file, by: uid + 1) }
        }
        // Without a uid (QEMU runs as the agent) there is nothing to check.
        try QEMUConfinement.checkReachable("/nonexistent/file", by: nil)
    }

    @Test("the agent's cgroups are read from /proc/self/cgroup, v1 and v2")
    func cgroupParents() throws {
        let root = temporaryDirectory()
        for directory in ["cpu/agents/a1", "memory/agents/a1", "unified/a2"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
        }
        try Data().write(to: URL(fileURLWithPath: "\(root)/cpu/agents/a1/cpu.cfs_quota_us"))
        try Data().write(to: URL(fileURLWithPath: "\(root)/memory/agents/a1/memory.limit_in_bytes"))
        let v1 = VMCgroup.Parent.detect(
            root: root, selfCgroup: "4:memory:/agents/a1\n2:cpu,cpuacct:/agents/a1\n1:name=systemd:/\n0::/\n")
        #expect(v1?.layout == .v1(cpu: "\(root)/cpu/agents/a1", memory: "\(root)/memory/agents/a1"))
        // v2 needs the controllers and a parent that can delegate them.
        #expect(VMCgroup.Parent.detect(root: root + "/unified", selfCgroup: "0::/a2\n") == nil)
        try Data("cpuset cpu io memory pids".utf8).write(to: URL(fileURLWithPath: "\(root)/unified/a2/cgroup.controllers"))
        try Data().write(to: URL(fileURLWithPath: "\(root)/unified/a2/cgroup.subtree_control"))
        #expect(VMCgroup.Parent.detect(root: root + "/unified", selfCgroup: "0::/a2\n")?.layout == .v2("\(root)/unified/a2"))
        #expect(VMCgroup.memoryLimitBytes(guestMiB: 256) == (256 + VMCgroup.memoryOverheadMiB) << 20)
    }
}

@Suite("Guest firewall")
struct GuestFirewallTests {
    @Test(
        "installing twice leaves one set of rules; removing leaves none",
        .enabled(if: getuid() == 0, "needs root: the rules go into a network namespace the test creates"))
    func idempotent() async throws {
        let namespace = "vireo-fwtest-\(UUID().uuidString.prefix(6).lowercased())"
        try await HostTool.run("ip", ["netns", "add", namespace])
        do {
            try await check(namespace)
        } catch {
            _ = try? await HostTool.run("ip", ["netns", "del", namespace])
            throw error
        }
        try await HostTool.run("ip", ["netns", "del", namespace])
    }

    func check(_ namespace: String) async throws {
        func list(_ tool: String, _ arguments: [String]) async throws -> String {
            try await HostTool.text("ip", ["netns", "exec", namespace, tool] + arguments)
        }
        try await GuestFirewall.install(namespace: namespace)
        try await GuestFirewall.install(namespace: namespace)
        let bridge = try await list("ebtables", ["-L"])
        #expect(bridge.components(separatedBy: "-j VIREO-GUESTS").count - 1 == 2)  // INPUT and FORWARD
        #expect(bridge.contains("-s ! 52:54:00:00:00:00/ff:ff:00:00:00:00 -i vt.+ -j DROP"))
        #expect(bridge.contains("-j mark --mark-or 0x40000"))
        for tool in ["iptables", "ip6tables"] {
            let rules = try await list(tool, ["-S"])
            #expect(rules.components(separatedBy: "-A INPUT -m mark --mark 0x40000/0x40000 -j VIREO-GUESTS").count - 1 == 1)
            #expect(rules.contains("-A VIREO-GUESTS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"))
            #expect(rules.contains("-A VIREO-GUESTS -j DROP"))
        }
        await GuestFirewall.remove(namespace: namespace)
        #expect(!(try await list("ebtables", ["-L"])).contains("VIREO"))
        #expect(!(try await list("iptables", ["-S"])).contains("VIREO"))
        #expect(!(try await list("ip6tables", ["-S"])).contains("VIREO"))
    }
}

extension RealQEMU {
    @Suite(
        "QEMU confinement (real QEMU)",
        .enabled(if: getuid() == 0, "needs root: QEMU runs as other uids, and cgroups are made by root"))
    struct QEMUConfinementRealTests {
        let tick: @Sendable () async -> Void = { try? await Task.sleep(for: .milliseconds(250)) }

        func status(of pid: Int32) throws -> [String: String] {
            let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            var fields: [String: String] = [:]
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1)
                if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
            }
            return fields
        }

        func owner(_ path: String) throws -> (uid: UInt32, mode: mode_t) {
            var info = stat()
            guard stat(path, &info) == 0 else { throw VireoError(.notFound, "\(path): \(String(cString: strerror(errno)))") }
            return (info.st_uid, info.st_mode & 0o7777)
        }

        func cgroupFile(_ pid: Int32, controller: String, _ file: String) throws -> String {
            let lines = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8).split(separator: "\n")
            let line = try #require(
                lines.first { $0.split(separator: ":")[1].split(separator: ",").contains(Substring(controller)) })
            let path = String(line.split(separator: ":", maxSplits: 2)[2])
            return try String(contentsOfFile: "/sys/fs/cgroup/\(controller)\(path)/\(file)", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }

        @Test("each QEMU runs as a uid of its own under seccomp, in a cgroup with its spec's limits, with only its own files")
        func confined() async throws {
            let driver = TestQEMU.driver()
            let web = InstanceSpec(id: .generate(), name: "conf-web", image: "web", cpus: 1, memoryMiB: 192)
            let other = InstanceSpec(id: .generate(), name: "conf-other", image: "tiny", cpus: 2, memoryMiB: 128)
            for vm in [web, other] {
                try await driver.create(vm)
                try await driver.start(vm.id)
            }
            for vm in [web, other] { _ = try await settle(driver, vm.id, to: .running, tick: tick) }
            let instances = await driver.instances
            let webPID = try #require(instances[web.id]?.pid)
            let otherPID = try #require(instances[other.id]?.pid)
            let webUID = try #require(instances[web.id]?.record.uid)
            let otherUID = try #require(instances[other.id]?.record.uid)
            #expect(webUID != otherUID)
            // The host says how its guests run.
            #expect(try await driver.fingerprint().attributes["confinement"] == "uid-per-vm,seccomp,cgroup-v1")

            // Not root: every uid and gid of the process is the VM's, with no capabilities left.
            let fields = try status(of: webPID)
            #expect(fields["Uid"]?.split(separator: "\t").allSatisfy { $0 == "\(webUID)" } == true)
            #expect(fields["Gid"]?.split(separator: "\t").allSatisfy { $0 == "\(webUID)" } == true)
            #expect(fields["Groups"]?.isEmpty == true)
            #expect(fields["CapEff"] == "0000000000000000")
            #expect(fields["NoNewPrivs"] == "1")
            // Seccomp mode 2: a filter.
            #expect(fields["Seccomp"] == "2")

            // Its cgroup: the memory limit is the spec's memory plus QEMU's own, the CPU quota its vCPUs.
            #expect(
                try cgroupFile(webPID, controller: "memory", "memory.limit_in_bytes")
                    == "\((192 + VMCgroup.memoryOverheadMiB) << 20)")
            #expect(try cgroupFile(webPID, controller: "cpu", "cpu.cfs_quota_us") == "100000")
            #expect(try cgroupFile(otherPID, controller: "cpu", "cpu.cfs_quota_us") == "200000")
            #expect(try cgroupFile(webPID, controller: "cpu", "cpu.shares") == "1024")
            #expect(try cgroupFile(otherPID, controller: "cpu", "cpu.shares") == "2048")

            // Its files are its uid's alone: the QMP socket and the directory it is in, the VM's
            // directory and its disk.
            let paths = await driver.paths(web.id)
            let record = try #require(instances[web.id]?.record)
            let qmp = try owner(paths.qmp)
            #expect(qmp.uid == webUID && qmp.mode & 0o077 == 0)
            #expect(try owner(paths.runtime) == (webUID, 0o700))
            #expect(try owner(paths.directory) == (webUID, 0o700))
            #expect(try owner(record.disk) == (webUID, 0o600))

            // The other VM's uid cannot read this VM's disk or connect to its QMP socket.
            let otherDisk = try #require(instances[other.id]?.record.disk)
            let read = try await HostTool.run(
                "setpriv", ["--reuid=\(otherUID)", "--regid=\(otherUID)", "--clear-groups", "cat", record.disk],
                acceptedStatus: [0, 1])
            #expect(read.isEmpty)
            let readOwn = try await HostTool.run(
                "setpriv", ["--reuid=\(otherUID)", "--regid=\(otherUID)", "--clear-groups", "head", "-c", "4", otherDisk])
            #expect(Array(readOwn) == [0x51, 0x46, 0x49, 0xfb])  // qcow2's magic

            // The guest works as before, confined.
            let address = try #require(try await driver.status().first { $0.id == web.id }?.address)
            #expect(try await guest(address, "/")["ok"] == .bool(true))

            // On user networking the guest cannot reach the host's loopback services through the
            // gateway (10.0.2.2), where an agent's local API would be; its own service it reaches.
            let (listener, port) = try listenOnLoopback()
            defer { close(listener) }
            let toHost = try await guest(address, "/connect?to=10.0.2.2:\(port)&timeoutMs=2000")
            #expect(toHost["connected"] == .bool(false), "\(toHost)")
            let toItself = try await guest(address, "/connect?to=10.0.2.15:80&timeoutMs=2000")
            #expect(toItself["connected"] == .bool(true), "\(toItself)")

            // Deleting the VM removes its groups.
            let memoryGroup = try cgroupGroupPath(webPID, controller: "memory")
            try await driver.delete(web.id)
            try await driver.delete(other.id)
            #expect(!FileManager.default.fileExists(atPath: memoryGroup))
        }

        /// A TCP socket listening on 127.0.0.1 (the kernel completes connections to it unaccepted).
        func listenOnLoopback() throws -> (Int32, Int) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            guard fd >= 0, bound else { throw VireoError(.internal, "cannot listen on 127.0.0.1") }
            return (fd, Int(UInt16(bigEndian: address.sin_port)))
        }

        func cgroupGroupPath(_ pid: Int32, controller: String) throws -> String {
            let lines = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8).split(separator: "\n")
            let line = try #require(
                lines.first { $0.split(separator: ":")[1].split(separator: ",").contains(Substring(controller)) })
            return "/sys/fs/cgroup/\(controller)\(line.split(separator: ":", maxSplits: 2)[2])"
        }
    }
}

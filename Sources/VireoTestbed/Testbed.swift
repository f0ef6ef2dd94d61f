import Foundation
import VireoDriverQEMU
import VireoImage
import VireoModel
import VireoProcess

/// Several hosts on one machine: a network namespace per host, joined by a bridge, each with its
/// own `vireo agent` (`--driver qemu`, or `libvirt` on a libvirtd of its own) and, where cgroups
/// allow, its own CPU; a controller outside.
///
/// Layout for `name` = `vireo`, `network` = `198.18`, host i (1-based):
/// - root namespace: bridge `vireo-br` with 198.18.0.1/16; the controller listens there, behind
///   the guest firewall (`GuestFirewall`, as each host's agent installs in its namespace);
/// - namespace `vireo-h<i>`: veth `eth0` (peer `vireo-v<i>` on `vireo-br`) in bridge `br0` with
///   198.18.i.1/16; guests' taps join `br0` and get 198.18.i.10 and up, so every guest and host
///   is on one L2 segment and a guest keeps its address when it migrates;
/// - cgroup `vireo-testbed/h<i>` (v1 cpu+cpuset, or v2) holding the agent and its QEMUs;
/// - VM disks in `<dir>/disks` for `qemu` hosts and `<dir>/libvirt-disks` for `libvirt` ones, which
///   every host of that driver sees (shared storage, for live migration within a hypervisor family;
///   a cold move between families copies the disk from one directory to the other, which a single
///   directory would make a copy onto the disk being read);
/// - for a `libvirt` host, a libvirtd and virtlogd in its namespace and a private mount namespace,
///   with their state in `<dir>/h<i>/libvirt` (`TestbedLibvirtd`).
///
/// Everything created is recorded in `<dir>/testbed.json`; `down` removes it and, for safety,
/// anything else carrying the testbed's names.
public struct Testbed: Sendable {
    public struct Options: Sendable {
        public var hosts: Int
        public var directory: String
        public var name = "vireo"
        /// The first two octets of the /16 everything lives in (198.18 or 198.19: RFC 2544 space).
        public var network = "198.18"
        public var controllerPort = 7480
        /// The `vireo` executable to run for the controller and agents.
        public var executable: String
        /// CPU quota per host in CPUs (e.g. 0.5); nil for no quota.
        public var cpuQuota: Double?
        /// Give host i its own CPU (i-1 modulo the CPU count) with a cpuset.
        public var pinCPUs = true
        /// Memory each host offers to guests.
        public var memoryMiB = 2048
        /// Where guest images are built and kept; nil: `<directory>/images`.
        public var imagesDirectory: String?
        /// Each host's driver by name (`h2`); hosts not named run `qemu` (see `TestbedDriver.parse`).
        public var drivers: [String: TestbedDriver] = [:]
        /// More arguments for `vireo controller` (e.g. `--heartbeat 500ms`).
        public var controllerArguments: [String] = []

        public init(hosts: Int, directory: String, executable: String) {
            self.hosts = hosts
            self.directory = directory
            self.executable = executable
        }
    }

    /// What `up` created, as stored in `testbed.json`.
    public struct State: Sendable, Codable {
        public struct Host: Sendable, Codable {
            public var name: String
            public var namespace: String
            public var veth: String
            public var address: String
            public var agentPID: Int32
            public var cgroups: [String]
            public var log: String
            /// Absent in state files written before hosts had a choice: `qemu`.
            public var driver: TestbedDriver?
            /// The host's own libvirt (`TestbedLibvirtd.directory`), for a `libvirt` host.
            public var libvirtDirectory: String?
            /// How its agent was started, so that it can be started again (`restartAgent`).
            public var command: [String]?
        }
        public var name: String
        public var network: String
        public var bridge: String
        public var controllerURL: String
        public var controllerPID: Int32
        public var adminTokenFile: String
        public var hosts: [Host]
        public var cgroupParents: [String]
        /// How the controller was started, so that it can be started again (`restartController`).
        public var controllerCommand: [String]?
    }

    public let options: Options

    public init(_ options: Options) throws(VireoError) {
        guard (1...200).contains(options.hosts) else {
            throw VireoError.invalid(field: "hosts", value: "'\(options.hosts)'", "must be in 1...200")
        }
        guard options.name.count <= 8, options.name.allSatisfy({ $0.isLetter || $0.isNumber }) else {
            throw VireoError.invalid(
                field: "--name", value: "'\(options.name)'", "must be at most 8 letters or digits (interface names)")
        }
        guard ["198.18", "198.19"].contains(options.network) else {
            throw VireoError.invalid(field: "--network", value: "'\(options.network)'", "expected 198.18 or 198.19")
        }
        for host in options.drivers.keys {
            guard host.hasPrefix("h"), let index = Int(host.dropFirst()), (1...options.hosts).contains(index) else {
                throw VireoError.invalid(
                    field: "--driver", value: "'\(host)'", "no such host: the testbed has h1...h\(options.hosts)")
            }
        }
        if let quota = options.cpuQuota, !(quota > 0) {
            throw VireoError.invalid(field: "--cpu-quota", value: "'\(quota)'", "must be a positive number of CPUs")
        }
        self.options = options
    }

    var bridge: String { "\(options.name)-br" }
    var controllerAddress: String { "\(options.network).0.1" }
    func namespace(_ i: Int) -> String { "\(options.name)-h\(i)" }
    func veth(_ i: Int) -> String { "\(options.name)-v\(i)" }
    func hostAddress(_ i: Int) -> String { "\(options.network).\(i).1" }
    public static func stateFile(in directory: String) -> String { directory + "/testbed.json" }

    /// Creates the network, the cgroups, the controller and the agents, and waits until every agent
    /// has registered. On failure everything created so far is removed.
    public func up(progress: @Sendable (String) -> Void) async throws -> State {
        let fm = FileManager.default
        guard getuid() == 0 else {
            throw VireoError(.failedPrecondition, "the testbed creates namespaces, bridges and cgroups: run it as root")
        }
        if fm.fileExists(atPath: Self.stateFile(in: options.directory)) {
            throw VireoError(
                .conflict, "a testbed is already up in \(options.directory); run `vireo testbed down` first")
        }
        try fm.createDirectory(atPath: options.directory + "/disks", withIntermediateDirectories: true)
        // Leftovers of a testbed that was not taken down (e.g. the machine rebooted mid-way).
        await Self.removeByName(options.name, hosts: options.hosts)
        for daemon in TestbedLibvirtd.all(in: options.directory) {
            await daemon.stop { progress("leftover \(daemon.directory): \($0)") }
        }

        var state = State(
            name: options.name, network: options.network, bridge: bridge,
            controllerURL: "http://\(controllerAddress):\(options.controllerPort)", controllerPID: 0,
            adminTokenFile: options.directory + "/controller/admin.token", hosts: [], cgroupParents: [])
        do {
            // Recorded before each step, so that `down` finds what a crashed `up` left.
            try Self.save(state, in: options.directory)
            progress("bridge \(bridge) with \(controllerAddress)/16")
            try await ip("link", "add", bridge, "type", "bridge")
            try await ip("addr", "add", "\(controllerAddress)/16", "dev", bridge)
            try await ip("link", "set", bridge, "up")
            // Guests reach the controller over this bridge: keep them off it, as each host's agent
            // keeps them off its host (docs/security.md).
            progress("guest firewall in the controller's namespace")
            try await GuestFirewall.install()

            let controllerDirectory = options.directory + "/controller"
            try fm.createDirectory(atPath: controllerDirectory, withIntermediateDirectories: true)
            progress("controller on \(state.controllerURL)")
            let controllerCommand =
                [
                    options.executable, "controller", "--data-dir", controllerDirectory, "--listen",
                    "\(controllerAddress):\(options.controllerPort)",
                ] + options.controllerArguments
            state.controllerCommand = controllerCommand
            state.controllerPID = try await Self.spawn(
                controllerCommand, log: controllerDirectory + "/controller.log",
                pidFile: controllerDirectory + "/controller.pid")
            try Self.save(state, in: options.directory)
            try await Self.waitForFile(controllerDirectory + "/join.token", process: state.controllerPID)
            try await Self.waitForFile(controllerDirectory + "/endpoint", process: state.controllerPID)

            let cgroups = CgroupTree(name: "\(options.name)-testbed")
            state.cgroupParents = cgroups.parents
            try Self.save(state, in: options.directory)
            let cpuCount = ProcessInfo.processInfo.activeProcessorCount
            for i in 1...options.hosts {
                let host = try await makeHost(i, cgroups: cgroups, cpuCount: cpuCount, progress: progress)
                state.hosts.append(host)
                try Self.save(state, in: options.directory)
            }
            try Self.save(state, in: options.directory)
            return state
        } catch {
            try? Self.save(state, in: options.directory)
            progress("failed: \(error); removing what was created")
            await Self.down(directory: options.directory, progress: progress)
            throw error
        }
    }

    private func makeHost(_ i: Int, cgroups: CgroupTree, cpuCount: Int, progress: @Sendable (String) -> Void)
        async throws -> State.Host
    {
        let ns = namespace(i)
        let name = "h\(i)"
        progress("host \(name): namespace \(ns), \(hostAddress(i))/16")
        try await ip("netns", "add", ns)
        try await ip("link", "add", veth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
        try await ip("link", "set", veth(i), "master", bridge, "up")
        try await ip("-n", ns, "link", "add", "br0", "type", "bridge")
        try await ip("-n", ns, "link", "set", "eth0", "master", "br0")
        for link in ["lo", "eth0", "br0"] { try await ip("-n", ns, "link", "set", link, "up") }
        try await ip("-n", ns, "addr", "add", "\(hostAddress(i))/16", "dev", "br0")

        let cpu = options.pinCPUs ? (i - 1) % cpuCount : nil
        let groups = try cgroups.create(name, cpu: cpu, quota: options.cpuQuota)
        if !groups.isEmpty {
            progress(
                "host \(name): cgroup \(cgroups.name)/\(name)" + (cpu.map { ", CPU \($0)" } ?? "")
                    + (options.cpuQuota.map { ", quota \($0) CPU" } ?? ""))
        }

        let hostDirectory = "\(options.directory)/\(name)"
        try FileManager.default.createDirectory(atPath: hostDirectory, withIntermediateDirectories: true)
        let log = hostDirectory + "/agent.log"
        let driver = options.drivers[name] ?? .qemu
        let images = options.imagesDirectory ?? options.directory + "/images"
        var driverArguments: [String]
        var libvirtd: TestbedLibvirtd?
        switch driver {
        case .qemu:
            driverArguments = [
                "--driver", "qemu", "--driver-opt", "network=tap", "--driver-opt", "bridge=br0",
                "--driver-opt", "pool=\(options.network).\(i).0/24", "--driver-opt", "guest-prefix=16",
                "--driver-opt", "memory=\(options.memoryMiB)MiB",
                "--driver-opt",
                "cpus=\(options.cpuQuota.map { max(1, Int($0.rounded(.up))) } ?? (cpu == nil ? cpuCount : 1))",
            ]
        case .libvirt:
            let daemon = TestbedLibvirtd(directory: hostDirectory + "/libvirt")
            progress("host \(name): libvirtd in \(ns) and a mount namespace of its own, \(daemon.uri)")
            try await daemon.start(namespace: ns, cgroups: groups)
            libvirtd = daemon
            // Other hosts' libvirtd reach this one through its socket (default `peer-uri`), and
            // QEMU's migration stream goes to the agent's address on the testbed network.
            driverArguments = [
                "--driver", "libvirt", "--driver-opt", "uri=\(daemon.uri)",
                "--driver-opt", "migration-tls-dir=\(daemon.tlsDirectory)",
            ]
        }
        let disks = options.directory + (driver == .qemu ? "/disks" : "/libvirt-disks")
        try FileManager.default.createDirectory(atPath: disks, withIntermediateDirectories: true)
        driverArguments += ["--driver-opt", "images=\(images)", "--driver-opt", "shared-disks=\(disks)"]
        // nsenter enters the network namespace only: `ip netns exec` would also remount /sys and
        // hide the cgroup tree the agent measures its host's CPU in.
        let agent =
            [
                "nsenter", "--net=/run/netns/\(ns)", options.executable, "agent",
                "--controller", "http://\(controllerAddress):\(options.controllerPort)", "--name", name,
                "--state-dir", hostDirectory + "/vms", "--address", hostAddress(i),
            ] + driverArguments
        let pid = try await Self.spawn(
            agent, log: log, pidFile: hostDirectory + "/agent.pid", cgroups: groups,
            tokenFile: options.directory + "/controller/join.token")
        return State.Host(
            name: name, namespace: ns, veth: veth(i), address: hostAddress(i), agentPID: pid, cgroups: groups,
            log: log, driver: driver, libvirtDirectory: libvirtd?.directory, command: agent)
    }

    // MARK: Faults

    /// Kills process `pid` with SIGKILL, as a crash would (a host's QEMUs run on), and waits
    /// until it is gone (or a zombie nobody has reaped yet), for at most 10 s.
    public static func crash(_ pid: Int32) async {
        guard pid > 0, kill(pid, SIGKILL) == 0 else { return }
        let deadline = ContinuousClock.now + .seconds(10)
        while kill(pid, 0) == 0, ContinuousClock.now < deadline {
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
            // The state follows the command's closing parenthesis: `Z` is dead, not yet reaped.
            if let end = stat.lastIndex(of: ")"), stat[end...].dropFirst().trimmingCharacters(in: .whitespaces).hasPrefix("Z") {
                return
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Starts the agent of host `name` again as `up` started it, in its namespace and cgroups,
    /// after a crash; records its new PID.
    public static func restartAgent(_ name: String, in state: inout State, directory: String) async throws {
        guard let index = state.hosts.firstIndex(where: { $0.name == name }), let command = state.hosts[index].command else {
            throw VireoError(.notFound, "the testbed in \(directory) has no host \(name) it can restart")
        }
        let host = state.hosts[index]
        state.hosts[index].agentPID = try await spawn(
            command, log: host.log, pidFile: "\(directory)/\(name)/agent.pid", cgroups: host.cgroups,
            tokenFile: directory + "/controller/join.token")
        try save(state, in: directory)
    }

    /// Starts the controller again as `up` started it, after a crash; records its new PID.
    public static func restartController(in state: inout State, directory: String) async throws {
        guard let command = state.controllerCommand else {
            throw VireoError(.notFound, "the testbed in \(directory) does not say how its controller was started")
        }
        state.controllerPID = try await spawn(
            command, log: directory + "/controller/controller.log", pidFile: directory + "/controller/controller.pid")
        try save(state, in: directory)
    }

    /// Stops the agents, their QEMUs and the controller, and removes namespaces, links and cgroups.
    /// Safe to run more than once and after a partial `up`.
    public static func down(directory: String, progress: @Sendable (String) -> Void) async {
        let file = stateFile(in: directory)
        // A host's libvirtd is started before the host is recorded: one whose `up` crashed
        // meanwhile is found by its directory.
        guard let data = FileManager.default.contents(atPath: file),
            let state = try? JSONDecoder().decode(State.self, from: data)
        else {
            for daemon in TestbedLibvirtd.all(in: directory) {
                await daemon.stop { progress("leftover \(daemon.directory): \($0)") }
            }
            progress("no testbed in \(directory)")
            return
        }
        for host in state.hosts {
            progress("host \(host.name): stopping the agent and its VMs")
            terminate(host.agentPID)
            if let libvirt = host.libvirtDirectory {
                await TestbedLibvirtd(directory: libvirt).stop { progress("host \(host.name): \($0)") }
            }
            // Whatever still runs in the namespace (QEMUs outlive their agent by design), and the
            // private networks its contexts' QEMUs were on.
            await killAll(inNamespace: host.namespace)
            let networks = await QEMUDriver.removePrivateNetworks(stateDirectory: "\(directory)/\(host.name)/vms")
            if !networks.isEmpty { progress("host \(host.name): private networks \(networks.joined(separator: ", ")) removed") }
        }
        for daemon in TestbedLibvirtd.all(in: directory) {
            await daemon.stop { progress("leftover \(daemon.directory): \($0)") }
        }
        await killAll(inNamespace: "\(state.name)-h\(state.hosts.count + 1)")
        if state.controllerPID > 0 {
            progress("controller: stopping")
            terminate(state.controllerPID)
        }
        // One more than recorded: the host an `up` was making when it stopped.
        await removeByName(state.name, hosts: state.hosts.count + 1)
        for host in state.hosts {
            for group in host.cgroups { CgroupTree.remove(group) }
        }
        for parent in state.cgroupParents { CgroupTree.remove("\(parent)/h\(state.hosts.count + 1)") }
        for parent in state.cgroupParents { CgroupTree.remove(parent) }
        try? FileManager.default.removeItem(atPath: file)
        progress("testbed \(state.name) is down")
    }

    /// SIGKILLs every process in the network namespace `namespace`, if it exists.
    static func killAll(inNamespace namespace: String) async {
        guard let pids = try? await HostTool.text("ip", ["netns", "pids", namespace]) else { return }
        for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
    }

    /// Removes the links and namespaces a testbed called `name` would have.
    static func removeByName(_ name: String, hosts: Int) async {
        for i in 1...max(1, hosts) {
            _ = try? await HostTool.run("ip", ["netns", "del", "\(name)-h\(i)"], acceptedStatus: [0, 1, 2])
            _ = try? await HostTool.run("ip", ["link", "del", "\(name)-v\(i)"], acceptedStatus: [0, 1, 2])
        }
        _ = try? await HostTool.run("ip", ["link", "del", "\(name)-br"], acceptedStatus: [0, 1, 2])
        // The controller's namespace keeps its guest firewall while another testbed's bridge is up.
        let bridges = (try? await HostTool.text("ip", ["-o", "link", "show", "type", "bridge"])) ?? ""
        let others = bridges.split(separator: "\n").contains { line in
            line.split(separator: ":").dropFirst().first.map { $0.trimmingCharacters(in: .whitespaces).hasSuffix("-br") } ?? false
        }
        if !others { await GuestFirewall.remove() }
    }

    private func ip(_ arguments: String...) async throws {
        try await HostTool.run("ip", arguments)
    }

    /// Starts `command` in its own session (it outlives this process), with output to `log`,
    /// inside `cgroups` (see `HostTool.spawnDetached`).
    static func spawn(
        _ command: [String], log: String, pidFile: String, cgroups: [String] = [], tokenFile: String? = nil
    ) async throws -> Int32 {
        try await HostTool.spawnDetached(command, log: log, pidFile: pidFile, cgroups: cgroups, tokenFile: tokenFile)
    }

    static func waitForFile(_ path: String, process pid: Int32, timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if FileManager.default.fileExists(atPath: path) { return }
            guard kill(pid, 0) == 0 else { throw VireoError(.internal, "process \(pid) exited before writing \(path)") }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw VireoError(.internal, "\(path) did not appear within \(timeout)")
    }

    static func terminate(_ pid: Int32) {
        guard pid > 0, kill(pid, SIGTERM) == 0 else { return }
        for _ in 0..<100 where kill(pid, 0) == 0 { usleep(20_000) }
        if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
    }

    static func save(_ state: State, in directory: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(state).write(to: URL(fileURLWithPath: stateFile(in: directory)), options: .atomic)
    }
}

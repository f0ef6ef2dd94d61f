import ArgumentParser
import Foundation
import VireoClient
import VireoModel
import VireoTestbed

struct TestbedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "testbed",
        abstract: "Several hosts on this machine: network namespaces, a bridge, one agent each (root).",
        discussion: """
            `up N` creates N hosts h1..hN, each a network namespace with its own `vireo agent` \
            (`--driver qemu` by default; `--driver h2=libvirt` gives h2 a libvirtd of its own, in its namespace), \
            joined by a bridge on 198.18.0.0/16 (RFC 2544 benchmark space), a controller on 198.18.0.1, \
            and per-host cgroups (a CPU each, optionally a quota) so that hosts compete like real ones. \
            VM disks are kept in DIR/disks (DIR/libvirt-disks on libvirt hosts), which all hosts of a driver see, \
            so VMs can be live-migrated between hosts of one driver and moved cold (`vireo migrate --cold`) across. \
            `down` removes everything `up` created, including the VMs and libvirt hosts' daemons, also after a crashed `up`.
            """,
        subcommands: [TestbedUp.self, TestbedDown.self])
}

struct TestbedOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Directory for the testbed's controller, hosts, images and disks.", valueName: "dir"))
    var dir: String = ServeOptions.defaultDataDirectory() + "/testbed"
}

struct TestbedUp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up", abstract: "Create N hosts and a controller, and wait until the hosts have joined.")

    @Argument(help: "Number of hosts (1–200).") var hosts: Int
    @OptionGroup var testbed: TestbedOptions
    @Option(help: ArgumentHelp("Prefix of interface, namespace and cgroup names (≤ 8 letters/digits).", valueName: "name"))
    var name: String = "vireo"
    @Option(help: ArgumentHelp("Network: 198.18 or 198.19 (the /16 used).", valueName: "prefix"))
    var network: String = "198.18"
    @Option(help: ArgumentHelp("Controller port on the bridge address.", valueName: "port"))
    var port: Int = 7480
    @Option(help: ArgumentHelp("CPU quota per host, in CPUs (e.g. 0.5). Default: none.", valueName: "cpus"))
    var cpuQuota: Double?
    @Flag(help: "Do not give each host its own CPU (cpuset).") var noPin = false
    @Option(help: ArgumentHelp("Memory each host offers to guests.", valueName: "size"))
    var memory: String = "2GiB"
    @Option(
        help: ArgumentHelp(
            "Drivers of named hosts as HOST=DRIVER pairs (qemu or libvirt), e.g. h1=qemu,h2=libvirt; others run qemu.",
            valueName: "pairs"))
    var driver: String?

    func run() async throws {
        // Checked before anything is created.
        let drivers = try driver.map { try TestbedDriver.parse($0, hosts: hosts) } ?? [:]
        var options = Testbed.Options(
            hosts: hosts, directory: testbed.dir, executable: try currentExecutable())
        options.name = name
        options.network = network
        options.controllerPort = port
        options.cpuQuota = cpuQuota
        options.pinCPUs = !noPin
        options.drivers = drivers
        options.memoryMiB = try ByteSize.parseMiB(memory, field: "--memory")
        let state = try await Testbed(options).up { line in
            FileHandle.standardError.write(Data("testbed: \(line)\n".utf8))
        }
        try await waitForHosts(state)
        let hostList = state.hosts.map { "\($0.name) (\(($0.driver ?? .qemu).rawValue))" }.joined(separator: ", ")
        print(
            """
            Testbed \(state.name) is up: \(state.hosts.count) host(s) \(hostList).
              export VIREO_SERVER=\(state.controllerURL)
              export VIREO_TOKEN=$(cat \(state.adminTokenFile))
              vireo host list
            Logs: \(testbed.dir)/controller/controller.log, \(testbed.dir)/hN/agent.log. Remove with: vireo testbed down --dir \(testbed.dir)
            """)
    }
}

struct TestbedDown: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down", abstract: "Stop the testbed's VMs, agents and controller and remove its namespaces.")

    @OptionGroup var testbed: TestbedOptions

    func run() async throws {
        await Testbed.down(directory: testbed.dir) { line in
            FileHandle.standardError.write(Data("testbed: \(line)\n".utf8))
        }
    }
}

/// Waits until every agent of the testbed has registered and is ready.
func waitForHosts(_ state: Testbed.State, timeout: Duration = .seconds(60)) async throws {
    let token = try String(contentsOfFile: state.adminTokenFile, encoding: .utf8)
        .trimmingCharacters(in: .whitespacesAndNewlines)
    let client = VireoClient(server: state.controllerURL, token: token)
    let wanted = Set(state.hosts.map(\.name))
    let deadline = ContinuousClock.now + timeout
    var ready: Set<String> = []
    while ContinuousClock.now < deadline {
        ready = Set(((try? await client.hosts().items) ?? []).filter { $0.state == .ready }.map(\.name))
        if wanted.isSubset(of: ready) {
            FileHandle.standardError.write(Data("testbed: all \(wanted.count) host(s) ready\n".utf8))
            return
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw VireoError(
        .unavailable,
        "hosts \(wanted.subtracting(ready).sorted().joined(separator: ", ")) did not join within \(timeout); "
            + "see their agent.log")
}

/// The path of the running `vireo`, so the testbed starts the same build.
func currentExecutable() throws -> String {
    guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
        throw VireoError(.internal, "cannot find the vireo executable (/proc/self/exe)")
    }
    return path
}

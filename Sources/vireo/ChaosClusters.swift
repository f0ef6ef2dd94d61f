import Foundation
import VireoAgent
import VireoDriver
import VireoDriverQEMU
import VireoDriverSimulated
import VireoModel
import VireoProcess
import VireoTestbed

/// What one host runs, seen from outside its agent: from the simulated driver's file, or from
/// the QEMU processes in the host's network namespace and their disks.
struct HostObservation {
    struct Instance {
        var id: VMID
        var name: String
        var running: Bool
        /// Whether its guest's vCPUs are stopped; nil when it cannot be told here.
        var paused: Bool?
    }
    var instances: [Instance]
    /// The contexts its agent keeps.
    var contexts: [ContextBookView]
    /// Why its agent's context book could not be read, when it could not.
    var unreadableBook: String?
    /// The snapshots of its contexts' VMs, by VM.
    var snapshots: [VMID: [String]]

    /// An observation that starts from the agent's context book at `path`.
    init(book path: String) {
        instances = []
        snapshots = [:]
        do {
            contexts = try ContextBookView.read(from: path)
        } catch {
            contexts = []
            unreadableBook = "\(error)"
        }
    }
}

/// The processes of a chaos run: a controller and two agents, each killed and started again at
/// will; and what each host runs.
protocol ChaosCluster: AnyObject, Sendable {
    var hosts: [String] { get }
    var url: String { get }
    var token: String? { get }
    /// How long a round may take to settle after its fault.
    var settleWithin: Double { get }
    /// Below this many VMs a round rather creates; above the high mark it rather deletes.
    var vmRange: (low: Int, high: Int) { get }
    func start(progress: @escaping @Sendable (String) -> Void) async throws
    /// SIGKILL of `target` (`controller` or a host's name), waiting until it is gone.
    func crash(_ target: String) async
    /// `target` started again as it was first started.
    func restart(_ target: String) async throws
    func observe(_ host: String) async -> HostObservation
    /// Everything the run started is stopped, and what it created removed.
    func tearDown() async
}

/// The simulated driver's cluster: processes of this machine on loopback, the driver keeping what
/// it runs in a file so that its VMs outlive a killed agent, as QEMUs do.
final class LoopbackChaosCluster: ChaosCluster, @unchecked Sendable {
    let directory: String
    let hosts = ["h1", "h2"]
    let children = Children()
    var controller: Process?
    var agents: [String: Process] = [:]
    var port = 0
    var url: String { "http://127.0.0.1:\(port)" }
    let token: String? = nil
    let settleWithin: Double = 30
    let vmRange = (low: 3, high: 12)

    /// Short times, so that a round settles in seconds: heartbeats every 200 ms, unreachable after
    /// 1 s, lost after 3 s (an agent cut off fences after 2 s).
    static let controllerTiming = ["--heartbeat", "200ms", "--host-timeout", "1s", "--host-lost-after", "3s"]

    init(directory: String) { self.directory = directory }

    func start(progress: @escaping @Sendable (String) -> Void) async throws {
        port = try LoopbackPort.free()
        try await restart("controller")
        for host in hosts { try await restart(host) }
    }

    func crash(_ target: String) async {
        guard let process = target == "controller" ? controller : agents[target], process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func restart(_ target: String) async throws {
        let executable = try currentExecutable()
        if target == "controller" {
            controller = try children.start(
                executable,
                [
                    "controller", "--data-dir", directory + "/controller", "--listen", "127.0.0.1:\(port)",
                    "--migration-tls", "off", "--log-level", "notice",
                ] + Self.controllerTiming, log: directory + "/controller.log")
            return
        }
        agents[target] = try children.start(
            executable,
            [
                "agent", "--controller", url, "--name", target, "--state-dir", directory + "/" + target, "--driver",
                "simulated", "--driver-opt", "boot-delay-ms=50", "--driver-opt", "stop-delay-ms=20", "--driver-opt",
                "persist=on",
                // A context's clean state takes as long to save and load as a small guest's on QEMU,
                // so that a kill lands in the middle of a reset or keep.
                "--driver-opt", "snapshot-save-ms=200", "--driver-opt", "snapshot-load-ms=100", "--driver-opt",
                "snapshot-wait=on", "--log-level", "notice",
            ], log: directory + "/\(target).log")
    }

    func observe(_ host: String) async -> HostObservation {
        var observation = HostObservation(book: "\(directory)/\(host)/contexts/contexts.json")
        let persisted = SimulatedDriver.Persisted.read(from: "\(directory)/\(host)/simulated.json")
        for instance in persisted?.instances ?? [] {
            observation.instances.append(
                .init(
                    id: instance.spec.id, name: instance.spec.name, running: instance.state == .running, paused: instance.paused))
            observation.snapshots[instance.spec.id] = instance.snapshots
        }
        return observation
    }

    func tearDown() async { children.killAll() }
}

/// The QEMU driver's cluster: a two-host testbed (network namespaces, shared disk storage; root),
/// its controller on the bridge.
final class TestbedChaosCluster: ChaosCluster, @unchecked Sendable {
    let directory: String
    let images: String?
    let hosts = ["h1", "h2"]
    var state: Testbed.State?
    var token: String?
    var url: String { state?.controllerURL ?? "" }
    /// A boot under TCG takes 2–3 s, a move of a small guest a few: a round gets longer.
    let settleWithin: Double = 120
    /// Fewer guests than simulated ones: each is a QEMU on these two cores.
    let vmRange = (low: 2, high: 5)

    /// Heartbeats every 500 ms, unreachable after 3 s, lost after 8 s: a host busy booting guests
    /// under TCG must not pass for lost.
    static let controllerTiming = ["--heartbeat", "500ms", "--host-timeout", "3s", "--host-lost-after", "8s"]

    init(directory: String, images: String?) {
        self.directory = directory
        self.images = images
    }

    func start(progress: @escaping @Sendable (String) -> Void) async throws {
        var options = Testbed.Options(hosts: hosts.count, directory: directory + "/testbed", executable: try currentExecutable())
        options.name = "vchaos"
        options.network = "198.19"
        options.controllerPort = 7489
        options.pinCPUs = false
        options.memoryMiB = 1024
        options.imagesDirectory = images
        options.controllerArguments = Self.controllerTiming + ["--log-level", "notice"]
        let state = try await Testbed(options).up(progress: progress)
        self.state = state
        token = try String(contentsOfFile: state.adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        try await waitForHosts(state, timeout: .seconds(120))
    }

    func crash(_ target: String) async {
        guard let state else { return }
        let pid = target == "controller" ? state.controllerPID : state.hosts.first { $0.name == target }?.agentPID ?? 0
        await Testbed.crash(pid)
    }

    func restart(_ target: String) async throws {
        guard var state else { return }
        if target == "controller" {
            try await Testbed.restartController(in: &state, directory: directory + "/testbed")
        } else {
            try await Testbed.restartAgent(target, in: &state, directory: directory + "/testbed")
        }
        self.state = state
    }

    /// The QEMUs in the host's namespace (each names its VM: `-name vireo-NAME,process=vireo-ID`),
    /// whether each one's vCPU threads ran at all in the last half second, and its contexts' disks'
    /// snapshots.
    func observe(_ host: String) async -> HostObservation {
        let stateDirectory = "\(directory)/testbed/\(host)/vms"
        var observation = HostObservation(book: stateDirectory + "/contexts/contexts.json")
        let pids = ((try? await HostTool.text("ip", ["netns", "pids", "vchaos-\(host)"])) ?? "")
            .split(separator: "\n").compactMap { Int32($0) }
        var qemus: [(pid: Int32, id: VMID, name: String, ran: UInt64?)] = []
        for pid in pids {
            guard let arguments = Self.commandLine(of: pid), arguments.first?.contains("qemu-system") == true,
                let index = arguments.firstIndex(of: "-name"), index + 1 < arguments.count
            else { continue }
            let parts = arguments[index + 1].split(separator: ",")
            guard let name = parts.first?.dropFirst("vireo-".count),
                let process = parts.first(where: { $0.hasPrefix("process=vireo-") })
            else { continue }
            qemus.append((pid, VMID(String(process.dropFirst("process=vireo-".count))), String(name), Self.vcpuRuns(of: pid)))
        }
        try? await Task.sleep(for: .milliseconds(500))
        for qemu in qemus {
            let after = Self.vcpuRuns(of: qemu.pid)
            let paused: Bool? = if let before = qemu.ran, let after { after == before } else { nil }
            let alive = kill(qemu.pid, 0) == 0
            observation.instances.append(.init(id: qemu.id, name: qemu.name, running: alive, paused: paused))
        }
        for record in observation.contexts {
            guard let disk = Self.disk(of: record.vm, in: stateDirectory) else { continue }
            observation.snapshots[record.vm] = try? await QEMUDriver.storedSnapshots(disk)
        }
        return observation
    }

    func tearDown() async {
        await Testbed.down(directory: directory + "/testbed") { _ in }
    }

    static func commandLine(of pid: Int32) -> [String]? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    /// How many times the QEMU's vCPU threads (`CPU n/TCG`, `CPU n/KVM`) have been scheduled
    /// (`/proc/PID/task/TID/schedstat`, third field; QEMU names them with `-name ...,debug-threads=on`);
    /// nil when the process is gone or names none. A paused
    /// guest's vCPUs wait without running at all; a running one's wake for its timer at least.
    static func vcpuRuns(of pid: Int32) -> UInt64? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return nil }
        var runs: UInt64?
        for task in tasks {
            let base = "/proc/\(pid)/task/\(task)"
            guard let comm = try? String(contentsOfFile: base + "/comm", encoding: .utf8), comm.hasPrefix("CPU "),
                let stat = try? String(contentsOfFile: base + "/schedstat", encoding: .utf8)
            else { continue }
            let fields = stat.split(separator: " ")
            if fields.count >= 3, let count = UInt64(fields[2].trimmingCharacters(in: .whitespacesAndNewlines)) {
                runs = (runs ?? 0) + count
            }
        }
        return runs
    }

    /// The disk of VM `id` as its driver recorded it (`<state-dir>/<id>/vm.json`).
    static func disk(of id: VMID, in stateDirectory: String) -> String? {
        struct Record: Decodable { var disk: String }
        return FileManager.default.contents(atPath: "\(stateDirectory)/\(id)/vm.json")
            .flatMap { try? JSONDecoder().decode(Record.self, from: $0) }?.disk
    }

}

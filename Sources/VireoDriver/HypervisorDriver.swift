import VireoModel

/// What the agent asks a driver to run.
public struct InstanceSpec: Sendable, Equatable, Codable {
    public var id: VMID
    public var name: String
    public var image: String
    public var cpus: Int
    public var memoryMiB: Int

    public init(id: VMID, name: String, image: String, cpus: Int, memoryMiB: Int) {
        self.id = id
        self.name = name
        self.image = image
        self.cpus = cpus
        self.memoryMiB = memoryMiB
    }
}

/// The state of a VM as its hypervisor sees it.
public enum InstanceState: String, Sendable, Codable, Equatable {
    /// Defined (disk and configuration exist) but not running.
    case stopped
    /// Process started, guest not ready yet.
    case starting
    case running
    case stopping
    /// Crashed or could not start; `InstanceStatus.message` says why.
    case failed
}

public struct InstanceStatus: Sendable, Equatable, Codable {
    public var id: VMID
    public var name: String
    public var state: InstanceState
    public var message: String?
    /// Where the guest's services are reachable from its host (`127.0.0.1:PORT` with a forwarded
    /// port, or the guest's IP), when the driver gives it a network.
    public var address: String?

    public init(id: VMID, name: String, state: InstanceState, message: String? = nil, address: String? = nil) {
        self.id = id
        self.name = name
        self.state = state
        self.message = message
        self.address = address
    }
}

/// A hypervisor as the agent drives it.
///
/// The basic lifecycle is required. Optional operations have default implementations that throw
/// `.unsupported`, so a driver states what it cannot do instead of crashing; `capabilities` says
/// what it can, and placement uses that.
public protocol HypervisorDriver: Sendable {
    /// The name used on the command line and in host fingerprints (`simulated`, `qemu`, ...).
    var name: String { get }
    var capabilities: Set<Capability> { get }

    /// Capacity and facts about this host.
    func fingerprint() async throws -> HostFingerprint

    /// Finds VMs left running by a previous agent process and takes them over, so that an agent
    /// restart neither loses nor duplicates a VM. Returns what it found.
    func recover() async throws -> [InstanceStatus]

    /// Defines the VM (disk, configuration) without starting it. Idempotent for the same spec.
    func create(_ spec: InstanceSpec) async throws
    /// Starts a defined VM; returns once the process is started (readiness shows in `status`).
    func start(_ id: VMID) async throws
    /// Stops gracefully, then forcefully after the driver's grace period.
    func stop(_ id: VMID) async throws
    /// Stops if needed and removes everything the driver created for the VM.
    func delete(_ id: VMID) async throws
    /// Every VM this driver knows about, with its current state.
    func status() async throws -> [InstanceStatus]

    /// Pauses vCPUs (`pause` capability).
    func pause(_ id: VMID) async throws
    func resume(_ id: VMID) async throws

    /// Called when the agent exits: let go of the VMs without stopping them (they keep running,
    /// and the next agent re-adopts them through `recover`).
    func detach() async
}

extension HypervisorDriver {
    public func detach() async {}
    public func pause(_ id: VMID) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot pause VMs")
    }
    public func resume(_ id: VMID) async throws {
        throw VireoError(.unsupported, "driver '\(name)' cannot resume VMs")
    }
}

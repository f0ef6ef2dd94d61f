import VireoModel

/// A host as placement sees it: capacity, what is already allocated, what its driver can do.
public struct HostSnapshot: Sendable, Equatable {
    public var id: HostID
    public var name: String
    public var state: HostState
    public var cpus: Int
    public var memoryMiB: Int
    public var allocatedCPUs: Int
    public var allocatedMemoryMiB: Int
    public var capabilities: CapabilitySet

    public init(
        id: HostID, name: String, state: HostState, cpus: Int, memoryMiB: Int, allocatedCPUs: Int = 0,
        allocatedMemoryMiB: Int = 0, capabilities: Set<Capability> = []
    ) {
        self.id = id
        self.name = name
        self.state = state
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.allocatedCPUs = allocatedCPUs
        self.allocatedMemoryMiB = allocatedMemoryMiB
        self.capabilities = CapabilitySet(capabilities)
    }
}

/// The whole cluster at one instant. Placement reads it and nothing else.
public struct ClusterSnapshot: Sendable {
    public var hosts: [HostSnapshot]
    public init(hosts: [HostSnapshot]) { self.hosts = hosts }
}

/// One VM to be placed.
public struct PlacementRequest: Sendable, Equatable {
    public var cpus: Int
    public var memoryMiB: Int
    /// Host name the VM is pinned to, if any.
    public var pinnedHost: String?
    public var requiredCapabilities: CapabilitySet

    public init(cpus: Int, memoryMiB: Int, pinnedHost: String? = nil, requiredCapabilities: Set<Capability> = []) {
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.pinnedHost = pinnedHost
        self.requiredCapabilities = CapabilitySet(requiredCapabilities)
    }
}

/// Cluster-wide placement settings.
public struct PlacementSettings: Sendable, Equatable {
    /// vCPUs that may be allocated per physical CPU.
    public var cpuOvercommit: Double
    /// Memory that may be allocated per MiB of host memory (1.0: no overcommit).
    public var memoryOvercommit: Double

    public init(cpuOvercommit: Double = 4.0, memoryOvercommit: Double = 1.0) {
        self.cpuOvercommit = cpuOvercommit
        self.memoryOvercommit = memoryOvercommit
    }
}

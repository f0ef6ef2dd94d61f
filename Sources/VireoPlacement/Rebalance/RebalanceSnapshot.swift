import VireoModel

/// A host as the rebalancer sees it: capacity, what its driver can do, how busy it has been,
/// and how fast it can send memory to another host.
public struct RebalanceHost: Sendable, Equatable {
    public var id: HostID
    public var name: String
    public var state: HostState
    public var cpus: Int
    public var memoryMiB: Int
    public var capabilities: CapabilitySet
    /// Measured CPU use as fractions of the whole host (0...1), oldest first. Empty: the planner
    /// sums its VMs' use instead.
    public var cpuUsageHistory: [Double]
    /// Bandwidth available to live migration on this host's link, MiB/s.
    public var linkMiBPerSecond: Double

    public init(
        id: HostID, name: String, state: HostState = .ready, cpus: Int, memoryMiB: Int,
        capabilities: Set<Capability> = [.liveMigration], cpuUsageHistory: [Double] = [],
        linkMiBPerSecond: Double = 1_024
    ) {
        self.id = id
        self.name = name
        self.state = state
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.capabilities = CapabilitySet(capabilities)
        self.cpuUsageHistory = cpuUsageHistory
        self.linkMiBPerSecond = linkMiBPerSecond
    }
}

/// A running VM as the rebalancer sees it.
public struct RebalanceVM: Sendable, Equatable {
    public var id: VMID
    public var name: String
    public var host: HostID
    /// Allocated vCPUs and memory: what a destination must have free.
    public var cpus: Int
    public var memoryMiB: Int
    /// Measured CPU use in cores, oldest first.
    public var cpuUsageHistory: [Double]
    /// How fast the guest dirties memory, MiB/s: what decides how long a live migration takes.
    public var dirtyRateMiBPerSecond: Double
    /// The application the VM belongs to, if any (its objectives are in the snapshot).
    public var application: String?
    /// VMs sharing a group must not share a host.
    public var antiAffinityGroup: String?
    /// When the VM last started moving, in the snapshot's seconds; nil if never.
    public var lastMovedAt: Double?
    /// The host it left when it last moved; nil if never.
    public var previousHost: HostID?
    /// Pinned to its host by its spec: never moved by a policy.
    public var pinned: Bool

    public init(
        id: VMID, name: String, host: HostID, cpus: Int, memoryMiB: Int, cpuUsageHistory: [Double] = [],
        dirtyRateMiBPerSecond: Double = 0, application: String? = nil, antiAffinityGroup: String? = nil,
        lastMovedAt: Double? = nil, previousHost: HostID? = nil, pinned: Bool = false
    ) {
        self.pinned = pinned
        self.id = id
        self.name = name
        self.host = host
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.cpuUsageHistory = cpuUsageHistory
        self.dirtyRateMiBPerSecond = dirtyRateMiBPerSecond
        self.application = application
        self.antiAffinityGroup = antiAffinityGroup
        self.lastMovedAt = lastMovedAt
        self.previousHost = previousHost
    }
}

/// An application and where its objectives stand: the signal the `slo` policy acts on.
public struct RebalanceApplication: Sendable, Equatable {
    public var name: String
    public var objectives: [ObjectiveStatus]
    /// When the last move made for it ended, in the snapshot's seconds (its `now` while one is
    /// still under way); nil if none. Its objectives need time to show the effect.
    public var lastMoveEndedAt: Double?

    public init(name: String, objectives: [ObjectiveStatus], lastMoveEndedAt: Double? = nil) {
        self.name = name
        self.objectives = objectives
        self.lastMoveEndedAt = lastMoveEndedAt
    }
}

/// A live migration already running: it holds budget and capacity on both hosts.
public struct MigrationInFlight: Sendable, Equatable {
    public var vm: VMID
    public var source: HostID
    public var destination: HostID

    public init(vm: VMID, source: HostID, destination: HostID) {
        self.vm = vm
        self.source = source
        self.destination = destination
    }
}

/// Everything a rebalancing plan is computed from. The snapshot carries its own "now" (seconds
/// on any fixed clock, the same as `RebalanceVM.lastMovedAt`), so planning reads no clock.
public struct RebalanceSnapshot: Sendable, Equatable {
    public var now: Double
    /// Hosts in a stable order (callers sort by name): ties go to the earlier host.
    public var hosts: [RebalanceHost]
    public var vms: [RebalanceVM]
    public var applications: [RebalanceApplication]
    public var migrations: [MigrationInFlight]

    public init(
        now: Double, hosts: [RebalanceHost], vms: [RebalanceVM], applications: [RebalanceApplication] = [],
        migrations: [MigrationInFlight] = []
    ) {
        self.now = now
        self.hosts = hosts
        self.vms = vms
        self.applications = applications
        self.migrations = migrations
    }
}

/// Limits every policy respects, so that no plan starts a migration storm.
public struct MigrationBudget: Sendable, Equatable {
    /// Migrations running at once in the cluster, those in flight included.
    public var perCluster: Int
    /// Migrations running at once touching one host (as source or destination).
    public var perHost: Int

    public init(perCluster: Int = 2, perHost: Int = 1) {
        self.perCluster = perCluster
        self.perHost = perHost
    }
}

/// CPU use over time, oldest first.
public enum CPUHistory {
    /// Mean of the last `window` samples (all of them if fewer); nil without samples.
    public static func recentMean(_ samples: [Double], window: Int) -> Double? {
        guard !samples.isEmpty else { return nil }
        let recent = samples.suffix(max(1, window))
        return recent.reduce(0, +) / Double(recent.count)
    }
}

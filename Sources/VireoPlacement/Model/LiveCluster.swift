import VireoModel

/// A live host as the controller describes it to the planner: capacity, what its driver can do,
/// how busy it has been, and how fast it can send memory to another host.
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
    /// vCPUs and memory held by VMs that are not running yet.
    public var reservedCPUs: Int
    public var reservedMemoryMiB: Int
    /// Its hypervisor family: VMs move live only within one.
    public var family: String

    public init(
        id: HostID, name: String, state: HostState = .ready, cpus: Int, memoryMiB: Int,
        capabilities: Set<Capability> = [.liveMigration], cpuUsageHistory: [Double] = [],
        linkMiBPerSecond: Double = 1_024, reservedCPUs: Int = 0, reservedMemoryMiB: Int = 0, family: String = ""
    ) {
        self.family = family
        self.id = id
        self.name = name
        self.state = state
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.capabilities = CapabilitySet(capabilities)
        self.cpuUsageHistory = cpuUsageHistory
        self.linkMiBPerSecond = linkMiBPerSecond
        self.reservedCPUs = reservedCPUs
        self.reservedMemoryMiB = reservedMemoryMiB
    }
}

/// A running VM as the controller describes it to the planner.
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

/// A live cluster as the controller describes it: hosts, running VMs with their measured CPU,
/// applications with their objectives, migrations under way. It carries its own "now" (seconds
/// on any fixed clock, the same as `RebalanceVM.lastMovedAt`), so planning reads no clock.
/// Policies do not read it: they read the `PlacementCluster` made from it.
public struct RebalanceSnapshot: Sendable, Equatable {
    public var now: Double
    /// Hosts in a stable order (callers sort by name): ties go to the earlier host.
    public var hosts: [RebalanceHost]
    public var vms: [RebalanceVM]
    public var applications: [RebalanceApplication]
    public var migrations: [MigrationInFlight]
    /// Seconds between the VMs' CPU samples.
    public var sampleSeconds: Double

    public init(
        now: Double, hosts: [RebalanceHost], vms: [RebalanceVM], applications: [RebalanceApplication] = [],
        migrations: [MigrationInFlight] = [], sampleSeconds: Double = 2
    ) {
        self.now = now
        self.hosts = hosts
        self.vms = vms
        self.applications = applications
        self.migrations = migrations
        self.sampleSeconds = sampleSeconds
    }
}

extension PlacementCluster {
    /// The live cluster described by `snapshot`, in cores: a core is 1.0 of CPU.
    public init(_ snapshot: RebalanceSnapshot, settings: PlacementSettings = .live) {
        var hostIndex: [HostID: Int] = [:]
        hostIndex.reserveCapacity(snapshot.hosts.count)
        for (index, host) in snapshot.hosts.enumerated() where hostIndex[host.id] == nil { hostIndex[host.id] = index }
        let hosts = snapshot.hosts.map { host in
            PlacementHost(
                id: host.id, name: host.name, state: host.state, cores: host.cpus, memoryMiB: Double(host.memoryMiB),
                capabilities: host.capabilities, linkMiBPerSecond: host.linkMiBPerSecond,
                reservedVCPUs: host.reservedCPUs, reservedMemoryMiB: Double(host.reservedMemoryMiB), family: host.family)
        }
        let vms = snapshot.vms.map { vm in
            PlacementVM(
                id: vm.id, name: vm.name, vcpus: vm.cpus, memoryMiB: Double(vm.memoryMiB),
                dirtyRateMiBPerSecond: vm.dirtyRateMiBPerSecond, application: vm.application,
                antiAffinityGroup: vm.antiAffinityGroup,
                pinnedHost: vm.pinned ? hostIndex[vm.host].map { snapshot.hosts[$0].name } ?? "" : nil)
        }
        self.init(
            now: snapshot.now, interval: snapshot.sampleSeconds, settings: settings, hosts: hosts, vms: vms,
            applications: snapshot.applications)
        var vmIndex: [VMID: Int] = [:]
        vmIndex.reserveCapacity(snapshot.vms.count)
        for (index, vm) in snapshot.vms.enumerated() {
            vmIndex[vm.id] = index
            if let host = hostIndex[vm.host] { start(index, on: host) }
            if let previous = vm.previousHost { vmPreviousHost[index] = hostIndex[previous] ?? -1 }
            vmLastMoveStart[index] = vm.lastMovedAt ?? -.infinity
            vmDemand[index] = vm.cpuUsageHistory.last ?? 0
        }
        for migration in snapshot.migrations {
            let source = hostIndex[migration.source] ?? -1
            let destination = hostIndex[migration.destination] ?? -1
            if let vm = vmIndex[migration.vm], destination >= 0 {
                vmDestination[vm] = destination
            } else {
                otherMigrations.append((source, destination))
            }
        }
        for (index, host) in snapshot.hosts.enumerated() {
            hostMeasured[index] = host.cpuUsageHistory
            hostUtilisation[index] = host.cpuUsageHistory.last ?? 0
        }
        setHistory(snapshot.vms.map { vm in vm.cpuUsageHistory.map { $0 / Double(max(1, vm.cpus)) } })
    }
}

extension PlacementPolicy {
    /// Plans for a live cluster described by `snapshot`, under `settings`.
    public func plan(_ snapshot: RebalanceSnapshot, settings: PlacementSettings = .live) -> RebalancePlan {
        plan(PlacementCluster(snapshot, settings: settings))
    }
}

import VireoModel

/// One VM as the filters weigh it: a VM of the cluster (to be moved) or a new one (to be placed).
public struct Candidate: Sendable {
    /// Index in the cluster, -1 for a VM not yet in it.
    public var index: Int
    public var name: String
    public var vcpus: Int
    public var vcpuCapacity: Double
    public var memoryMiB: Double
    /// The CPU it brings to a host, in the cluster's CPU unit.
    public var demand: Double
    public var pinnedHost: String?
    public var requiredCapabilities: CapabilitySet
    public var antiAffinityGroup: String?
    /// Host it runs on, -1 for a new VM.
    public var source: Int
    public var previousHost: Int
    public var lastMoveStart: Double
    public var dirtyRateMiBPerSecond: Double
    /// Whether it belongs to an application with objectives.
    public var hasObjectives: Bool

    /// A VM to be placed for the first time, asking for `demand` (its whole size if nil).
    public init(new vm: PlacementVM, demand: Double? = nil) {
        index = -1
        name = vm.name
        vcpus = vm.vcpus
        vcpuCapacity = vm.vcpuCapacity
        memoryMiB = vm.memoryMiB
        self.demand = demand ?? vm.size
        pinnedHost = vm.pinnedHost
        requiredCapabilities = vm.requiredCapabilities
        antiAffinityGroup = vm.antiAffinityGroup
        source = -1
        previousHost = -1
        lastMoveStart = -.infinity
        dirtyRateMiBPerSecond = vm.dirtyRateMiBPerSecond
        hasObjectives = false
    }
}

/// What each host carries while a policy plans — allocations, CPU demand, migrations,
/// anti-affinity groups — changed as moves are planned, so each next decision sees the earlier
/// ones. Every policy plans on it, and the feasibility filters read it.
public struct HostLoads: Sendable {
    public let cluster: PlacementCluster
    /// The CPU each VM is counted with (a policy's choice: what it asks for now, or a recent mean).
    public let vmDemand: [Double]
    public private(set) var residents: [[Int]]
    public private(set) var vmHost: [Int]
    /// Migrating now, or moved by the plan being made.
    public private(set) var moving: [Bool]
    public private(set) var vcpus: [Int]
    public private(set) var memoryMiB: [Double]
    /// CPU asked for (not capped), and the same capped at what each VM's vCPUs can use of the
    /// host's cores, in the cluster's CPU unit.
    public private(set) var demand: [Double]
    public private(set) var cappedDemand: [Double]
    public private(set) var migrations: [Int]
    public private(set) var clusterMigrations: Int
    /// VMs of applications with objectives, per host.
    public private(set) var protectedVMs: [Int]
    /// Anti-affinity groups per host with a VM name holding each (empty when no VM has a group).
    private var groups: [[String: String]]
    /// Host utilisation history (fractions of the host, newest first, `historyDepth` each) made
    /// of its VMs' histories; kept only when asked for.
    public let historyDepth: Int
    private var history: [Double]

    /// The hosts' constants, shared with the cluster's `HostTable` (not copied), so hot loops read
    /// flat arrays.
    public let capacity: [Double]
    public let coreCapacity: [Double]
    public let vcpuLimit: [Int]
    public let memoryLimit: [Double]
    public let vmHasObjectives: [Bool]
    /// Ready hosts, hosts that can live-migrate, and every host's capabilities.
    public let ready: [Bool]
    public let liveMigration: [Bool]
    public let capabilities: [CapabilitySet]
    public let linkMiBPerSecond: [Double]
    /// Each host's hypervisor family (`HostTable.family`).
    public let family: [Int]
    private let watts: [Double]

    /// - Parameters:
    ///   - vmDemand: the CPU each VM is counted with; the cluster's current demand if nil.
    ///   - measuredWindow: where a host measures its own CPU, its mean over this many samples
    ///     replaces the sum of its VMs (it includes what their counters miss); nil: never.
    ///   - historyDepth: host history values to keep (for overload tests that read history).
    ///   - withPower: keep the hosts' power curves for `power(_:at:)`.
    public init(
        _ cluster: PlacementCluster, vmDemand: [Double]? = nil, measuredWindow: Int? = nil, historyDepth: Int = 0,
        withPower: Bool = false
    ) {
        self.cluster = cluster
        let hostCount = cluster.hostCount
        let demandOf = vmDemand ?? cluster.vmDemand
        self.vmDemand = demandOf
        residents = Array(repeating: [], count: hostCount)
        vmHost = cluster.vmHost
        moving = cluster.vmDestination.map { $0 >= 0 }
        let settings = cluster.settings
        let table = cluster.table
        capacity = table.capacity
        coreCapacity = table.coreCapacity
        vcpuLimit = table.vcpuLimit
        memoryLimit = table.memoryLimit
        ready = table.ready
        liveMigration = table.liveMigration
        capabilities = table.capabilities
        linkMiBPerSecond = table.linkMiBPerSecond
        family = table.family
        watts = !withPower || !table.watts.isEmpty ? table.watts : HostTable.watts(cluster.hosts)
        var objectiveApps = Set<String>()
        for app in cluster.applications where !app.objectives.isEmpty { objectiveApps.insert(app.name) }
        vmHasObjectives =
            objectiveApps.isEmpty
            ? Array(repeating: false, count: cluster.vmCount)
            : cluster.vms.map { $0.application.map(objectiveApps.contains) ?? false }
        vcpus = table.reservedVCPUs
        memoryMiB = table.reservedMemoryMiB
        demand = Array(repeating: 0, count: hostCount)
        cappedDemand = Array(repeating: 0, count: hostCount)
        migrations = Array(repeating: 0, count: hostCount)
        protectedVMs = Array(repeating: 0, count: hostCount)
        groups = cluster.vms.contains { $0.antiAffinityGroup != nil } ? Array(repeating: [:], count: hostCount) : []
        self.historyDepth = min(historyDepth, cluster.historyCount)
        history = Array(repeating: 0, count: hostCount * self.historyDepth)
        clusterMigrations = 0
        for host in 0..<hostCount {
            for vm in cluster.hostVMs[host] { add(vm, to: host) }
        }
        // What a host measures includes what its VMs' counters miss (emulation, I/O threads).
        if let measuredWindow {
            for host in 0..<hostCount {
                if let measured = CPUHistory.recentMean(cluster.hostMeasured[host], window: measuredWindow) {
                    demand[host] = measured * capacity[host]
                }
            }
        }
        for vm in 0..<cluster.vmCount where cluster.vmDestination[vm] >= 0 {
            let destination = cluster.vmDestination[vm]
            if cluster.vmHost[vm] >= 0 { migrations[cluster.vmHost[vm]] += 1 }
            migrations[destination] += 1
            clusterMigrations += 1
            // The destination already holds what is on its way to it.
            if settings.incomingHoldsCapacity { hold(vm, on: destination, sign: 1) }
        }
        for (source, destination) in cluster.otherMigrations {
            if source >= 0 { migrations[source] += 1 }
            if destination >= 0 { migrations[destination] += 1 }
            clusterMigrations += 1
        }
    }

    // MARK: Reading

    /// CPU asked for over capacity (0 for a host without CPU).
    @inline(__always)
    public func load(_ host: Int) -> Double { capacity[host] > 0 ? demand[host] / capacity[host] : 0 }

    /// CPU in use: the capped demand, never more than the host has.
    @inline(__always)
    public func usedCPU(_ host: Int) -> Double { min(cappedDemand[host], capacity[host]) }

    /// What `vm` can use of `host`'s CPU: its demand, capped at its vCPUs' share of the cores.
    @inline(__always)
    public func capped(_ demand: Double, vcpus: Int, on host: Int) -> Double {
        min(demand, Double(vcpus) * coreCapacity[host])
    }

    /// Watts of `host` at `utilisation` (its power curve, or the unmetered default); the loads
    /// must have been made `withPower`.
    @inline(__always)
    public func power(_ host: Int, at utilisation: Double) -> Double {
        let u = min(max(utilisation, 0), 1) * 10
        let lower = min(Int(u), 9)
        let base = host * 11 + lower
        return watts[base] + (watts[base + 1] - watts[base]) * (u - Double(lower))
    }

    public func hostName(_ host: Int) -> String { cluster.hosts[host].name }

    /// The VM as the filters weigh it.
    public func candidate(_ vm: Int) -> Candidate {
        let spec = cluster.vms[vm]
        var candidate = Candidate(new: spec, demand: vmDemand[vm])
        candidate.index = vm
        candidate.source = vmHost[vm]
        candidate.previousHost = cluster.vmPreviousHost[vm]
        candidate.lastMoveStart = cluster.vmLastMoveStart[vm]
        candidate.hasObjectives = vmHasObjectives[vm]
        return candidate
    }

    /// The anti-affinity partner of `group` on `host`, if any.
    func holder(of group: String, on host: Int) -> String? {
        groups.isEmpty ? nil : groups[host][group]
    }

    // MARK: History

    /// Copies the host's history (trailing near-zeros removed) into the front of `buffer` (at
    /// least `historyDepth` long) and returns how many values it has.
    public func copyHistory(_ host: Int, into buffer: inout [Double]) -> Int {
        let base = host * historyDepth
        var count = historyDepth
        // Removing VMs can leave tiny rounding residues; treat them as zero.
        while count > 0 && history[base + count - 1] <= 1e-12 { count -= 1 }
        for age in 0..<count { buffer[age] = history[base + age] }
        return count
    }

    /// As `copyHistory(_:into:)` for the host with `vm` added, without changing anything.
    public func copyHistory(_ host: Int, adding vm: Int, into buffer: inout [Double]) -> Int {
        let base = host * historyDepth
        let scale = cluster.vms[vm].size / capacity[host]
        var count = historyDepth
        for age in 0..<count { buffer[age] = history[base + age] + scale * cluster.vmHistory(vm, age: age) }
        while count > 0 && buffer[count - 1] <= 1e-12 { count -= 1 }
        return count
    }

    /// The host's history, newest first, trailing zeros removed.
    public func hostHistory(_ host: Int) -> [Double] {
        var values = [Double](repeating: 0, count: historyDepth)
        let count = copyHistory(host, into: &values)
        return Array(values[0..<count])
    }

    // MARK: Changing

    /// Counts `vm` on `host` (it runs there, or is planned to).
    public mutating func add(_ vm: Int, to host: Int) {
        residents[host].append(vm)
        vmHost[vm] = host
        hold(vm, on: host, sign: 1)
    }

    /// Stops counting `vm` on `host`.
    public mutating func remove(_ vm: Int, from host: Int) {
        if let index = residents[host].lastIndex(of: vm) { residents[host].remove(at: index) }
        hold(vm, on: host, sign: -1)
    }

    /// Plans a move: everything the VM holds follows it, and both hosts spend migration budget.
    public mutating func move(_ vm: Int, to destination: Int) {
        let source = vmHost[vm]
        if source >= 0 {
            remove(vm, from: source)
            migrations[source] += 1
        }
        add(vm, to: destination)
        migrations[destination] += 1
        clusterMigrations += 1
        moving[vm] = true
    }

    /// Undoes a move planned with `move(_:to:)` (a tentative plan that did not work out).
    public mutating func undoMove(_ vm: Int, from destination: Int, to source: Int) {
        remove(vm, from: destination)
        add(vm, to: source)
        migrations[destination] -= 1
        migrations[source] -= 1
        clusterMigrations -= 1
        moving[vm] = cluster.vmDestination[vm] >= 0
    }

    private mutating func hold(_ vm: Int, on host: Int, sign: Double) {
        let spec = cluster.vms[vm]
        let one: Int = sign > 0 ? 1 : -1
        vcpus[host] += one * spec.vcpus
        memoryMiB[host] += sign * spec.memoryMiB
        demand[host] += sign * vmDemand[vm]
        if sign < 0 && demand[host] < 0 { demand[host] = 0 }
        cappedDemand[host] += sign * capped(vmDemand[vm], vcpus: spec.vcpus, on: host)
        if vmHasObjectives[vm] { protectedVMs[host] += one }
        if !groups.isEmpty, let group = spec.antiAffinityGroup {
            if sign > 0 {
                if groups[host][group] == nil { groups[host][group] = spec.name }
            } else if groups[host][group] == spec.name {
                groups[host][group] = residents[host].first { cluster.vms[$0].antiAffinityGroup == group }
                    .map { cluster.vms[$0].name }
            }
        }
        if historyDepth > 0 {
            let base = host * historyDepth
            let scale = sign * spec.size / capacity[host]
            for age in 0..<historyDepth { history[base + age] += scale * cluster.vmHistory(vm, age: age) }
        }
    }
}

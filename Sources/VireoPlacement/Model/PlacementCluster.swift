import VireoModel

/// A physical host as every policy sees it.
///
/// CPU is counted in the cluster's CPU unit: a live cluster counts cores (one core is 1.0),
/// CloudSim's data centre counts MIPS. Hosts and VMs of one cluster use the same unit.
public struct PlacementHost: Sendable, Equatable {
    public var id: HostID
    public var name: String
    public var state: HostState
    public var cores: Int
    /// CPU of one core, in the cluster's CPU unit.
    public var coreCapacity: Double
    public var memoryMiB: Double
    public var capabilities: CapabilitySet
    /// Bandwidth a live migration gets on this host's link, MiB/s.
    public var linkMiBPerSecond: Double
    /// Watts by CPU utilisation, for hosts that are switched off when empty — emptying one saves
    /// energy. Nil for hosts that stay on whatever runs on them: consolidating them saves nothing.
    public var power: PowerCurve?
    /// vCPUs and memory held by VMs the cluster does not list (created, not yet running).
    public var reservedVCPUs: Int
    public var reservedMemoryMiB: Double
    /// The machine type ("ML110 G4"); hosts of one type are interchangeable when empty.
    public var model: String
    /// Its hypervisor family (`HostFingerprint.migrationFamily`): a VM moves live only between
    /// hosts of one family.
    public var family: String

    public init(
        id: HostID, name: String, state: HostState = .ready, cores: Int, coreCapacity: Double = 1, memoryMiB: Double,
        capabilities: CapabilitySet = .liveMigration, linkMiBPerSecond: Double = 1_024,
        power: PowerCurve? = nil, reservedVCPUs: Int = 0, reservedMemoryMiB: Double = 0, model: String = "",
        family: String = ""
    ) {
        self.family = family
        self.id = id
        self.name = name
        self.state = state
        self.cores = cores
        self.coreCapacity = coreCapacity
        self.memoryMiB = memoryMiB
        self.capabilities = capabilities
        self.linkMiBPerSecond = linkMiBPerSecond
        self.power = power
        self.reservedVCPUs = reservedVCPUs
        self.reservedMemoryMiB = reservedMemoryMiB
        self.model = model
    }

    /// All cores together, in the cluster's CPU unit.
    public var capacity: Double { Double(cores) * coreCapacity }
}

/// A VM as every policy sees it.
public struct PlacementVM: Sendable, Equatable {
    public var id: VMID
    public var name: String
    public var vcpus: Int
    /// CPU of one virtual CPU at full use, in the cluster's CPU unit (live: 1 core).
    public var vcpuCapacity: Double
    public var memoryMiB: Double
    /// How fast the guest dirties memory, MiB/s: what decides how long a live migration takes.
    public var dirtyRateMiBPerSecond: Double
    /// The application it belongs to, if any (its objectives are the cluster's `applications`).
    public var application: String?
    /// VMs sharing a group must not share a host.
    public var antiAffinityGroup: String?
    /// The host its spec pins it to: it is placed only there and never moved by a policy.
    public var pinnedHost: String?
    public var requiredCapabilities: CapabilitySet

    public init(
        id: VMID, name: String, vcpus: Int, vcpuCapacity: Double = 1, memoryMiB: Double,
        dirtyRateMiBPerSecond: Double = 0, application: String? = nil, antiAffinityGroup: String? = nil,
        pinnedHost: String? = nil, requiredCapabilities: CapabilitySet = CapabilitySet()
    ) {
        self.id = id
        self.name = name
        self.vcpus = vcpus
        self.vcpuCapacity = vcpuCapacity
        self.memoryMiB = memoryMiB
        self.dirtyRateMiBPerSecond = dirtyRateMiBPerSecond
        self.application = application
        self.antiAffinityGroup = antiAffinityGroup
        self.pinnedHost = pinnedHost
        self.requiredCapabilities = requiredCapabilities
    }

    /// The VM's CPU at full use of every vCPU, in the cluster's CPU unit.
    public var size: Double { Double(vcpus) * vcpuCapacity }
}

/// What a host can hold, by the rules of the cluster being modelled. The same filters read them
/// for every policy, so a rule holds for all of them or for none.
public struct PlacementSettings: Sendable, Equatable {
    /// vCPUs that may be allocated per core; nil: vCPUs are not counted (hosts share CPU by
    /// demand, as CloudSim's do).
    public var cpuOvercommit: Double?
    /// Memory that may be allocated per MiB of host memory (1.0: no overcommit).
    public var memoryOvercommit: Double
    /// Memory is a hard limit for every placement and move; false: only when a VM starts
    /// (CloudSim's VMs reserve no memory afterwards).
    public var memoryAlwaysCounts: Bool
    /// The CPU a VM asks for now must fit the host's free CPU, on a core that holds one vCPU's
    /// demand (CloudSim's MIPS sharing); false: only vCPUs are counted.
    public var demandMustFit: Bool
    /// A VM on its way to a host already holds its memory, vCPUs and demand there; false: the
    /// destination counts it only when it arrives (CloudSim).
    public var incomingHoldsCapacity: Bool

    public init(
        cpuOvercommit: Double? = 4.0, memoryOvercommit: Double = 1.0, memoryAlwaysCounts: Bool = true,
        demandMustFit: Bool = false, incomingHoldsCapacity: Bool = true
    ) {
        self.cpuOvercommit = cpuOvercommit
        self.memoryOvercommit = memoryOvercommit
        self.memoryAlwaysCounts = memoryAlwaysCounts
        self.demandMustFit = demandMustFit
        self.incomingHoldsCapacity = incomingHoldsCapacity
    }

    /// A live cluster: vCPUs overcommitted 4:1, memory never overcommitted.
    public static let live = PlacementSettings()
    /// CloudSim 3.0.3's PlanetLab experiment: CPU shared by demand, memory checked only when a VM
    /// starts, a migrating VM counted on its destination only once it arrives.
    public static let cloudSim = PlacementSettings(
        cpuOvercommit: nil, memoryAlwaysCounts: false, demandMustFit: true, incomingHoldsCapacity: false)
    /// CloudSim's data centre with real hosts' rules: CPU shared by demand, memory a hard limit at
    /// every step, a migrating VM holding its memory on both hosts.
    public static let realistic = PlacementSettings(cpuOvercommit: nil, demandMustFit: true)
}

/// An application and where its objectives stand: the signal the `slo` policy acts on.
public struct RebalanceApplication: Sendable, Equatable {
    public var name: String
    public var objectives: [ObjectiveStatus]
    /// When the last move made for it ended, in the cluster's seconds (its `now` while one is
    /// still under way); nil if none. Its objectives need time to show the effect.
    public var lastMoveEndedAt: Double?

    public init(name: String, objectives: [ObjectiveStatus], lastMoveEndedAt: Double? = nil) {
        self.name = name
        self.objectives = objectives
        self.lastMoveEndedAt = lastMoveEndedAt
    }
}

/// The one model of a cluster that every policy reads — initial placement, live rebalancing and
/// consolidation alike, in the controller and in the simulator.
///
/// Static facts are in `hosts` and `vms`; what changes from one decision to the next (where VMs
/// are, what they ask for, their recent history, moves in flight) is laid out as parallel arrays
/// indexed by host and VM number, so a day of a 10,000-host fleet can be replayed without
/// allocating per VM. The owner (the controller for one decision, the simulator for a whole run)
/// keeps it current; policies only read it.
public struct PlacementCluster: Sendable {
    /// Utilisation values kept per VM, as CloudSim does.
    public static let historyCapacity = 30

    /// Seconds on the owner's clock (the simulator's virtual time, the controller's epoch seconds).
    public var now: Double
    /// Seconds between history samples (between decision points in a simulation).
    public var interval: Double
    public var settings: PlacementSettings { didSet { table = HostTable(hosts, settings) } }
    public var hosts: [PlacementHost] {
        get { storedHosts }
        set {
            storedHosts = newValue
            table = HostTable(newValue, settings)
        }
    }
    private var storedHosts: [PlacementHost]
    /// The hosts' constants as flat arrays, kept with the hosts, so that every plan and placement
    /// shares them instead of building them again.
    public private(set) var table: HostTable
    public var vms: [PlacementVM]
    public var applications: [RebalanceApplication]

    /// VMs running on each host (a migrating VM on its source), in the order they arrived.
    public var hostVMs: [[Int]]
    /// Host each VM runs on (its source while it migrates), -1 if it runs nowhere.
    public var vmHost: [Int]
    /// Host a migrating VM is going to, -1 if it is not migrating.
    public var vmDestination: [Int]
    /// CPU each VM asks for now, in the cluster's CPU unit (not capped by the host).
    public var vmDemand: [Double]
    /// When each VM last started to move (-infinity: never) and the host it left (-1: none).
    public var vmLastMoveStart: [Double]
    public var vmPreviousHost: [Int]
    /// Each host's CPU utilisation (0...1) as last measured or recorded; 0 means switched off.
    public var hostUtilisation: [Double]
    /// CPU use each host measured itself (fractions of the host, oldest first), including what
    /// its VMs' counters miss (emulation, I/O threads); empty where the host does not measure it.
    public var hostMeasured: [[Double]]
    /// Migrations under way of VMs the cluster does not list: they still hold budget on both hosts.
    public var otherMigrations: [(source: Int, destination: Int)] = []

    /// Utilisation history, `historyCapacity` slots per VM (fractions of its size), written as a
    /// ring shared by all VMs; `vmHistoryCount` says how many of a VM's slots are real.
    private(set) var history: [Double]
    private(set) var historyHead = -1
    public private(set) var vmHistoryCount: [Int]
    /// How many values the ring holds (the longest VM history).
    public private(set) var historyCount = 0

    public init(
        now: Double = 0, interval: Double = 300, settings: PlacementSettings = .live, hosts: [PlacementHost],
        vms: [PlacementVM] = [], applications: [RebalanceApplication] = []
    ) {
        self.now = now
        self.interval = interval
        self.settings = settings
        storedHosts = hosts
        table = HostTable(hosts, settings)
        self.vms = vms
        self.applications = applications
        hostVMs = Array(repeating: [], count: hosts.count)
        vmHost = Array(repeating: -1, count: vms.count)
        vmDestination = Array(repeating: -1, count: vms.count)
        vmDemand = vms.map(\.size)
        vmLastMoveStart = Array(repeating: -.infinity, count: vms.count)
        vmPreviousHost = Array(repeating: -1, count: vms.count)
        hostUtilisation = Array(repeating: 0, count: hosts.count)
        hostMeasured = Array(repeating: [], count: hosts.count)
        history = Array(repeating: 0, count: vms.count * Self.historyCapacity)
        vmHistoryCount = Array(repeating: 0, count: vms.count)
    }

    public var vmCount: Int { vms.count }
    public var hostCount: Int { storedHosts.count }

    /// Sets what VMs the cluster does not list hold on `host`, in place: a long-lived cluster
    /// (the controller's, kept between decisions) changes one host without building its table again.
    public mutating func setReserved(host: Int, vcpus: Int, memoryMiB: Double) {
        storedHosts[host].reservedVCPUs = vcpus
        storedHosts[host].reservedMemoryMiB = memoryMiB
        table.reservedVCPUs[host] = vcpus
        table.reservedMemoryMiB[host] = memoryMiB
    }

    /// Puts a VM that runs nowhere on `host`.
    public mutating func start(_ vm: Int, on host: Int) {
        precondition(vmHost[vm] < 0, "VM \(vms[vm].name) already runs")
        vmHost[vm] = host
        hostVMs[host].append(vm)
    }

    /// Takes a VM off its host (it finished, or stopped); a migration under way ends with it.
    public mutating func stop(_ vm: Int) {
        let host = vmHost[vm]
        guard host >= 0 else { return }
        if let index = hostVMs[host].firstIndex(of: vm) { hostVMs[host].remove(at: index) }
        vmHost[vm] = -1
        vmDestination[vm] = -1
    }

    /// Marks `vm` as migrating to `destination` from now.
    public mutating func beginMove(_ vm: Int, to destination: Int) {
        vmDestination[vm] = destination
        vmLastMoveStart[vm] = now
    }

    /// Completes a migration: the VM runs on its destination.
    public mutating func completeMove(_ vm: Int) {
        let source = vmHost[vm]
        let destination = vmDestination[vm]
        guard source >= 0, destination >= 0 else { return }
        if let index = hostVMs[source].firstIndex(of: vm) { hostVMs[source].remove(at: index) }
        hostVMs[destination].append(vm)
        vmHost[vm] = destination
        vmPreviousHost[vm] = source
        vmDestination[vm] = -1
    }

    /// Whether `vm` is being migrated.
    @inline(__always)
    public func isMigrating(_ vm: Int) -> Bool { vmDestination[vm] >= 0 }

    /// The `age`-th newest utilisation (0 = newest) of `vm`, a fraction of its size; 0 beyond
    /// its history.
    @inline(__always)
    public func vmHistory(_ vm: Int, age: Int) -> Double {
        var slot = historyHead - age
        if slot < 0 { slot += Self.historyCapacity }
        return history[vm * Self.historyCapacity + slot]
    }

    /// Records one utilisation value (fraction of size) for every VM; `values[vm]`.
    public mutating func appendHistory(_ values: [Double]) {
        historyHead = (historyHead + 1) % Self.historyCapacity
        historyCount = min(historyCount + 1, Self.historyCapacity)
        let capacity = Self.historyCapacity
        let head = historyHead
        history.withUnsafeMutableBufferPointer { buffer in
            for vm in 0..<values.count { buffer[vm * capacity + head] = values[vm] }
        }
        for vm in vmHistoryCount.indices where vmHistoryCount[vm] < capacity { vmHistoryCount[vm] += 1 }
    }

    /// Sets every VM's history at once from per-VM series of fractions of its size, oldest first
    /// (a live cluster's recent measurements, of different lengths).
    public mutating func setHistory(_ series: [[Double]]) {
        let longest = min(series.map(\.count).max() ?? 0, Self.historyCapacity)
        history = Array(repeating: 0, count: vms.count * Self.historyCapacity)
        historyHead = -1
        historyCount = 0
        vmHistoryCount = Array(repeating: 0, count: vms.count)
        guard longest > 0 else { return }
        for round in 0..<longest {
            let values = series.map { values -> Double in
                let offset = round - (longest - min(values.count, longest))
                return offset >= 0 ? values[values.count - min(values.count, longest) + offset] : 0
            }
            appendHistory(values)
        }
        vmHistoryCount = series.map { min($0.count, longest) }
    }

    /// Mean demand of `vm` over its last `window` samples, in the cluster's CPU unit; its current
    /// demand if it has no history.
    public func recentDemand(_ vm: Int, window: Int) -> Double {
        let count = min(window, vmHistoryCount[vm])
        guard count > 0 else { return vmDemand[vm] }
        var sum = 0.0
        for age in 0..<count { sum += vmHistory(vm, age: age) }
        return sum / Double(count) * vms[vm].size
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

/// Each host's constants as flat arrays (capacity, cores, limits under the cluster's settings,
/// state, capabilities, link, what unlisted VMs hold), read by the filters' hot loops.
public struct HostTable: Sendable {
    public let ids: [HostID]
    public let names: [String]
    /// The hosts are in order of name (the controller's are): then ties break by index, which
    /// compares no strings.
    public let sortedByName: Bool
    public let capacity: [Double]
    public let coreCapacity: [Double]
    public let vcpuLimit: [Int]
    public let memoryLimit: [Double]
    public let ready: [Bool]
    public let liveMigration: [Bool]
    public let capabilities: [CapabilitySet]
    public let linkMiBPerSecond: [Double]
    public internal(set) var reservedVCPUs: [Int]
    public internal(set) var reservedMemoryMiB: [Double]
    /// Each host's hypervisor family as a small number: equal numbers, one family.
    public let family: [Int]
    /// Power tables, 11 points per host, where some host has a power curve (a simulated data
    /// centre); empty otherwise (a live cluster: built only when a policy asks for power).
    let watts: [Double]

    init(_ hosts: [PlacementHost], _ settings: PlacementSettings) {
        var capacity = [Double](), coreCapacity = [Double](), vcpuLimit = [Int](), memoryLimit = [Double]()
        var ready = [Bool](), liveMigration = [Bool](), capabilities = [CapabilitySet](), link = [Double]()
        var reservedVCPUs = [Int](), reservedMemory = [Double]()
        let count = hosts.count
        capacity.reserveCapacity(count)
        coreCapacity.reserveCapacity(count)
        vcpuLimit.reserveCapacity(count)
        memoryLimit.reserveCapacity(count)
        ready.reserveCapacity(count)
        liveMigration.reserveCapacity(count)
        capabilities.reserveCapacity(count)
        link.reserveCapacity(count)
        reservedVCPUs.reserveCapacity(count)
        reservedMemory.reserveCapacity(count)
        for host in hosts {
            capacity.append(host.capacity)
            coreCapacity.append(host.coreCapacity)
            vcpuLimit.append(settings.cpuOvercommit.map { Int((Double(host.cores) * $0).rounded(.down)) } ?? Int.max)
            memoryLimit.append((host.memoryMiB * settings.memoryOvercommit).rounded(.down))
            ready.append(host.state == .ready)
            liveMigration.append(host.capabilities.contains(.liveMigration))
            capabilities.append(host.capabilities)
            link.append(host.linkMiBPerSecond)
            reservedVCPUs.append(host.reservedVCPUs)
            reservedMemory.append(host.reservedMemoryMiB)
        }
        self.capacity = capacity
        self.coreCapacity = coreCapacity
        self.vcpuLimit = vcpuLimit
        self.memoryLimit = memoryLimit
        self.ready = ready
        self.liveMigration = liveMigration
        self.capabilities = capabilities
        linkMiBPerSecond = link
        self.reservedVCPUs = reservedVCPUs
        reservedMemoryMiB = reservedMemory
        watts = hosts.contains { $0.power != nil } ? Self.watts(hosts) : []
        ids = hosts.map(\.id)
        names = hosts.map(\.name)
        sortedByName = zip(names, names.dropFirst()).allSatisfy { $0 < $1 }
        var families: [String: Int] = [:]
        family = hosts.map { host in
            if let number = families[host.family] { return number }
            families[host.family] = families.count
            return families.count - 1
        }
    }

    /// Every host's power table, the unmetered curve where it has none.
    static func watts(_ hosts: [PlacementHost]) -> [Double] {
        hosts.flatMap { ($0.power ?? PowerCurve.unmetered(cores: $0.cores)).watts }
    }
}

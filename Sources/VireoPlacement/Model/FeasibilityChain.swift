import VireoModel

/// How loaded a destination may become: `protected` where VMs with objectives run or would run
/// after the move, `other` elsewhere (a busy host whose VMs have no objectives hurts nobody).
public struct LoadLimit: Sendable, Equatable {
    public var protected: Double
    public var other: Double

    public init(protected: Double, other: Double) {
        self.protected = protected
        self.other = other
    }

    public var highest: Double { max(protected, other) }
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

    /// No limit (CloudSim's policies know none).
    public static let unlimited = MigrationBudget(perCluster: .max, perHost: .max)
}

/// The one chain of feasibility filters every policy runs — initial placement, rebalancing and
/// consolidation alike — the way Nomad's scheduler runs its feasibility checks: in a fixed order,
/// cheapest first, and the first one a host fails is its typed reason.
///
/// What the cluster allows (vCPU overcommit, memory, CPU shared by demand) comes from its
/// `PlacementSettings`; what a policy adds (load limits, a migration budget, convergence, no
/// return to a host just left) is set here. Order: pinned host, host state, host left recently,
/// capabilities, hypervisor family (moves), vCPUs, memory, CPU demand (core, then free CPU), whole vCPU on a core,
/// anti-affinity, migration budget, predicted load, convergence.
public struct FeasibilityChain: Sendable {
    public enum Purpose: Sendable {
        /// A VM starting: memory always counts, no migration filters.
        case start
        /// A VM moving live: the hosts need live migration, and the move budget and cost apply.
        case move
    }

    public var purpose: Purpose
    /// Refuse the host the VM left less than this many seconds ago (moves).
    public var returnBlockSeconds: Double
    /// Refuse hosts already in this many migrations (moves).
    public var budget: MigrationBudget?
    /// Refuse hosts whose predicted load after taking the VM would exceed the limit.
    public var loadLimit: LoadLimit?
    /// Refuse hosts the VM's memory would not cross to (moves); nil: not checked.
    public var costModel: MigrationCostModel?
    /// Only hosts whose core holds a whole vCPU at full use, so a VM is never capped by a small core.
    public var wholeVCPUOnCore: Bool

    public init(
        purpose: Purpose, returnBlockSeconds: Double = 0, budget: MigrationBudget? = nil, loadLimit: LoadLimit? = nil,
        costModel: MigrationCostModel? = nil, wholeVCPUOnCore: Bool = false
    ) {
        self.purpose = purpose
        self.returnBlockSeconds = returnBlockSeconds
        self.budget = budget
        self.loadLimit = loadLimit
        self.costModel = costModel
        self.wholeVCPUOnCore = wholeVCPUOnCore
    }

    /// What a host that passes every filter would look like with the VM.
    public struct Fit: Sendable, Equatable {
        /// Predicted CPU load of the host after taking the VM.
        public var loadAfter: Double
        /// The migration's predicted cost (moves with a cost model).
        public var cost: MigrationCost?
    }

    /// A host's verdict: how it fits, or the first filter it fails.
    public enum Verdict: Sendable, Equatable {
        case fits(Fit)
        case filtered(FilterReason)
    }

    /// The first filter `host` fails for `vm`, or how it fits.
    public func check(_ vm: Candidate, on host: Int, _ loads: HostLoads) -> Verdict {
        run(vm, host, loads, fails: { .filtered($0()) }, fits: { .fits($0) })
    }

    /// Whether `host` passes every filter for `vm`: what `check` decides, without building the
    /// reason (placement loops ask this of thousands of hosts).
    @inline(__always)
    public func passes(_ vm: Candidate, on host: Int, _ loads: HostLoads) -> Bool {
        run(vm, host, loads, fails: { _ in false }, fits: { _ in true })
    }

    /// How `host` would look with `vm`, nil if it fails a filter.
    @inline(__always)
    public func fit(_ vm: Candidate, on host: Int, _ loads: HostLoads) -> Fit? {
        run(vm, host, loads, fails: { _ in nil }, fits: { $0 })
    }

    /// The chain itself, once: `fails` gets the reason to build only if it wants it.
    @inline(__always)
    private func run<R>(
        _ vm: Candidate, _ host: Int, _ loads: HostLoads, fails: (() -> FilterReason) -> R, fits: (Fit) -> R
    ) -> R {
        let settings = loads.cluster.settings
        if let pinned = vm.pinnedHost, pinned != loads.cluster.hosts[host].name {
            return fails { .notPinnedHost(pinned: pinned) }
        }
        if !loads.ready[host] { return fails { .hostNotReady(state: loads.cluster.hosts[host].state) } }
        let move = purpose == .move
        if move, vm.previousHost == host, loads.cluster.now - vm.lastMoveStart < returnBlockSeconds {
            let ago = loads.cluster.now - vm.lastMoveStart
            return fails { .recentlyLeft(secondsAgo: ago, blockSeconds: returnBlockSeconds) }
        }
        if move && !loads.liveMigration[host] { return fails { .missingCapability(.liveMigration) } }
        if move, vm.source >= 0, loads.family[host] != loads.family[vm.source] {
            let hosts = loads.cluster.hosts
            return fails { .otherHypervisor(source: hosts[vm.source].family, destination: hosts[host].family) }
        }
        if !vm.requiredCapabilities.isEmpty, !loads.capabilities[host].contains(vm.requiredCapabilities) {
            let missing = vm.requiredCapabilities.subtracting(loads.capabilities[host])
            return fails { .missingCapability(missing.first ?? .liveMigration) }
        }
        let vcpuLimit = loads.vcpuLimit[host]
        if vcpuLimit != .max {
            let free = max(0, vcpuLimit - loads.vcpus[host])
            if vm.vcpus > free { return fails { .insufficientCPU(requested: vm.vcpus, free: free) } }
        }
        if settings.memoryAlwaysCounts || !move {
            let free = max(0, loads.memoryLimit[host] - loads.memoryMiB[host])
            if vm.memoryMiB > free {
                return fails { .insufficientMemory(requestedMiB: Int(vm.memoryMiB), freeMiB: Int(free)) }
            }
        }
        let core = loads.coreCapacity[host]
        if settings.demandMustFit {
            let perVCPU = vm.demand / Double(max(1, vm.vcpus))
            if perVCPU > core { return fails { .coreTooSmall(needed: perVCPU, core: core) } }
            let free = loads.capacity[host] - loads.usedCPU(host)
            if vm.demand > free { return fails { .insufficientCPUCapacity(requested: vm.demand, free: free) } }
        }
        if wholeVCPUOnCore && vm.vcpuCapacity > core {
            return fails { .coreTooSmall(needed: vm.vcpuCapacity, core: core) }
        }
        if let group = vm.antiAffinityGroup, let holder = loads.holder(of: group, on: host) {
            return fails { .antiAffinity(group: group, vm: holder) }
        }
        if move, let budget, loads.migrations[host] >= budget.perHost {
            return fails { .hostMigrationBudget(limit: budget.perHost) }
        }
        let capacity = loads.capacity[host]
        let loadAfter = capacity > 0 ? (loads.demand[host] + vm.demand) / capacity : .infinity
        if let loadLimit {
            let limit = vm.hasObjectives || loads.protectedVMs[host] > 0 ? loadLimit.protected : loadLimit.other
            if loadAfter > limit { return fails { .wouldOverload(predicted: loadAfter, limit: limit) } }
        }
        var cost: MigrationCost?
        if move, let costModel {
            let sourceLink = vm.source >= 0 ? loads.linkMiBPerSecond[vm.source] : 0
            switch costModel.cost(
                memoryMiB: vm.memoryMiB, dirtyMiBPerSecond: vm.dirtyRateMiBPerSecond,
                bandwidthMiBPerSecond: min(loads.linkMiBPerSecond[host], sourceLink))
            {
            case .failure(let error): return fails { .doesNotConverge(error) }
            case .success(let predicted): cost = predicted
            }
        }
        return fits(Fit(loadAfter: loadAfter, cost: cost))
    }

    /// Why `host` cannot send its VMs away, if it cannot.
    public static func sourceProblem(_ host: Int, _ cluster: PlacementCluster) -> FilterReason? {
        let source = cluster.hosts[host]
        if source.state != .ready { return .hostNotReady(state: source.state) }
        if !source.capabilities.contains(.liveMigration) { return .missingCapability(.liveMigration) }
        return nil
    }
}

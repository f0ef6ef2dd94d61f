import VireoModel

/// A host's CPU demand as a fraction of its cores, before and after a planned move.
public struct HostLoadChange: Sendable, Equatable {
    public var host: String
    public var before: Double
    public var after: Double

    public init(host: String, before: Double, after: Double) {
        self.host = host
        self.before = before
        self.after = after
    }
}

/// The predicted effect of a move on the objective that asked for it.
public struct ObjectiveEffect: Sendable, Equatable {
    public var application: String
    public var objective: String
    /// Burn rate times the fraction of the contention removed: what the move is worth.
    public var benefit: Double
    /// The cost in the same units (migration time and downtime, weighted).
    public var weightedCost: Double

    public init(application: String, objective: String, benefit: Double, weightedCost: Double) {
        self.application = application
        self.objective = objective
        self.benefit = benefit
        self.weightedCost = weightedCost
    }
}

/// One live migration in a plan.
public struct PlannedMove: Sendable, Equatable {
    public var vm: VMID
    public var vmName: String
    public var from: HostID
    public var fromName: String
    public var to: HostID
    public var toName: String
    /// Indices of the VM and the hosts in the cluster the plan was made from.
    public var vmIndex: Int
    public var fromIndex: Int
    public var toIndex: Int
    public var reason: MoveReason
    /// The policy's own sentence about the move, if it wrote one.
    public var detail: String?
    /// Nil for policies that do not look at objectives.
    public var objectiveEffect: ObjectiveEffect?
    public var sourceLoad: HostLoadChange
    public var destinationLoad: HostLoadChange
    public var cost: MigrationCost

    public init(
        vm: Int, from: Int, to: Int, in cluster: PlacementCluster, reason: MoveReason, detail: String? = nil,
        objectiveEffect: ObjectiveEffect? = nil, sourceLoad: HostLoadChange, destinationLoad: HostLoadChange,
        cost: MigrationCost
    ) {
        let spec = cluster.vms[vm]
        let source = cluster.hosts[from]
        let destination = cluster.hosts[to]
        self.vm = spec.id
        self.vmName = spec.name
        self.from = source.id
        self.fromName = source.name
        self.to = destination.id
        self.toName = destination.name
        self.vmIndex = vm
        self.fromIndex = from
        self.toIndex = to
        self.reason = reason
        self.detail = detail
        self.objectiveEffect = objectiveEffect
        self.sourceLoad = sourceLoad
        self.destinationLoad = destinationLoad
        self.cost = cost
    }

    /// The reason as a sentence a user reads.
    public var explanation: String {
        detail ?? "\(reason); moving \(vmName) to \(toName); \(cost)"
    }
}

/// The verdict on one destination for one VM: filtered with a reason, or its predicted load.
public struct RebalanceHostVerdict: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var filtered: FilterReason?
    /// Predicted CPU load of the host after taking the VM (lower is better).
    public var loadAfter: Double?

    public var description: String {
        if let filtered { return "\(host): filtered: \(filtered)" }
        return "\(host): load after \(percent(loadAfter ?? 0))"
    }
}

/// Destinations weighed for one VM: all verdicts for small clusters; for large ones the best
/// `keep` and the rest counted by reason kind (`scored` for hosts that fit but were worse).
public struct DestinationVerdicts: Sendable, Equatable {
    public var verdicts: [RebalanceHostVerdict]
    public var omitted: [String: Int]

    public init(verdicts: [RebalanceHostVerdict] = [], omitted: [String: Int] = [:]) {
        self.verdicts = verdicts
        self.omitted = omitted
    }
}

/// A VM the policy looked at, and what came of it.
public struct ConsideredVM: Sendable, Equatable {
    public var vm: VMID
    public var vmName: String
    public var host: String
    /// Nil when the VM is moved (see the plan's actions).
    public var notMoved: NotMovedReason?
    public var destinations: DestinationVerdicts

    public init(
        vm: VMID, vmName: String, host: String, notMoved: NotMovedReason?,
        destinations: DestinationVerdicts = DestinationVerdicts()
    ) {
        self.vm = vm
        self.vmName = vmName
        self.host = host
        self.notMoved = notMoved
        self.destinations = destinations
    }
}

/// What a policy decided: the moves in the order to start them, and everything it weighed.
public struct RebalancePlan: Sendable, Equatable {
    public var policy: String
    public var actions: [PlannedMove]
    /// Every VM the policy looked at, moved or not, with the destinations it weighed.
    public var considered: [ConsideredVM]
    /// Things noticed that led to no candidate at all ("web/latency is ok").
    public var notes: [String]

    public init(policy: String, actions: [PlannedMove] = [], considered: [ConsideredVM] = [], notes: [String] = []) {
        self.policy = policy
        self.actions = actions
        self.considered = considered
        self.notes = notes
    }

    /// Considered VMs that were not moved, with their reasons.
    public var notMoved: [ConsideredVM] { considered.filter { $0.notMoved != nil } }
}

/// `0.734` → `73%`.
func percent(_ fraction: Double) -> String { NumberText.percent(fraction) }

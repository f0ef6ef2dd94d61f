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

/// Why a move was planned, in a form a program can check.
public enum MoveReason: Sendable, Equatable {
    /// An application burns its error budget and its host is contended; `relief` is the fraction
    /// of the host's excess demand the move removes (0...1).
    case objectivePressure(
        application: String, objective: String, state: SLOState, burnRate: Double, lookbackSeconds: Double,
        host: String, relief: Double)
    /// A host's recent CPU is above the threshold (the black-box baseline).
    case hostOverThreshold(host: String, load: Double, threshold: Double)
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
    public var reason: MoveReason
    /// The reason as a sentence a user reads.
    public var explanation: String
    /// Nil for policies that do not look at objectives.
    public var objectiveEffect: ObjectiveEffect?
    public var sourceLoad: HostLoadChange
    public var destinationLoad: HostLoadChange
    public var cost: MigrationCost
}

/// Why a host cannot take a VM being moved.
public enum RebalanceFilterReason: Sendable, Equatable, CustomStringConvertible {
    /// The reasons initial placement uses (host state, capability, capacity).
    case placement(FilterReason)
    /// The host already runs a VM of the same anti-affinity group.
    case antiAffinity(group: String, vm: String)
    /// The host already takes part in as many migrations as allowed.
    case hostMigrationBudget(limit: Int)
    /// After the move the host's predicted load would be above the limit (it would become the
    /// next one to relieve: no ping-pong).
    case wouldOverload(predicted: Double, limit: Double)
    /// The VM's memory would not get across this link.
    case doesNotConverge(MigrationCostError)
    /// The VM left this host recently: going back is how moves go back and forth.
    case recentlyLeft(secondsAgo: Double, blockSeconds: Double)

    public var description: String {
        switch self {
        case .placement(let reason): reason.description
        case .antiAffinity(let group, let vm): "anti-affinity group '\(group)': already runs \(vm)"
        case .hostMigrationBudget(let limit): "already in \(limit) migration(s), the per-host budget"
        case .wouldOverload(let predicted, let limit):
            "predicted CPU \(percent(predicted)) after the move, above the \(percent(limit)) limit"
        case .doesNotConverge(let error): error.description
        case .recentlyLeft(let ago, let block):
            "the VM left this host \(DurationText.format(ago)) ago (no return within \(DurationText.format(block)))"
        }
    }

    /// A short stable key for counting reasons.
    public var kind: String {
        switch self {
        case .placement(let reason): reason.kind
        case .antiAffinity: "anti-affinity"
        case .hostMigrationBudget: "budget"
        case .wouldOverload: "would-overload"
        case .doesNotConverge: "convergence"
        case .recentlyLeft: "recently-left"
        }
    }
}

/// The verdict on one destination for one VM: filtered with a reason, or its predicted load.
public struct RebalanceHostVerdict: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var filtered: RebalanceFilterReason?
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

/// Why a VM that was looked at is not moved.
public enum NotMovedReason: Sendable, Equatable, CustomStringConvertible {
    /// It moved recently: moving it again now is how eviction loops start.
    case coolDown(movedSecondsAgo: Double, coolDownSeconds: Double)
    /// Its spec pins it to its host.
    case pinned(host: String)
    case alreadyMigrating
    case clusterBudget(limit: Int)
    case hostBudget(host: String, limit: Int)
    /// The predicted benefit does not exceed the cost by the margin.
    case marginNotMet(benefit: Double, cost: Double, margin: Double)
    case noHostFits
    /// Its host cannot send it (not ready, or no live migration).
    case sourceCannotMigrate(FilterReason)
    /// It has objectives of its own and too little budget to spare for a migration.
    case protectedObjective(application: String, budgetRemaining: Double)
    /// The application suffers but its host is not contended: moving VMs would not help.
    case hostNotContended(host: String, load: Double, limit: Double)
    /// Another move gave more benefit per cost.
    case betterMoveChosen

    public var description: String {
        switch self {
        case .coolDown(let ago, let coolDown):
            "moved \(DurationText.format(ago)) ago, cool-down \(DurationText.format(coolDown))"
        case .pinned(let host): "pinned to \(host)"
        case .alreadyMigrating: "already migrating"
        case .clusterBudget(let limit): "cluster budget of \(limit) concurrent migrations reached"
        case .hostBudget(let host, let limit): "host \(host) already in \(limit) migration(s)"
        case .marginNotMet(let benefit, let cost, let margin):
            "benefit \(decimal(benefit, 2)) does not exceed \(decimal(margin, 1))× cost \(decimal(cost, 2))"
        case .noHostFits: "no host can take it"
        case .sourceCannotMigrate(let reason): "its host cannot send it: \(reason)"
        case .protectedObjective(let app, let remaining):
            "\(app) has objectives with \(percent(remaining)) of its error budget left"
        case .hostNotContended(let host, let load, let limit):
            "host \(host) CPU \(percent(load)) is under \(percent(limit)): the pressure is not on the host"
        case .betterMoveChosen: "another move gives more benefit per cost"
        }
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
func percent(_ fraction: Double) -> String { "\(decimal(fraction * 100, 0))%" }

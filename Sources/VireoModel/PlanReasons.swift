/// Why a move was planned, in a form a program can check. Every policy gives one, and it stays
/// typed from the policy to the store and the API.
public enum MoveReason: Sendable, Codable, Equatable, CustomStringConvertible {
    /// An application burns its error budget and its host is contended; `relief` is the fraction
    /// of the host's excess demand the move removes (0...1).
    case objectivePressure(
        application: String, objective: String, state: SLOState, burnRate: Double, lookbackSeconds: Double,
        host: String, relief: Double)
    /// A host's recent CPU is above the threshold (the black-box baseline).
    case hostOverThreshold(host: String, load: Double, threshold: Double)
    /// A host's overload test fired (CloudSim's detectors; `slo`'s capacity protection): the VM
    /// is taken off it.
    case hostOverloaded(host: String, utilisation: Double, test: String)
    /// An under-used host is emptied so that it can be switched off.
    case consolidation(host: String, utilisation: Double, limit: Double)
    /// A move of a plan stored before reasons were typed: only its kind was kept.
    case recorded(kind: String)

    /// A short stable key (`objective-pressure`, `host-over-threshold`, `host-overloaded`,
    /// `consolidation`).
    public var kind: String {
        switch self {
        case .objectivePressure: "objective-pressure"
        case .hostOverThreshold: "host-over-threshold"
        case .hostOverloaded: "host-overloaded"
        case .consolidation: "consolidation"
        case .recorded(let kind): kind
        }
    }

    public var description: String {
        switch self {
        case .objectivePressure(let app, let objective, let state, let burn, let lookback, let host, let relief):
            "\(app)/\(objective) is \(state.rawValue) (burn \(NumberText.decimal(burn, 1)) over "
                + "\(DurationText.format(lookback))); relieves \(host) by \(NumberText.percent(relief))"
        case .hostOverThreshold(let host, let load, let threshold):
            "host \(host) CPU \(NumberText.percent(load)) is above \(NumberText.percent(threshold))"
        case .hostOverloaded(let host, let utilisation, let test):
            "host \(host) is overloaded at \(NumberText.percent(utilisation)) CPU (\(test))"
        case .consolidation(let host, let utilisation, let limit):
            "host \(host) is under-used (\(NumberText.percent(utilisation)) CPU, below \(NumberText.percent(limit))): "
                + "emptied so that it can be switched off"
        case .recorded(let kind): kind
        }
    }
}

/// Why a VM that a policy looked at is not moved.
public enum NotMovedReason: Sendable, Codable, Equatable, CustomStringConvertible {
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
    /// A reason stored before reasons were typed: its sentence.
    case recorded(sentence: String)

    public var description: String {
        switch self {
        case .coolDown(let ago, let coolDown):
            "moved \(DurationText.format(ago)) ago, cool-down \(DurationText.format(coolDown))"
        case .pinned(let host): "pinned to \(host)"
        case .alreadyMigrating: "already migrating"
        case .clusterBudget(let limit): "cluster budget of \(limit) concurrent migrations reached"
        case .hostBudget(let host, let limit): "host \(host) already in \(limit) migration(s)"
        case .marginNotMet(let benefit, let cost, let margin):
            "benefit \(NumberText.decimal(benefit, 2)) does not exceed \(NumberText.decimal(margin, 1))× cost "
                + NumberText.decimal(cost, 2)
        case .noHostFits: "no host can take it"
        case .sourceCannotMigrate(let reason): "its host cannot send it: \(reason)"
        case .protectedObjective(let app, let remaining):
            "\(app) has objectives with \(NumberText.percent(remaining)) of its error budget left"
        case .hostNotContended(let host, let load, let limit):
            "host \(host) CPU \(NumberText.percent(load)) is under \(NumberText.percent(limit)): the pressure is not on the host"
        case .betterMoveChosen: "another move gives more benefit per cost"
        case .recorded(let sentence): sentence
        }
    }

    /// A short stable key for counting reasons.
    public var kind: String {
        switch self {
        case .coolDown: "cool-down"
        case .pinned: "pinned"
        case .alreadyMigrating: "migrating"
        case .clusterBudget, .hostBudget: "budget"
        case .marginNotMet: "margin"
        case .noHostFits: "no-host"
        case .sourceCannotMigrate: "source"
        case .protectedObjective: "protected"
        case .hostNotContended: "not-contended"
        case .betterMoveChosen: "better-move"
        case .recorded: "recorded"
        }
    }
}

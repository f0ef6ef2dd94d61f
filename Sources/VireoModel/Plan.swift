import Foundation

/// Where a rebalancing plan is. A dry run is never stored; an executed plan is `executing` until
/// every migration it started has ended, then `completed` (all moved) or `failed` (one did not,
/// or could not be started: the moves after it were not started).
public enum PlanState: String, Sendable, Codable, CaseIterable {
    case dryRun = "dry-run"
    case executing
    case completed
    case failed
}

/// Who asked for a plan.
public enum PlanTrigger: String, Sendable, Codable, CaseIterable {
    /// `vireo plan` / `POST /v1/plans`.
    case manual
    /// The controller's rebalancing loop, under the cluster's policy.
    case automatic
}

/// A rebalancing plan as Vireo shows and stores it: the moves with their reasons, predictions
/// and outcomes, and everything the policy weighed (`--explain`).
public struct Plan: Sendable, Codable, Equatable, Identifiable {
    public var id: String
    public var policy: String
    public var trigger: PlanTrigger
    public var state: PlanState
    public var createdAt: Date
    public var endedAt: Date?
    /// Why it failed, or a summary of how it ended.
    public var message: String?
    public var actions: [Action]
    public var considered: [Considered]
    /// What the policy noticed that led to no move ("no application burns its error budget").
    public var notes: [String]

    public init(
        id: String, policy: String, trigger: PlanTrigger, state: PlanState, createdAt: Date, actions: [Action],
        considered: [Considered], notes: [String]
    ) {
        self.id = id
        self.policy = policy
        self.trigger = trigger
        self.state = state
        self.createdAt = createdAt
        self.actions = actions
        self.considered = considered
        self.notes = notes
    }

    /// One live migration of the plan.
    public struct Action: Sendable, Codable, Equatable {
        public var vm: String
        public var vmID: VMID
        public var from: String
        public var to: String
        /// Why the policy moves it, typed (its `kind`: `objective-pressure`, `host-over-threshold`,
        /// `host-overloaded`, `consolidation`).
        public var reason: MoveReason
        /// The application and objective the move is for (`slo` policy).
        public var application: String?
        public var objective: String?
        public var explanation: String
        public var predicted: Prediction
        /// Set once the executor started the move.
        public var migration: MigrationID?
        public var outcome: Outcome
        public var outcomeMessage: String?
        public var downtimeMs: Int?
        public var endedAt: Date?

        public init(
            vm: String, vmID: VMID, from: String, to: String, reason: MoveReason, application: String?,
            objective: String?, explanation: String, predicted: Prediction
        ) {
            self.vm = vm
            self.vmID = vmID
            self.from = from
            self.to = to
            self.reason = reason
            self.application = application
            self.objective = objective
            self.explanation = explanation
            self.predicted = predicted
            self.outcome = .planned
        }

        enum CodingKeys: String, CodingKey {
            case vm, vmID, from, to, reason, application, objective, explanation, predicted, migration, outcome
            case outcomeMessage, downtimeMs, endedAt
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            vm = try c.decode(String.self, forKey: .vm)
            vmID = try c.decode(VMID.self, forKey: .vmID)
            from = try c.decode(String.self, forKey: .from)
            to = try c.decode(String.self, forKey: .to)
            // Plans stored before reasons were typed kept only the reason's kind.
            if let typed = try? c.decode(MoveReason.self, forKey: .reason) {
                reason = typed
            } else {
                reason = .recorded(kind: try c.decode(String.self, forKey: .reason))
            }
            application = try c.decodeIfPresent(String.self, forKey: .application)
            objective = try c.decodeIfPresent(String.self, forKey: .objective)
            explanation = try c.decode(String.self, forKey: .explanation)
            predicted = try c.decode(Prediction.self, forKey: .predicted)
            migration = try c.decodeIfPresent(MigrationID.self, forKey: .migration)
            outcome = try c.decode(Outcome.self, forKey: .outcome)
            outcomeMessage = try c.decodeIfPresent(String.self, forKey: .outcomeMessage)
            downtimeMs = try c.decodeIfPresent(Int.self, forKey: .downtimeMs)
            endedAt = try c.decodeIfPresent(Date.self, forKey: .endedAt)
        }
    }

    /// What became of a planned move: not started yet, not started at all, or its migration's state.
    public enum Outcome: Sendable, Codable, Equatable, CustomStringConvertible {
        case planned
        case skipped
        case migration(MigrationState)

        public var description: String {
            switch self {
            case .planned: "planned"
            case .skipped: "skipped"
            case .migration(let state): state.rawValue
            }
        }

        /// The move ended without the VM on its destination.
        public var isFailure: Bool { self == .skipped || self == .migration(.failed) }

        public init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            switch text {
            case "planned": self = .planned
            case "skipped": self = .skipped
            default:
                guard let state = MigrationState(rawValue: text) else {
                    throw DecodingError.dataCorrupted(
                        .init(codingPath: decoder.codingPath, debugDescription: "unknown outcome '\(text)'"))
                }
                self = .migration(state)
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(description)
        }
    }

    /// What a move is predicted to do and cost.
    public struct Prediction: Sendable, Codable, Equatable {
        /// CPU demand over cores of the source and destination, before and after.
        public var sourceLoadBefore: Double
        public var sourceLoadAfter: Double
        public var destinationLoadBefore: Double
        public var destinationLoadAfter: Double
        public var migrationSeconds: Double
        public var downtimeMs: Int
        public var transferredMiB: Double
        /// Benefit to the objective and the weighted cost it was compared with (`slo` policy).
        public var benefit: Double?
        public var weightedCost: Double?

        public init(
            sourceLoadBefore: Double, sourceLoadAfter: Double, destinationLoadBefore: Double,
            destinationLoadAfter: Double, migrationSeconds: Double, downtimeMs: Int, transferredMiB: Double,
            benefit: Double? = nil, weightedCost: Double? = nil
        ) {
            self.sourceLoadBefore = sourceLoadBefore
            self.sourceLoadAfter = sourceLoadAfter
            self.destinationLoadBefore = destinationLoadBefore
            self.destinationLoadAfter = destinationLoadAfter
            self.migrationSeconds = migrationSeconds
            self.downtimeMs = downtimeMs
            self.transferredMiB = transferredMiB
            self.benefit = benefit
            self.weightedCost = weightedCost
        }
    }

    /// A VM the policy looked at, whether it moves, and the destinations it weighed.
    public struct Considered: Sendable, Codable, Equatable {
        public var vm: String
        public var host: String
        public var moved: Bool
        /// Why it is not moved, typed.
        public var reason: NotMovedReason?
        public var destinations: [Verdict]
        /// Destinations not listed one by one, counted by kind (large clusters).
        public var omitted: [String: Int]?

        public init(
            vm: String, host: String, moved: Bool, reason: NotMovedReason?, destinations: [Verdict],
            omitted: [String: Int]?
        ) {
            self.vm = vm
            self.host = host
            self.moved = moved
            self.reason = reason
            self.destinations = destinations
            self.omitted = omitted
        }

        enum CodingKeys: String, CodingKey { case vm, host, moved, reason, destinations, omitted }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            vm = try c.decode(String.self, forKey: .vm)
            host = try c.decode(String.self, forKey: .host)
            moved = try c.decode(Bool.self, forKey: .moved)
            // Plans stored before reasons were typed kept the sentence.
            if let typed = try? c.decodeIfPresent(NotMovedReason.self, forKey: .reason) {
                reason = typed
            } else {
                reason = try c.decodeIfPresent(String.self, forKey: .reason).map { .recorded(sentence: $0) }
            }
            destinations = try c.decode([Verdict].self, forKey: .destinations)
            omitted = try c.decodeIfPresent([String: Int].self, forKey: .omitted)
        }
    }

    /// One destination for one VM: filtered with the typed reason, or its predicted load.
    public struct Verdict: Sendable, Codable, Equatable {
        public var host: String
        public var filtered: FilterReason?
        public var loadAfter: Double?

        public init(host: String, filtered: FilterReason?, loadAfter: Double?) {
            self.host = host
            self.filtered = filtered
            self.loadAfter = loadAfter
        }

        enum CodingKeys: String, CodingKey { case host, filtered, loadAfter }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            host = try c.decode(String.self, forKey: .host)
            // Plans stored before reasons were typed kept the sentence.
            if let typed = try? c.decodeIfPresent(FilterReason.self, forKey: .filtered) {
                filtered = typed
            } else {
                filtered = try c.decodeIfPresent(String.self, forKey: .filtered).map { .recorded(sentence: $0) }
            }
            loadAfter = try c.decodeIfPresent(Double.self, forKey: .loadAfter)
        }
    }
}

/// How the controller rebalances the cluster on its own.
public struct RebalanceSettings: Sendable, Codable, Equatable {
    /// The policy the controller plans with (`slo`, `threshold-0.7`, `iqr-mmt-1.5`, ...); nil: it does not
    /// rebalance on its own (plans can still be made by hand).
    public var policy: String?
    /// How often it plans, seconds.
    public var intervalSeconds: Double

    public init(policy: String? = nil, intervalSeconds: Double = 2) {
        self.policy = policy
        self.intervalSeconds = intervalSeconds
    }
}

/// CPU of a host as its agent measures it: busy CPU time and the CPUs it may use (a cgroup's
/// quota or cpuset, or the machine's).
public struct HostCPUUsage: Sendable, Codable, Equatable {
    /// Busy CPU time since some fixed origin (the host's cgroup or the machine's boot), seconds.
    public var busySeconds: Double
    /// CPUs available to the host; may be fractional under a quota.
    public var capacity: Double

    public init(busySeconds: Double, capacity: Double) {
        self.busySeconds = busySeconds
        self.capacity = capacity
    }
}

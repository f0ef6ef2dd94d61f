import VireoModel

/// The gray-box `slo` policy: it acts only for applications that burn their error budget, and
/// then moves the VM whose move relieves them most per unit of cost.
///
/// - Trigger: an objective `breaching` or `warning` whose shortest-lookback burn rate is above
///   `burnTrigger`. Nothing else moves VMs: a busy host whose applications are fine is left
///   alone (its counters mislead).
/// - Attribution: the pressure is on the hosts of the suffering application's VMs whose CPU
///   demand is above `contendedLoad`; a suffering application on an uncontended host gets a
///   reason, not a move (moving would not help it).
/// - Candidates: every VM on such a host. A neighbour is moved away to relieve the host; the
///   application's own VM is moved to a quieter host. A neighbour with objectives of its own
///   is moved only if it has at least `spareBudget` of its error budget left.
/// - Benefit: burn rate × relief, where relief is the fraction of the host's demand above
///   `contendedLoad` that the move removes (for the application's own VM: how much quieter its
///   new host is). Cost: `costFloor` + migration seconds / `secondsPerCostUnit` + downtime
///   seconds × `downtimeWeight`, the downtime weighted `ownDowntimeFactor` times more for the
///   suffering application's own VM (its pause hurts the objective that is already failing).
/// - Decision: the best benefit per cost, only if benefit ≥ `margin` × cost; destinations whose
///   predicted load would exceed `destinationLoadLimit` are refused where VMs with objectives
///   run (or the moved VM has objectives), so a move never creates the contention it relieves;
///   elsewhere the limit is `unprotectedLoadLimit` (a busy host of VMs without objectives hurts
///   nobody); a VM moved less than `coolDownSeconds` ago stays, and does not go
///   back to the host it left within `returnBlockSeconds`; at most
///   `budget` migrations per cluster and per host, those in flight included.
public struct SLOPolicy: PlacementPolicy {
    public struct Settings: Sendable, Equatable {
        /// Short burn rate an objective in `warning` or `breaching` must exceed to act.
        public var burnTrigger: Double
        /// Burn rates above this count as this much (one runaway objective must not outweigh all costs).
        public var maxBurnRate: Double
        /// Host CPU (fraction) above which the host is contended.
        public var contendedLoad: Double
        /// Predicted destination CPU (fraction) a move may not exceed.
        public var destinationLoadLimit: Double
        /// The same for destinations where no VM with objectives runs or would run.
        public var unprotectedLoadLimit: Double
        /// Benefit must be at least this many times the cost.
        public var margin: Double
        /// Every migration costs at least this much (it uses the link and the budget).
        public var costFloor: Double
        /// Migration seconds that cost one unit (one unit of burn rate × full relief).
        public var secondsPerCostUnit: Double
        /// Cost units per second of a neighbour's downtime.
        public var downtimeWeight: Double
        /// How much more the suffering application's own downtime weighs.
        public var ownDowntimeFactor: Double
        /// Error budget a neighbour with objectives must have left to be moved.
        public var spareBudget: Double
        /// A VM moved less than this many seconds ago is not moved again.
        public var coolDownSeconds: Double
        /// A VM does not go back to the host it left less than this many seconds ago.
        public var returnBlockSeconds: Double
        /// After a move made for an application, it is left alone for this many of its objective's
        /// shortest burn-rate lookbacks, so that the objective can show the effect (hysteresis).
        public var settleLookbacks: Double
        /// Samples averaged for "recent" (host and VM CPU).
        public var window: Int
        public var budget: MigrationBudget
        public var costModel: MigrationCostModel
        /// How hosts that are switched off when empty are packed.
        public var packing: PackingSettings

        public init(
            burnTrigger: Double = 1, maxBurnRate: Double = 100, contendedLoad: Double = 0.6,
            destinationLoadLimit: Double = 0.6, unprotectedLoadLimit: Double = 1, margin: Double = 2,
            costFloor: Double = 0.05,
            secondsPerCostUnit: Double = 60, downtimeWeight: Double = 2, ownDowntimeFactor: Double = 50,
            spareBudget: Double = 0.5, coolDownSeconds: Double = 3_600, returnBlockSeconds: Double = 86_400,
            settleLookbacks: Double = 2, window: Int = 3,
            budget: MigrationBudget = .init(),
            costModel: MigrationCostModel = .init(), packing: PackingSettings = .init()
        ) {
            self.packing = packing
            self.burnTrigger = burnTrigger
            self.maxBurnRate = maxBurnRate
            self.contendedLoad = contendedLoad
            self.destinationLoadLimit = destinationLoadLimit
            self.unprotectedLoadLimit = unprotectedLoadLimit
            self.margin = margin
            self.costFloor = costFloor
            self.secondsPerCostUnit = secondsPerCostUnit
            self.downtimeWeight = downtimeWeight
            self.ownDowntimeFactor = ownDowntimeFactor
            self.spareBudget = spareBudget
            self.coolDownSeconds = coolDownSeconds
            self.returnBlockSeconds = returnBlockSeconds
            self.settleLookbacks = settleLookbacks
            self.window = window
            self.budget = budget
            self.costModel = costModel
        }
    }

    public let name: String
    public let settings: Settings

    public init(name: String = "slo", settings: Settings = .init()) {
        self.name = name
        self.settings = settings
    }

    /// Objectives first (moves for applications that burn their error budget), then, where hosts
    /// are switched off when empty, packing (capacity protection and consolidation).
    public func plan(_ cluster: PlacementCluster) -> RebalancePlan {
        var plan = relieveObjectives(cluster)
        if cluster.hosts.contains(where: { $0.power != nil }) { pack(cluster, after: &plan) }
        return plan
    }

    /// Where VMs start: best fit at whole size onto the most efficient hosts (see `pack`).
    public func initialPlacement(_ cluster: PlacementCluster) -> [Int?] {
        packedPlacement(cluster)
    }

    func relieveObjectives(_ cluster: PlacementCluster) -> RebalancePlan {
        var state = RebalanceState(cluster, window: settings.window, costModel: settings.costModel, budget: settings.budget)
        var plan = RebalancePlan(policy: name)
        let suffering = sufferingObjectives(cluster, notes: &plan.notes)
        guard !suffering.isEmpty else { return plan }
        let pressures = hostsUnderPressure(suffering, state: state)
        let applications = Dictionary(
            cluster.applications.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let sufferingNames = Set(suffering.map(\.application))

        var outcomes: [Int: ConsideredVM] = [:]
        var consideredOrder: [Int] = []
        var moved = Set<Int>()
        func note(_ vm: Int, host: Int, _ reason: NotMovedReason?, _ destinations: DestinationVerdicts = .init()) {
            if outcomes[vm] == nil { consideredOrder.append(vm) }
            let request = cluster.vms[vm]
            outcomes[vm] = ConsideredVM(
                vm: request.id, vmName: request.name, host: state.hostName(host), notMoved: reason,
                destinations: destinations)
        }

        while true {
            var best: Move?
            let hostOrder = state.hostsByLoad()
            for pressure in pressures {
                let host = pressure.host
                let load = state.load(host)
                guard load > settings.contendedLoad else {
                    // A reason of the VM's own (pinned, cooling down) stays; "another move was better" gives
                    // way to what that move did to the host.
                    for vm in pressure.ownVMs
                    where !moved.contains(vm)
                        && (outcomes[vm] == nil || outcomes[vm]?.notMoved == .betterMoveChosen)
                    {
                        note(
                            vm, host: host,
                            .hostNotContended(
                                host: state.hostName(host), load: load, limit: settings.contendedLoad))
                    }
                    continue
                }
                for vm in state.residents[host] where !moved.contains(vm) {
                    let request = cluster.vms[vm]
                    if state.moving(vm) {
                        note(vm, host: host, .alreadyMigrating)
                        continue
                    }
                    if request.pinnedHost != nil {
                        note(vm, host: host, .pinned(host: state.hostName(host)))
                        continue
                    }
                    // Never moved: -infinity, so the time since is infinite.
                    let sinceMove = cluster.now - cluster.vmLastMoveStart[vm]
                    if sinceMove < settings.coolDownSeconds {
                        note(
                            vm, host: host,
                            .coolDown(movedSecondsAgo: sinceMove, coolDownSeconds: settings.coolDownSeconds))
                        continue
                    }
                    if let problem = state.sourceProblem(host) {
                        note(vm, host: host, .sourceCannotMigrate(problem))
                        continue
                    }
                    let own = request.application == pressure.objective.application
                    if !own, let other = request.application, let app = applications[other],
                        !app.objectives.isEmpty
                    {
                        let remaining = app.objectives.map(\.errorBudgetRemaining).min() ?? 1
                        if sufferingNames.contains(other) || remaining < settings.spareBudget {
                            note(vm, host: host, .protectedObjective(application: other, budgetRemaining: remaining))
                            continue
                        }
                    }
                    if !state.clusterBudgetLeft {
                        note(vm, host: host, .clusterBudget(limit: settings.budget.perCluster))
                        continue
                    }
                    if !state.hostBudgetLeft(host) {
                        note(vm, host: host, .hostBudget(host: state.hostName(host), limit: settings.budget.perHost))
                        continue
                    }
                    let (destination, verdicts) = state.bestDestination(
                        for: vm,
                        loadLimit: LoadLimit(protected: settings.destinationLoadLimit, other: settings.unprotectedLoadLimit),
                        returnBlockSeconds: settings.returnBlockSeconds, order: hostOrder)
                    guard let destination else {
                        note(vm, host: host, .noHostFits, verdicts)
                        continue
                    }
                    let relief = self.relief(vm, own: own, host: host, destinationLoad: destination.loadAfter, state)
                    let burn = min(pressure.objective.burnRate, settings.maxBurnRate)
                    let benefit = burn * relief
                    let cost = weightedCost(destination.cost, own: own)
                    guard benefit >= settings.margin * cost, benefit > 0 else {
                        let reason = NotMovedReason.marginNotMet(benefit: benefit, cost: cost, margin: settings.margin)
                        note(vm, host: host, reason, verdicts)
                        continue
                    }
                    // Eligible; whether it is chosen is settled below.
                    note(vm, host: host, .betterMoveChosen, verdicts)
                    let candidate = Move(
                        vm: vm, source: host, destination: destination.host, cost: destination.cost,
                        pressure: pressure, own: own, relief: relief, benefit: benefit, weightedCost: cost)
                    if best.map({ candidate.isBetter(than: $0, names: cluster) }) ?? true { best = candidate }
                }
            }
            guard let chosen = best else { break }
            let explanation = explain(chosen, state: state)
            let effect = ObjectiveEffect(
                application: chosen.pressure.objective.application, objective: chosen.pressure.objective.objective,
                benefit: chosen.benefit, weightedCost: chosen.weightedCost)
            let objective = chosen.pressure.objective
            let reason = MoveReason.objectivePressure(
                application: objective.application, objective: objective.objective, state: objective.state,
                burnRate: objective.burnRate, lookbackSeconds: objective.lookbackSeconds,
                host: state.hostName(chosen.source), relief: chosen.relief)
            guard
                let move = state.record(
                    chosen.vm, to: chosen.destination, cost: chosen.cost, reason: reason, explanation: explanation,
                    effect: effect)
            else { break }
            plan.actions.append(move)
            moved.insert(chosen.vm)
            note(chosen.vm, host: chosen.source, nil, outcomes[chosen.vm]?.destinations ?? .init())
        }
        // Eligible VMs left when the budget ran out were stopped by the budget, not by a better move.
        for vm in consideredOrder {
            guard var outcome = outcomes[vm] else { continue }
            if outcome.notMoved == .betterMoveChosen, !state.clusterBudgetLeft {
                outcome.notMoved = .clusterBudget(limit: settings.budget.perCluster)
            }
            plan.considered.append(outcome)
        }
        return plan
    }

    /// One objective that asks for help.
    struct SufferingObjective {
        var application: String
        var objective: String
        var state: SLOState
        var burnRate: Double
        var lookbackSeconds: Double
    }

    /// A host where a suffering application runs VMs.
    struct Pressure {
        var objective: SufferingObjective
        var host: Int
        var ownVMs: [Int]
    }

    struct Move {
        var vm: Int
        var source: Int
        var destination: Int
        var cost: MigrationCost
        var pressure: Pressure
        var own: Bool
        var relief: Double
        var benefit: Double
        var weightedCost: Double

        var ratio: Double { benefit / weightedCost }

        func isBetter(than other: Move, names cluster: PlacementCluster) -> Bool {
            if ratio != other.ratio { return ratio > other.ratio }
            if benefit != other.benefit { return benefit > other.benefit }
            return cluster.vms[vm].name < cluster.vms[other.vm].name
        }
    }

    /// The worst objective of each application whose budget burns, worst first.
    func sufferingObjectives(_ cluster: PlacementCluster, notes: inout [String]) -> [SufferingObjective] {
        var result: [SufferingObjective] = []
        for app in cluster.applications {
            var worst: SufferingObjective?
            for objective in app.objectives where objective.state == .breaching || objective.state == .warning {
                guard let short = objective.burnRates.min(by: { $0.lookbackSeconds < $1.lookbackSeconds }) else {
                    continue
                }
                if short.rate > settings.burnTrigger, worst.map({ short.rate > $0.burnRate }) ?? true {
                    worst = SufferingObjective(
                        application: app.name, objective: objective.name, state: objective.state,
                        burnRate: short.rate, lookbackSeconds: short.lookbackSeconds)
                }
            }
            guard let worst else { continue }
            if let ended = app.lastMoveEndedAt, cluster.now - ended < settleSeconds(worst) {
                notes.append(
                    "\(app.name)/\(worst.objective) is \(worst.state.rawValue), but the last move for \(app.name) ended "
                        + "\(DurationText.format(max(0, cluster.now - ended))) ago: waiting "
                        + "\(DurationText.format(settleSeconds(worst))) for the objective to show its effect")
                continue
            }
            result.append(worst)
        }
        if result.isEmpty && notes.isEmpty {
            notes.append("no application burns its error budget faster than \(decimal(settings.burnTrigger, 1))×")
        }
        return result.sorted { ($0.burnRate, $1.application) > ($1.burnRate, $0.application) }
    }

    func settleSeconds(_ objective: SufferingObjective) -> Double {
        settings.settleLookbacks * objective.lookbackSeconds
    }

    /// The hosts of each suffering application's VMs, in a stable order.
    func hostsUnderPressure(_ suffering: [SufferingObjective], state: RebalanceState) -> [Pressure] {
        let names = Dictionary(suffering.enumerated().map { ($1.application, $0) }, uniquingKeysWith: { a, _ in a })
        var vmsByObjective = [[Int: [Int]]](repeating: [:], count: suffering.count)
        for (vm, request) in state.cluster.vms.enumerated() {
            guard let app = request.application, let index = names[app], let host = state.host(of: vm) else { continue }
            vmsByObjective[index][host, default: []].append(vm)
        }
        var result: [Pressure] = []
        for (index, objective) in suffering.enumerated() {
            for (host, vms) in vmsByObjective[index].sorted(by: { $0.key < $1.key }) {
                result.append(Pressure(objective: objective, host: host, ownVMs: vms))
            }
        }
        return result
    }

    /// The fraction of the contention the move removes, 0...1.
    func relief(_ vm: Int, own: Bool, host: Int, destinationLoad: Double, _ state: RebalanceState) -> Double {
        let load = state.load(host)
        let excessLoad = load - settings.contendedLoad
        guard excessLoad > 0 else { return 0 }
        if own {
            // The VM leaves the contention: relief is how much quieter its new host is.
            return min(1, max(0, (load - max(destinationLoad, settings.contendedLoad)) / excessLoad))
        }
        let cpus = state.cluster.hosts[host].capacity
        guard cpus > 0 else { return 0 }
        return min(1, state.vmDemand[vm] / (excessLoad * cpus))
    }

    func weightedCost(_ cost: MigrationCost, own: Bool) -> Double {
        settings.costFloor + cost.totalSeconds / settings.secondsPerCostUnit + cost.downtimeSeconds
            * settings.downtimeWeight * (own ? settings.ownDowntimeFactor : 1)
    }

    func explain(_ candidate: Move, state: RebalanceState) -> String {
        let objective = candidate.pressure.objective
        let request = state.cluster.vms[candidate.vm]
        let host = state.cluster.hosts[candidate.source]
        let who: String
        if candidate.own {
            who = "its own VM \(request.name)"
        } else {
            who =
                "\(request.name) (\(request.application.map { "app \($0)" } ?? "no SLO"), "
                + "\(decimal(state.vmDemand[candidate.vm], 1)) cores)"
        }
        let cpu = "\(decimal(state.loads.demand[candidate.source], 1))/\(decimal(host.capacity, 0)) cores"
        let burn = "burn \(decimal(objective.burnRate, 1)) over \(DurationText.format(objective.lookbackSeconds))"
        let destination = state.hostName(candidate.destination)
        return "\(objective.application)/\(objective.objective) is \(objective.state.rawValue) (\(burn)); "
            + "host \(host.name) CPU \(cpu); moving \(who) to \(destination) relieves \(host.name) by "
            + "\(percent(candidate.relief)); \(candidate.cost)"
    }
}

import VireoModel

/// The black-box baseline (VMware DRS, Sandpiper): a host whose recent CPU is above a threshold
/// sends its busiest VM to the least loaded host that can take it. It does not know which VM
/// matters, so it may move the very VM whose objective suffers, and without a cool-down it
/// can move VMs back and forth as load fluctuates.
public struct ThresholdPolicy: PlacementPolicy {
    public struct Settings: Sendable, Equatable {
        /// Recent CPU above this fraction of the host makes it shed its busiest VM.
        public var threshold: Double
        /// Samples averaged for "recent" (host and VM CPU).
        public var window: Int
        /// A VM moved less than this many seconds ago stays (0: no cool-down, the baseline).
        public var coolDownSeconds: Double
        public var budget: MigrationBudget
        public var costModel: MigrationCostModel

        public init(
            threshold: Double = 0.8, window: Int = 3, coolDownSeconds: Double = 0, budget: MigrationBudget = .init(),
            costModel: MigrationCostModel = .init()
        ) {
            self.threshold = threshold
            self.window = window
            self.coolDownSeconds = coolDownSeconds
            self.budget = budget
            self.costModel = costModel
        }
    }

    public let name: String
    public let settings: Settings

    public init(name: String = "threshold", settings: Settings = .init()) {
        self.name = name
        self.settings = settings
    }

    public func plan(_ cluster: PlacementCluster) -> RebalancePlan {
        var state = RebalanceState(cluster, window: settings.window, costModel: settings.costModel, budget: settings.budget)
        var plan = RebalancePlan(policy: name)
        let hot = cluster.hosts.indices.compactMap { host -> (Int, Double)? in
            let load = state.load(host)
            return load > settings.threshold && !state.residents[host].isEmpty ? (host, load) : nil
        }.sorted { ($1.1, $0.0) < ($0.1, $1.0) }
        if hot.isEmpty { plan.notes.append("no host is above \(percent(settings.threshold)) CPU") }
        var order: [Int]?
        for (host, load) in hot {
            let hostName = state.hostName(host)
            // Busiest first; ties by name so the plan is deterministic.
            let busiest = state.residents[host].filter { !state.moving($0) && cluster.vms[$0].pinnedHost == nil }.max { a, b in
                let da = state.vmDemand[a], db = state.vmDemand[b]
                return da != db ? da < db : cluster.vms[a].name > cluster.vms[b].name
            }
            guard let vm = busiest else {
                plan.notes.append(
                    "host \(hostName) CPU \(percent(load)) is above \(percent(settings.threshold)), but none of its VMs can move "
                        + "(pinned or already migrating)")
                continue
            }
            let request = cluster.vms[vm]
            func skip(_ reason: NotMovedReason, _ destinations: DestinationVerdicts = .init()) {
                plan.considered.append(
                    ConsideredVM(
                        vm: request.id, vmName: request.name, host: hostName, notMoved: reason,
                        destinations: destinations))
            }
            // Never moved: -infinity, so the time since is infinite.
            let sinceMove = cluster.now - cluster.vmLastMoveStart[vm]
            if sinceMove < settings.coolDownSeconds {
                skip(.coolDown(movedSecondsAgo: sinceMove, coolDownSeconds: settings.coolDownSeconds))
                continue
            }
            guard state.clusterBudgetLeft else {
                skip(.clusterBudget(limit: settings.budget.perCluster))
                continue
            }
            guard state.hostBudgetLeft(host) else {
                skip(.hostBudget(host: hostName, limit: settings.budget.perHost))
                continue
            }
            if let problem = state.sourceProblem(host) {
                skip(.sourceCannotMigrate(problem))
                continue
            }
            let hostOrder = order ?? state.hostsByLoad()
            order = hostOrder
            let (best, destinations) = state.bestDestination(for: vm, loadLimit: nil, order: hostOrder)
            guard let best else {
                skip(.noHostFits, destinations)
                continue
            }
            let explanation =
                "host \(hostName) CPU \(percent(load)) is above \(percent(settings.threshold)); moving its busiest VM "
                + "\(request.name) (\(decimal(state.vmDemand[vm], 1)) cores) to the least loaded host "
                + "\(state.hostName(best.host)); \(best.cost)"
            if let move = state.record(
                vm, to: best.host, cost: best.cost,
                reason: .hostOverThreshold(host: hostName, load: load, threshold: settings.threshold),
                explanation: explanation, effect: nil)
            {
                plan.actions.append(move)
                order = nil
                plan.considered.append(
                    ConsideredVM(
                        vm: request.id, vmName: request.name, host: hostName, notMoved: nil,
                        destinations: destinations))
            }
        }
        return plan
    }
}

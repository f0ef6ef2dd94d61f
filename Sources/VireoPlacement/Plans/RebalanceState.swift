import VireoModel

/// A live-rebalancing policy's view while a plan unfolds: the shared host loads (with each VM
/// counted at its recent mean demand), the migration budget and the feasibility chain for moves,
/// updated as moves are planned so that each next move sees the effect of the earlier ones.
struct RebalanceState {
    var loads: HostLoads
    let budget: MigrationBudget
    let costModel: MigrationCostModel
    /// Cores of the largest host: bounds how little a VM can add to any host's load.
    let maxCapacity: Double

    var cluster: PlacementCluster { loads.cluster }

    init(_ cluster: PlacementCluster, window: Int, costModel: MigrationCostModel, budget: MigrationBudget) {
        let demand = (0..<cluster.vmCount).map { cluster.recentDemand($0, window: window) }
        loads = HostLoads(cluster, vmDemand: demand, measuredWindow: window)
        self.budget = budget
        self.costModel = costModel
        maxCapacity = cluster.hosts.map(\.capacity).max() ?? 0
    }

    var residents: [[Int]] { loads.residents }
    var vmDemand: [Double] { loads.vmDemand }

    func hasObjectives(_ vm: Int) -> Bool { loads.vmHasObjectives[vm] }
    func moving(_ vm: Int) -> Bool { loads.moving[vm] }
    func host(of vm: Int) -> Int? { loads.vmHost[vm] >= 0 ? loads.vmHost[vm] : nil }
    func load(_ host: Int) -> Double { loads.load(host) }
    func hostName(_ host: Int) -> String { loads.hostName(host) }
    var clusterBudgetLeft: Bool { loads.clusterMigrations < budget.perCluster }
    func hostBudgetLeft(_ host: Int) -> Bool { loads.migrations[host] < budget.perHost }
    func sourceProblem(_ host: Int) -> FilterReason? { FeasibilityChain.sourceProblem(host, cluster) }

    /// Host indices by current load, least loaded first (ties: cluster order). Valid until the
    /// next move.
    func hostsByLoad() -> [Int] {
        let loads = cluster.hosts.indices.map { load($0) }
        return cluster.hosts.indices.sorted { (loads[$0], $0) < (loads[$1], $1) }
    }

    /// The destination with the lowest predicted load after the move (ties: cluster order), and
    /// the verdicts on the destinations, from the feasibility chain for moves.
    ///
    /// Small clusters (at most `4 × keep` hosts) get a verdict for every host. Large ones are
    /// scanned in `order` (from `hostsByLoad()`), least loaded first, stopping once no further
    /// host can beat the best one (its load plus the VM's share of the largest host already
    /// exceeds it); verdicts are condensed to the first of each filter kind and counts by kind
    /// (`scored`: fitted but worse; `not-evaluated`: more loaded than the chosen host).
    func bestDestination(
        for vm: Int, loadLimit: LoadLimit?, returnBlockSeconds: Double = 0, order: [Int]? = nil, keep: Int = 16
    ) -> (best: (host: Int, loadAfter: Double, cost: MigrationCost)?, verdicts: DestinationVerdicts) {
        let chain = FeasibilityChain(
            purpose: .move, returnBlockSeconds: returnBlockSeconds, budget: budget, loadLimit: loadLimit,
            costModel: costModel)
        let candidate = loads.candidate(vm)
        let source = candidate.source
        var best: (host: Int, loadAfter: Double, cost: MigrationCost)?
        var verdicts: [RebalanceHostVerdict] = []
        var omitted: [String: Int] = [:]
        let hostCount = cluster.hostCount
        let keepAll = hostCount <= keep * 4 || order == nil
        let scan = keepAll ? Array(0..<hostCount) : (order ?? [])
        let smallestShare = maxCapacity > 0 ? vmDemand[vm] / maxCapacity : 0
        var scored = 0
        var evaluated = 0
        for destination in scan {
            if !keepAll {
                let bound = load(destination) + smallestShare
                if let best, bound >= best.loadAfter { break }
                if let loadLimit, bound > loadLimit.highest { break }
            }
            evaluated += 1
            guard destination != source else { continue }
            let verdict: RebalanceHostVerdict
            switch chain.check(candidate, on: destination, loads) {
            case .filtered(let reason):
                verdict = RebalanceHostVerdict(host: hostName(destination), filtered: reason, loadAfter: nil)
            case .fits(let fit):
                verdict = RebalanceHostVerdict(host: hostName(destination), filtered: nil, loadAfter: fit.loadAfter)
                if let cost = fit.cost, best.map({ fit.loadAfter < $0.loadAfter }) ?? true {
                    best = (destination, fit.loadAfter, cost)
                }
            }
            if keepAll {
                verdicts.append(verdict)
            } else if let filtered = verdict.filtered {
                // The first of each kind of filter keeps its sentence; the rest are counted.
                if omitted[filtered.kind] == nil && verdicts.count < keep {
                    verdicts.append(verdict)
                    omitted[filtered.kind] = 0
                } else {
                    omitted[filtered.kind, default: 0] += 1
                }
            } else {
                scored += 1
            }
        }
        if !keepAll {
            if let best {
                verdicts.insert(
                    RebalanceHostVerdict(host: hostName(best.host), filtered: nil, loadAfter: best.loadAfter), at: 0)
                scored -= 1
            }
            omitted["scored"] = scored
            omitted["not-evaluated"] = scan.count - evaluated
        }
        omitted = omitted.filter { $0.value > 0 }
        return (best, DestinationVerdicts(verdicts: verdicts, omitted: omitted))
    }

    /// Records a planned move, with the loads before and after, for the plan.
    mutating func record(
        _ vm: Int, to destination: Int, cost: MigrationCost, reason: MoveReason, explanation: String,
        effect: ObjectiveEffect?
    ) -> PlannedMove? {
        guard let source = host(of: vm) else { return nil }
        let sourceBefore = load(source)
        let destinationBefore = load(destination)
        loads.move(vm, to: destination)
        return PlannedMove(
            vm: vm, from: source, to: destination, in: cluster, reason: reason, detail: explanation,
            objectiveEffect: effect,
            sourceLoad: HostLoadChange(host: hostName(source), before: sourceBefore, after: load(source)),
            destinationLoad: HostLoadChange(host: hostName(destination), before: destinationBefore, after: load(destination)),
            cost: cost)
    }
}

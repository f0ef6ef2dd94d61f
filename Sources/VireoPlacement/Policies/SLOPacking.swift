import VireoModel

/// How `slo` packs hosts that are switched off when empty.
///
/// Each VM's implicit objective there is that its CPU demand is met, so hosts are packed against
/// a *predicted* demand with headroom, and a migration is started only when it protects that
/// objective or when it empties a host for good.
///
/// - Demand prediction: a host's next demand is the peak, over the last `window` samples, of the
///   summed demand of the VMs it would hold (VMs rarely peak together, so this is far below the
///   sum of their peaks); while the history is short every VM gets a margin of its size.
/// - Placement: best fit against `targetUtilisation` of each host's CPU, for both the predicted
///   and the current demand, only onto hosts whose core holds a whole vCPU and that pass the
///   feasibility chain (memory included where the cluster counts it); a host is switched on only
///   when no running host can take the VM, and then the one with the lowest idle watts per CPU.
/// - Capacity protection: a host whose current demand exceeds `overloadUtilisation` sheds the
///   fewest, cheapest (least memory) VMs that bring it back under the target.
/// - Consolidation: a host whose predicted demand is under `evacuationUtilisation` is emptied
///   only if all its VMs fit elsewhere under the target, at most `evacuationsPerRound` of the
///   running hosts per decision point once the history fills the window (no limit before); a
///   host holding a VM moved within the cool-down is not emptied, so nothing is moved back and
///   forth.
public struct PackingSettings: Sendable, Equatable {
    /// Fraction of a host's CPU the predicted demand may fill when placing.
    public var targetUtilisation: Double
    /// Current demand above this fraction makes a host shed VMs.
    public var overloadUtilisation: Double
    /// Hosts predicted under this fraction are emptied when their VMs fit elsewhere.
    public var evacuationUtilisation: Double
    /// Utilisation samples the prediction looks back over.
    public var window: Int
    /// Headroom added to the prediction, as a fraction of the VM's size.
    public var margin: Double
    /// Decision intervals a moved VM stays put unless its host is overloaded.
    public var coolDownIntervals: Int
    /// At most this fraction of the running hosts is emptied per decision point.
    public var evacuationsPerRound: Double

    public init(
        targetUtilisation: Double = 0.85, overloadUtilisation: Double = 0.95, evacuationUtilisation: Double = 0.5,
        window: Int = 12, margin: Double = 0.1, coolDownIntervals: Int = 12, evacuationsPerRound: Double = 0.25
    ) {
        self.targetUtilisation = targetUtilisation
        self.overloadUtilisation = overloadUtilisation
        self.evacuationUtilisation = evacuationUtilisation
        self.window = window
        self.margin = margin
        self.coolDownIntervals = coolDownIntervals
        self.evacuationsPerRound = evacuationsPerRound
    }
}

extension SLOPolicy {
    /// Best fit through the feasibility chain (every VM asking for what the cluster says, its
    /// whole size under CloudSim's start rule) onto hosts whose core holds a whole vCPU, the
    /// tightest on the scarcer resource first; idle hosts are switched on most efficient first.
    func packedPlacement(_ cluster: PlacementCluster) -> [Int?] {
        var loads = HostLoads(cluster)
        // Only onto hosts whose core holds a whole vCPU, as the packing does: a VM is never capped
        // by a small core when it grows.
        let chain = FeasibilityChain(purpose: .start, wholeVCPUOnCore: true)
        var placement = [Int?](repeating: nil, count: cluster.vmCount)
        let order = PackingState.hostsByEfficiency(cluster).order
        for vm in 0..<cluster.vmCount {
            if cluster.vmHost[vm] >= 0 {
                placement[vm] = cluster.vmHost[vm]
                continue
            }
            let candidate = loads.candidate(vm)
            var best: Int?
            var bestFree = Double.infinity
            var firstFit: Int?
            for host in order {
                // An empty host is taken only when no running host fits, and then the first that
                // fits in this order: once one is known, the other empty hosts need no look.
                let empty = loads.residents[host].isEmpty
                if empty && firstFit != nil { continue }
                guard chain.passes(candidate, on: host, loads) else { continue }
                if firstFit == nil { firstFit = host }
                let free = Scorers.roomLeft(candidate, on: host, loads)
                if !empty && free < bestFree {
                    bestFree = free
                    best = host
                }
            }
            if let host = best ?? firstFit {
                loads.add(vm, to: host)
                placement[vm] = host
            }
        }
        return placement
    }

    /// Capacity protection and consolidation on hosts that are switched off when empty; VMs and
    /// hosts the objective moves already touched are left alone.
    func pack(_ cluster: PlacementCluster, after plan: inout RebalancePlan) {
        let packing = settings.packing
        var state = PackingState(cluster: cluster, settings: packing)
        var locked = [Bool](repeating: false, count: cluster.hostCount)
        for host in cluster.hosts.indices where cluster.hosts[host].power == nil { locked[host] = true }
        for move in plan.actions {
            locked[move.fromIndex] = true
            locked[move.toIndex] = true
        }
        let coolDown = Double(packing.coolDownIntervals) * cluster.interval
        func record(_ vm: Int, from source: Int, to target: Int, _ reason: MoveReason) {
            let before = (state.load(source), state.load(target))
            state.move(vm, from: source, to: target)
            let memory = cluster.vms[vm].memoryMiB
            let link = min(cluster.hosts[source].linkMiBPerSecond, cluster.hosts[target].linkMiBPerSecond)
            let cost: MigrationCost
            switch settings.costModel.cost(
                memoryMiB: memory, dirtyMiBPerSecond: cluster.vms[vm].dirtyRateMiBPerSecond, bandwidthMiBPerSecond: link)
            {
            case .success(let predicted): cost = predicted
            case .failure:
                cost = MigrationCost(
                    totalSeconds: memory / max(link, 1e-9), downtimeSeconds: 0, transferredMiB: memory, iterations: 1)
            }
            plan.actions.append(
                PlannedMove(
                    vm: vm, from: source, to: target, in: cluster, reason: reason,
                    sourceLoad: HostLoadChange(host: cluster.hosts[source].name, before: before.0, after: state.load(source)),
                    destinationLoad: HostLoadChange(
                        host: cluster.hosts[target].name, before: before.1, after: state.load(target)),
                    cost: cost))
        }

        var shed = 0
        var emptied = 0
        var kept = 0
        defer {
            plan.notes.append(
                "packing (hosts switched off when empty): \(shed) VM(s) shed from hosts above "
                    + "\(NumberText.percent(packing.overloadUtilisation)), \(emptied) host(s) emptied, \(kept) under-used "
                    + "host(s) kept because their VMs fit nowhere else")
        }

        // 1. Protect demand: shed VMs from hosts whose demand is at or near their capacity.
        for host in 0..<cluster.hostCount where !cluster.hostVMs[host].isEmpty && !locked[host] {
            let capacity = cluster.hosts[host].capacity
            let utilisation = state.current[host] / capacity
            guard utilisation > packing.overloadUtilisation else { continue }
            locked[host] = true
            let limit = packing.targetUtilisation * capacity
            // Cheapest first: little memory moves fast; VMs in cool-down last.
            let candidates = cluster.hostVMs[host].filter { !cluster.isMigrating($0) }.sorted { a, b in
                let coolA = cluster.now - cluster.vmLastMoveStart[a] < coolDown
                let coolB = cluster.now - cluster.vmLastMoveStart[b] < coolDown
                if coolA != coolB { return !coolA }
                return (cluster.vms[a].memoryMiB, -cluster.vmDemand[a], a) < (cluster.vms[b].memoryMiB, -cluster.vmDemand[b], b)
            }
            // One VM that is enough, else the busiest ones until the host is under its target.
            var toMove: [Int] = []
            if let one = candidates.first(where: { state.current[host] - cluster.vmDemand[$0] <= limit }) {
                toMove = [one]
            } else {
                var excess = state.current[host] - limit
                for vm in candidates.sorted(by: { cluster.vmDemand[$0] > cluster.vmDemand[$1] }) where excess > 0 {
                    toMove.append(vm)
                    excess -= cluster.vmDemand[vm]
                }
            }
            let reason = MoveReason.hostOverloaded(
                host: cluster.hosts[host].name, utilisation: utilisation,
                test: "demand above \(NumberText.percent(packing.overloadUtilisation))")
            for vm in toMove {
                guard let target = state.bestHost(for: vm, locked: locked, allowIdle: true) else { continue }
                locked[target] = true
                record(vm, from: host, to: target, reason)
                shed += 1
            }
        }

        // 2. Consolidate: empty the least-loaded hosts whose VMs all fit on other running hosts.
        let running = (0..<cluster.hostCount).filter { !cluster.hostVMs[$0].isEmpty }
        // While the history is short (right after the start, when every VM was placed at its full
        // size) there is nothing to protect yet but much to consolidate: no budget then.
        let share = cluster.historyCount < packing.window ? 1 : packing.evacuationsPerRound
        var budget = max(1, Int(share * Double(running.count)))
        var attempts = 4 * budget
        let low = running.compactMap { host -> (Int, Double)? in
            let fraction = state.predicted(host) / cluster.hosts[host].capacity
            return !locked[host] && fraction < packing.evacuationUtilisation ? (host, fraction) : nil
        }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
        for (host, fraction) in low where budget > 0 && attempts > 0 && !locked[host] {
            let vms = state.residents[host]
            // A host holding a VM moved within the cool-down keeps it: no moving back and forth.
            if vms.isEmpty
                || vms.contains(where: { cluster.isMigrating($0) || cluster.now - cluster.vmLastMoveStart[$0] < coolDown })
            {
                continue
            }
            attempts -= 1
            locked[host] = true
            var moves: [(vm: Int, target: Int)] = []
            let biggestFirst = vms.map { ($0, state.predicted(vm: $0)) }.sorted { ($0.1, $1.0) > ($1.1, $0.0) }
            for (vm, _) in biggestFirst {
                guard let target = state.bestHost(for: vm, locked: locked, allowIdle: false) else { break }
                state.move(vm, from: host, to: target)
                moves.append((vm, target))
            }
            for move in moves.reversed() { state.move(move.vm, from: move.target, to: host) }
            guard moves.count == vms.count else {
                kept += 1
                continue
            }
            emptied += 1
            let reason = MoveReason.consolidation(
                host: cluster.hosts[host].name, utilisation: fraction, limit: packing.evacuationUtilisation)
            for move in moves { record(move.vm, from: host, to: move.target, reason) }
            budget -= 1
        }
    }
}
